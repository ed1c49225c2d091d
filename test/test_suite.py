"""The scenario suite (test/scenarios), with accuracy thresholds that fail the build
when a change makes receipts worse.

The whole suite runs with vision: every camera's frames rendered, the shipped detector
and the tracker on them, the change detector on the load cells and fusion, as pure code
fed in stamp order (`jwo fusion-check --vision`, the nodes' own core), one test per
scenario group so that parallel test workers share it. Through the real nodes at 2x
(`make suite`, `jwo eval --vision`) it gives the same figures and takes three times as
long; here one hard case runs that way. The hand-written hard cases also run through the
real nodes with the simulator's stand-in tracker, which knows where everybody is: there
fusion alone is judged, and it must be exact. The real-store layout's scenarios
(test/scenarios/corner) run with vision as pure code too. Every visit must get a receipt.
Reports are kept under runs/suite-* for a look after a failure."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JWO = Path(sys.executable).parent / 'jwo'
# The suite's own store, frozen (the demo store goes on changing).
SUITE_STORE = ('--store', 'test/stores/suite.yaml')

# Per scenario group (the names' first word): least share of exact receipts among the
# visits not flagged, largest share flagged for review, most items wrongly charged.
# Measured with vision as pure code (`jwo fusion-check --vision`, the same shares as the
# nodes at 2x: README "Accuracy with vision"). 2026-12-03 morning: medium 1.0 / 0.54 / 0
# items, hard 0.969 / 0.619 / 0. 2026-12-03 noon, after entry codes stopped going
# astray, hair colour, group-aware doubt and identity epochs: easy 1.0 / 0.067 / 0,
# medium 1.0 / 0.48 / 0 (exact 94 %, was 84 %), hard 0.935 / 0.631 / 2 (exact 70 %, was
# 62 %). The targets are medium 0.99 / 0.10, hard 0.97 / 0.25.
# 2026-12-04: what the solver's beam drops now stays doubt (solver._step). On 22 held-out
# hard scenarios (`make holdout`) wrongly charged items fell from 15 to 3 and exact among
# not flagged rose from 86.8 % to 96.3 %, for 58 -> 74 % flagged; at equal shares flagged
# (the review cost sweep) it is more exact, so the doubt is better placed, not only larger.
# On the suite's hard group: 0.921 / 0.548 / 2 items -> 1.0 / 0.69 / 0 items, so the
# largest share flagged rises to 0.70 while the other two bounds tighten.
# 2026-12-04 evening: a re-identification later in a track's identity epoch vouches for
# the changes it made before (FusionCore._confirm_identities): medium 0.32 -> 0.22
# flagged, hard 0.69 -> 0.631, both still 1.0 exact among not flagged with 0 items; on the
# held-out hard scenarios 73.7 % -> 68.2 % flagged, 96.3 % -> 96.9 % exact among the rest.
# Then a lost anonymous track no longer takes an entrant at the gate (tracker), and a
# change nobody tracked was near goes to the people the tracks miss (evidence): hard
# 0.631 -> 0.536 flagged, still exact; held-out 65.6 % -> 60.1 %, 96.2 % -> 96.7 % exact.
# A walk-out then closes a shopper found again inside before a track just started at the
# gate: medium 0.22 -> 0.20 (held-out unchanged). A hand no longer goes to a track born
# beside its shopper a moment ago (the arm seen as a person): hard 0.536 -> 0.524.
# 2026-12-05: the detector trained on both stores' renders: hard 0.524 -> 0.452; a
# walk-out the tracker doubted weighs on the receipt: hard 0.452 -> 0.488, both still
# 1.0 exact among not flagged with 0 items. Then products in the hands that carry them,
# the held-item reader and fusion weighing products of one weight by their colour
# (fusion/looks.py): medium 0.20 -> 0.08 flagged (exact 94 -> 100 %), hard 0.488 ->
# 0.381 (exact 71.4 -> 88.1 %), both 1.0 exact among not flagged with 0 items; line F1
# 0.882 -> 0.972. The medium target (0.99 / 0.10) is met.
# 2026-12-05 afternoon: a close encounter settled by the colours each track shows after
# it (tracker), and a code the tracker moved onto or off a track within an identity epoch
# saying who the track followed all along (TrackBook.code_after): medium 0.08 -> 0.04
# flagged (the stretch target, 0.05, is met), hard 0.381 -> 0.226 (exact 88.1 -> 91.7 %),
# both 1.0 exact among not flagged with 0 items; line F1 0.972 -> 0.984. The hard
# target (0.97 / 0.25) is met.
# 2026-12-06: hands weighed by their distance from the facing, a track whose hand
# reached into the bin not taken for one walking past, put-backs beside the product's
# own facing likelier, and colour confirming a code only once the track's close passes
# are settled (identity_floor refitted, 0.5 -> 0.85): hard 0.226 -> 0.214 flagged, still
# 1.0 exact among not flagged with 0 items; held-out hard 39.6 % -> 33.1 % flagged,
# 96.8 % -> 98.5 % exact among the rest, 7 -> 5 items.
VISION_THRESHOLDS = {
    'easy': (0.97, 0.05, 0),
    'medium': (0.99, 0.05, 0),
    'hard': (0.99, 0.22, 0),
}
STANDIN_THRESHOLDS = ['--min-exact-not-flagged', '1.0', '--max-review-rate', '0.35', '--max-wrong-charges', '0']


def threshold_failures(groups: dict, thresholds: dict) -> list:
    """What misses a threshold, per group: (least exact among not flagged, most flagged,
    most wrongly charged items); a visit without a receipt always fails."""
    failures = []
    for name, (least_exact, most_flagged, most_wrong) in thresholds.items():
        totals = groups[name]
        if totals['exact_among_not_flagged'] < least_exact:
            failures.append(f'{name}: exact among not flagged {totals["exact_among_not_flagged"]:.3f} < {least_exact}')
        if totals['review_rate'] > most_flagged:
            failures.append(f'{name}: flagged {totals["review_rate"]:.3f} > {most_flagged}')
        if totals['wrong_charge_items'] > most_wrong:
            failures.append(f'{name}: wrong charges {totals["wrong_charge_items"]} > {most_wrong}')
        if totals['missing_receipts']:
            failures.append(f'{name}: {totals["missing_receipts"]} visits without a receipt')
    return failures


def run_eval(repo, out: Path, kept: str, *args, time_scale: float = 4) -> tuple:
    result = subprocess.run([str(JWO), 'eval', '--out', str(out), '--time-scale', str(time_scale), *args],
                            cwd=repo, capture_output=True, text=True, timeout=2400)
    shutil.rmtree(repo / 'runs' / kept, ignore_errors=True)
    if out.is_dir():
        shutil.copytree(out, repo / 'runs' / kept)
    print(result.stdout)
    return result, out / 'report.json'


def fusion_check(repo, report: Path, kept: str, *args) -> dict:
    # Two scenarios at once: the other test worker mostly waits on processes and DDS.
    result = subprocess.run([str(JWO), 'fusion-check', '--jobs', '2', '--report', str(report), *args],
                            cwd=repo, capture_output=True, text=True, timeout=1800)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    shutil.copyfile(report, repo / 'runs' / kept)
    return json.loads(report.read_text())['groups']


# Seconds each group takes on a fresh clone, to start the longest first.
VISION_SECONDS = {'hard': 230, 'medium': 115, 'easy': 90}


@pytest.mark.parametrize('group', [pytest.param(group, marks=pytest.mark.slow(seconds))
                                   for group, seconds in VISION_SECONDS.items()])
def test_scenario_suite_with_vision_meets_thresholds(repo, tmp_path, group):
    # Detections are cached in runs/vision-cache under a hash of everything they follow
    # from (jwo_nodes.vision_check), so only a fresh checkout or a change renders again.
    scenarios = sorted(str(p.relative_to(repo)) for p in (repo / 'test' / 'scenarios').glob(f'{group}-*.yaml'))
    assert scenarios
    (repo / 'runs').mkdir(exist_ok=True)
    groups = fusion_check(repo, tmp_path / 'report.json', f'suite-{group}-last.json', '--vision', *SUITE_STORE,
                          *scenarios)
    assert set(groups) == {group}
    failures = threshold_failures(groups, {group: VISION_THRESHOLDS[group]})
    assert not failures, '\n'.join(failures)


@pytest.mark.slow(20)
def test_a_hard_case_with_vision_through_the_real_nodes(repo, tmp_path):
    # At 2x, not 4x: at 4x the tracker on two cores falls behind the 80 frames a second
    # and drops frames as late (`late_frames`), so accuracy would follow the machine's speed.
    result, report_path = run_eval(repo, tmp_path / 'vision', 'suite-vision-nodes-last', '--vision', *SUITE_STORE,
                                   'test/scenarios/hard-group-handoff.yaml', '--max-wrong-charges', '0',
                                   time_scale=2)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    totals = json.loads(report_path.read_text())['groups']['hard']
    assert totals['visits'] == 2 and totals['missing_receipts'] == 0


@pytest.mark.slow(80)
def test_hand_written_hard_cases_with_the_stand_in_tracker_are_exact(repo, tmp_path):
    cases = sorted(str(p.relative_to(repo)) for p in (repo / 'test' / 'scenarios').glob('hard-[a-z]*.yaml'))
    assert len(cases) == 6
    result, _ = run_eval(repo, tmp_path / 'standin', 'suite-standin-last', *SUITE_STORE, *cases,
                         *STANDIN_THRESHOLDS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# The real-store layout (config/stores/corner.yaml, test/scenarios/corner) with vision,
# as pure code (`jwo fusion-check --vision`): 26 load-cell boards would be 26 processes
# a scenario here. The target is at most 15 % flagged with at least 98 % exact.
# With the stand-in tracker (no hands): corner_medium 0.56 flagged / 1.0 exact among
# the rest / 0 items, corner_hard 0.871 / 0.778 / 2. With vision, since the detector
# was trained on this store's renders too (2026-12-05): corner_medium 0.44 / 1.0 / 0,
# corner_hard 0.871 / 0.778 / 2. With products in hands and their colours weighed,
# hands given to the wearer of the sleeve reaching them and placed over the floor under
# them (2026-12-05): corner_medium 0.36 / 1.0 / 0, corner_hard 0.686 / 0.909 / 1. With
# close encounters settled by colour and codes moved within an epoch (that afternoon):
# corner_medium unchanged, corner_hard 0.614 / 0.889 / 1. That evening, five more of each
# preset (seeds 5-9), because sixteen unseen seeds showed the first five flattered
# corner_hard (81 % exact among the rest there, 7 items): with the same code the twenty
# give corner_medium 0.37 / 1.0 / 0 and corner_hard 0.629 / 0.788 / 6 -- the same code
# on a harder yardstick, not a regression (seeds 0-4 alone still give 0.614 / 0.889 / 1).
# One hand, one change at a time (2026-12-06): corner_medium 0.34 / 1.0 / 0, corner_hard
# 0.621 / 0.811 / 4. Products' packaging colours in the catalogue and neighbours
# swaying side by side meeting once (that morning): corner_medium 0.29 / 1.0 / 0,
# corner_hard 0.636 / 0.882 / 2. Every camera's reading of a hand averaged: corner_medium
# 0.30 / 1.0 / 0, corner_hard 0.629 / 0.885 / 2. Hands by distance, reaching not walking
# past, put-backs beside their own facing, colour confirming codes only after close
# passes settle (that afternoon): corner_medium 0.21 / 1.0 / 0, corner_hard 0.586 /
# 0.931 / 1.
CORNER_THRESHOLDS = {
    'corner_medium': (0.99, 0.22, 0),
    'corner_hard': (0.92, 0.60, 1),
}


@pytest.mark.slow(730)
def test_real_store_layout_with_vision_meets_thresholds(repo, tmp_path):
    scenarios = sorted(str(p.relative_to(repo)) for p in (repo / 'test' / 'scenarios' / 'corner').glob('*.yaml'))
    assert len(scenarios) == 20
    (repo / 'runs').mkdir(exist_ok=True)
    groups = fusion_check(repo, tmp_path / 'corner.json', 'suite-corner-last.json', '--vision',
                          '--store', 'config/stores/corner.yaml', *scenarios)
    assert set(groups) == set(CORNER_THRESHOLDS)
    failures = threshold_failures(groups, CORNER_THRESHOLDS)
    assert not failures, '\n'.join(failures)
