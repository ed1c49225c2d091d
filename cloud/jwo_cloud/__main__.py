import sys

from jwo_cloud.cli import main

sys.exit(main())
