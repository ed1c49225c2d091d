"""A bad scenario file stops with one message naming file, key and problem; an unknown
key is a typo, named with the closest known key, never ignored."""
from pathlib import Path

import pytest
import yaml

from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.scenario_gen import generate
from jwo_nodes.core.sim import load_scenario, parse_scenario

REPO = Path(__file__).resolve().parent.parent
DEMO_SCENARIO = REPO / 'config/scenarios/demo.yaml'


@pytest.fixture(scope='module')
def demo():
    return load_store_config(REPO / 'config/stores/demo.yaml')


def broken(tmp_path, edit) -> Path:
    document = yaml.safe_load(DEMO_SCENARIO.read_text())
    edit(document)
    path = tmp_path / 'scenario.yaml'
    path.write_text(yaml.safe_dump(document))
    return path


def test_every_shipped_scenario_loads(demo):
    corner = load_store_config(REPO / 'config/stores/corner.yaml')
    paths = [DEMO_SCENARIO, *sorted((REPO / 'test/scenarios').glob('*.yaml'))]
    assert len(paths) > 20
    for path in paths:
        load_scenario(path, demo)
    for path in sorted((REPO / 'test/scenarios/corner').glob('*.yaml')):
        load_scenario(path, corner)


def script(d, party=0):
    return d['parties'][party]['script']


@pytest.mark.parametrize('edit, key, problem', [
    (lambda d: d.update(partys=d.pop('parties')), 'partys', "unknown key 'partys' (did you mean 'parties'?)"),
    (lambda d: d.update(duration_s=60), 'duration_s', "unknown key 'duration_s' (known: name, store, "),
    (lambda d: d['noise'].update(loadcell_sigma=2.0), 'noise.loadcell_sigma',
     "unknown noise knob 'loadcell_sigma' (did you mean 'loadcell_sigma_g'?)"),
    (lambda d: d['parties'][1].update(enter_at=d['parties'][1].pop('enter_at_s')), 'parties[1].enter_at',
     "unknown key 'enter_at' (did you mean 'enter_at_s'?)"),
    (lambda d: d['parties'][0]['credential'].update(tokn='x'), 'parties[0].credential.tokn',
     "did you mean 'token'?"),
    (lambda d: script(d).insert(0, {'tkae': {'bin': 'S1-B1'}}), 'parties[0].script[0].tkae',
     "unknown action 'tkae' (did you mean 'take'?)"),
    (lambda d: script(d)[0]['take'].update(count=2), 'parties[0].script[0].take.count',
     "unknown key 'count' (known: bin, n, sku)"),
    (lambda d: script(d).insert(0, {'linger': {'at': 'S1-B1', 'secs': 3}}), 'parties[0].script[0].linger.secs',
     "unknown key 'secs'"),
    (lambda d: d['parties'][0].update(scripts=[script(d)]), 'parties[0].script', 'not both'),
])
def test_bad_scenario_names_file_key_and_problem(tmp_path, demo, edit, key, problem):
    path = broken(tmp_path, edit)
    with pytest.raises(ConfigError) as raised:
        load_scenario(path, demo)
    assert raised.value.key == key
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f'{path}: {key}: ')


@pytest.mark.parametrize('preset, seed', [('hard', 701), ('medium', 702)])
def test_a_preset_makes_a_scenario_for_seeds_that_draw_a_one_bin_shelf(demo, preset, seed):
    """The demo store's S5 has one bin: two parties cannot meet at neighbouring bins of
    it (these seeds drew it and stopped with a traceback)."""
    scenario = parse_scenario(generate(demo, preset, seed), demo)
    assert scenario.parties
