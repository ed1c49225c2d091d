"""The scenario suite (test/scenarios) through the real nodes, with accuracy thresholds
that fail the build when a change makes receipts worse. `jwo eval` does the work; its
report is kept under runs/suite-last for a look after a failure."""
import shutil
import subprocess
import sys
from pathlib import Path

JWO = Path(sys.executable).parent / 'jwo'

# Measured on the suite (see README "Scenario suite"); tighten as the system improves.
THRESHOLDS = ['--min-exact-not-flagged', '0.97', '--max-review-rate', '0.38', '--max-wrong-charges', '1']


def test_scenario_suite_meets_thresholds(repo, tmp_path):
    out = tmp_path / 'suite'
    result = subprocess.run(
        [str(JWO), 'eval', '--suite', 'test/scenarios', '--out', str(out), '--time-scale', '4',
         *THRESHOLDS],
        cwd=repo, capture_output=True, text=True, timeout=2400)
    kept = repo / 'runs' / 'suite-last'
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(out, kept)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert (out / 'report.html').is_file()
