"""`jwo fusion-fit`: the evidence of each change one shopper made, captured from a
scenario run, weighed again under each value of a setting; the settings it fits are
those reach_evidence reads; bad arguments are clear errors."""
import dataclasses
import math
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.fusion import FusionSettings
from jwo_nodes.core.fusion.evidence import REACH_SETTINGS, LaterIdentity, reach_evidence
from jwo_nodes.core.fusion.tracks import Sample, TrackWindow
from jwo_nodes.core.sim import NS
from jwo_nodes.fusion_fit import captures_of, fit

JWO = Path(sys.executable).parent / 'jwo'
SCENARIO, SUITE = 'test/scenarios/medium-0.yaml', 'test/stores/suite.yaml'


def fusion_fit(repo, *args):
    return subprocess.run([str(JWO), 'fusion-fit', *args], cwd=repo, capture_output=True, text=True, timeout=300)


def test_each_value_weighs_the_captured_changes_again_and_saved_captures_weigh_alike(repo, tmp_path):
    saved = tmp_path / 'captures.pkl'
    result = fusion_fit(repo, '--store', SUITE, '--setting', 'reach_sigma_m', '--values', '0.1,0.3',
                        '--save', str(saved), SCENARIO)
    assert result.returncode == 0, result.stderr[-2000:]
    made = int(re.search(r'medium-0.yaml: \d+ changes, (\d+) one shopper made', result.stdout).group(1))
    fits = {float(value): (float(loss), int(changes), marks) for value, loss, changes, marks in re.findall(
        r'reach_sigma_m = ([\d.]+): log loss of the maker ([\d.]+); maker less than 0.99 sure in \d+ of (\d+) '
        r'changes, somebody else likelier in \d+ ?(.*)', result.stdout)}
    assert set(fits) == {0.1, 0.2, 0.3}                      # and the shipped value
    assert all(changes == made > 0 for _, changes, _ in fits.values())
    assert '(default)' in fits[0.2][2]
    best = min(fits, key=lambda v: fits[v][0])
    assert '(best)' in fits[best][2] and all('(best)' not in fits[v][2] for v in fits if v != best)
    # The same captures, loaded: the shipped value's figure again, in seconds.
    loaded = fusion_fit(repo, '--setting', 'reach_sigma_m', '--values', '0.2', '--load', str(saved))
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert f'reach_sigma_m = 0.2: log loss of the maker {fits[0.2][0]:.4f}' in loaded.stdout


def test_captures_are_the_changes_one_shopper_made_weighed_as_fusion_weighed_them(repo):
    """With the shipped settings the captured evidence gives each maker what fusion
    gave it: the stand-in tracker follows everybody surely, so every change's maker is
    its likeliest visit."""
    captures, weighed = captures_of((str(repo / SCENARIO), str(repo / SUITE), False, ''))
    assert 0 < len(captures) <= weighed
    assert all(c.maker and c.scenario == 'medium-0' for c in captures)
    shipped = fit(captures, FusionSettings())
    assert shipped.changes == len(captures) and shipped.others_first == 0 and 0.0 <= shipped.log_loss < 0.05


@pytest.mark.parametrize('args, says', [
    (['--setting', 'reach_sigma_m', '--values', 'wide', SCENARIO], "--values 'wide': expected comma-separated"),
    (['--setting', 'reach_sigma_m', '--values', '0.1,-1', SCENARIO], 'none negative'),
    (['--setting', 'window_margin_s', '--values', '0.1', SCENARIO], "invalid choice: 'window_margin_s'"),
    (['--setting', 'reach_sigma_m', '--values', '0.1'], 'give scenario files (or --load)'),
    (['--setting', 'reach_sigma_m', '--values', '0.1', '--load', 'x.pkl', SCENARIO], 'not both'),
    (['--setting', 'reach_sigma_m', '--values', '0.1', '--load', 'no/such.pkl'], '--load no/such.pkl'),
    (['--setting', 'reach_sigma_m', '--values', '0.1', '--save', 'no/such/c.pkl', SCENARIO], 'no folder no/such'),
    (['--setting', 'reach_sigma_m', '--values', '0', SCENARIO], 'reach_sigma_m = 0 cannot weigh a change'),
])
def test_bad_arguments_are_clear_errors(repo, args, says):
    result = fusion_fit(repo, '--store', SUITE, *args)
    assert result.returncode == 2 and says in result.stderr


def test_a_file_that_holds_no_captures_is_a_clear_error(repo, tmp_path):
    other = tmp_path / 'other.pkl'
    other.write_bytes(pickle.dumps({'not': 'captures'}))
    result = fusion_fit(repo, '--setting', 'reach_sigma_m', '--values', '0.1', '--load', str(other))
    assert result.returncode == 2 and 'not the changes a jwo fusion-fit --save wrote' in result.stderr


def test_the_settings_it_fits_are_those_reach_evidence_weighs_by():
    """Each of REACH_SETTINGS, a quarter or four times its value, changes who is likely
    to have made a change in a scene that exercises every term: a doubted track whose
    position wanders while its hand is in the bin, a second one standing farther off with
    its hand at the zone's edge, and a visit nobody follows."""
    store = load_store_config(Path(__file__).resolve().parent.parent / 'config/stores/demo.yaml')
    bin_ = store.bin('S1-B1')
    shelf = store.shelf_point('S1-B1')
    near = TrackWindow('t1', tuple(
        Sample(k * NS // 10, bin_.x + 0.1 + (0.3 if k % 2 else -0.3), bin_.y, shelf if 3 <= k < 6 else None, 'v1', 0.6)
        for k in range(10)))
    farther = TrackWindow('t2', tuple(
        Sample(k * NS // 10, bin_.x - 0.9, bin_.y, (shelf[0] - 0.22, shelf[1]) if k < 2 else None, 'v2', 0.9)
        for k in range(10)))
    later = {('t1', 0, 'v1'): LaterIdentity('v1', 0.7)}
    people = {'v1': 1, 'v2': 1, 'v3': 1}

    def reach(settings):
        return reach_evidence([near, farther], (bin_.x, bin_.y), shelf, (0, NS), people, settings, later)

    shipped = FusionSettings()
    assert set(REACH_SETTINGS) <= {f.name for f in dataclasses.fields(FusionSettings)}
    for name in REACH_SETTINGS:
        value = getattr(shipped, name)
        moved = [reach(dataclasses.replace(shipped, **{name: factor * value})) for factor in (0.25, 4.0)]
        assert any(r != reach(shipped) for r in moved), name
        assert all(math.isclose(sum(v.probability for v in r.visits), 1.0) for r in moved)
