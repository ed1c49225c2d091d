"""Where an install keeps the package's executables and data: the source checkout
(editable installs), else the prefix of a pip or colcon install (lib/jwo, share/jwo)."""
import os
import sys
from pathlib import Path
from typing import Optional

# The ROS 2 package: its interfaces are jwo/msg/..., its executables lib/jwo/...
PACKAGE = 'jwo'

_PACKAGE_DIR = Path(__file__).resolve().parent


def install_prefixes() -> list:
    """AMENT_PREFIX_PATH's prefixes, the one this module is installed in
    (<prefix>/lib/pythonX.Y/site-packages/jwo_nodes) and the interpreter's."""
    prefixes = [Path(p) for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    if len(_PACKAGE_DIR.parents) > 3:
        prefixes.append(_PACKAGE_DIR.parents[3])
    prefixes.append(Path(sys.prefix))
    return prefixes


def data_path(*parts: str) -> Optional[Path]:
    """A file or folder of the checkout (config/params, models/detector.onnx, ...), or
    the same under an install's share/jwo; None when there is none."""
    candidates = [_PACKAGE_DIR.parent.joinpath(*parts)]
    candidates += [prefix.joinpath('share', PACKAGE, *parts) for prefix in install_prefixes()]
    return next((c for c in candidates if c.exists()), None)
