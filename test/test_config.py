"""A bad store config stops start-up with one message naming file, key and problem."""
import subprocess
import sys

import pytest
import yaml

from jwo_nodes.core.config import ConfigError, load_store_config

DEMO = 'config/stores/demo.yaml'


def broken(tmp_path, repo, edit):
    document = yaml.safe_load((repo / DEMO).read_text())
    edit(document)
    path = tmp_path / 'store.yaml'
    path.write_text(yaml.safe_dump(document))
    return path


def test_demo_config_loads(repo):
    store = load_store_config(repo / DEMO)
    assert store.store_id == 'demo'
    assert len(store.bins) == 12 and store.bin('S3-B2').sku == 'YOG-PLAIN'
    assert all(isinstance(p.price_cents, int) for p in store.products.values())


@pytest.mark.parametrize('edit, key, problem', [
    (lambda d: d['shelves'][1]['bins'][0].update(sku='NOPE'), 'shelves[1].bins[0].sku', "unknown SKU 'NOPE'"),
    (lambda d: d['shelves'][2]['bins'][1].update(id='S1-B1'), 'shelves[2].bins[1].id', "duplicate bin id 'S1-B1'"),
    (lambda d: d['products'][3].update(unit_grams=-5), 'products[3].unit_grams', 'must be > 0.0'),
    (lambda d: d['cameras'][0].pop('source'), 'cameras[0].source', 'missing camera source'),
    (lambda d: d['products'][0].update(price_cents=1.49), 'products[0].price_cents', 'expected an integer'),
    (lambda d: d['gates'][0].update(id='G-1'), 'gates[0].id', 'must start with a letter'),
    (lambda d: d['shelves'][0]['bins'][0].update(position=[1]), 'shelves[0].bins[0].position', 'expected [x, y]'),
    (lambda d: d.pop('gates'), 'gates', 'missing'),
    (lambda d: d.pop('review'), 'review', 'missing'),
    (lambda d: d['review'].pop('cost_cents'), 'review.cost_cents', 'missing'),
    (lambda d: d['review'].update(overcharge_weight=0.5), 'review.overcharge_weight', 'must be >= 1.0'),
    # Unknown keys are typos, never ignored: named with their path and the closest known key.
    (lambda d: d.update(camera=d.pop('cameras')), 'camera', "unknown key 'camera' (did you mean 'cameras'?)"),
    (lambda d: d.update(tax_rate=825), 'tax_rate', "unknown key 'tax_rate' (known: store, review, "),
    (lambda d: d['store'].update(tax_rate=d['store'].pop('tax_rate_bp')), 'store.tax_rate',
     "unknown key 'tax_rate' (did you mean 'tax_rate_bp'?)"),
    (lambda d: d['products'][2].update(price_cent=d['products'][2].pop('price_cents')),
     'products[2].price_cent', "unknown key 'price_cent' (did you mean 'price_cents'?)"),
    (lambda d: d['shelves'][2]['bins'][0].update(price_cents=99), 'shelves[2].bins[0].price_cents',
     "unknown key 'price_cents' (known: id, sku, position, initial_units)"),
    (lambda d: d['shelves'][1].update(facings='+y'), 'shelves[1].facings', "did you mean 'facing'?"),
    (lambda d: d['gates'][0].update(radius=0.8), 'gates[0].radius', "did you mean 'radius_m'?"),
    (lambda d: d['cameras'][1].update(sees_shelf=['S1']), 'cameras[1].sees_shelf', "did you mean 'sees_shelves'?"),
    (lambda d: d['review'].update(cost=60), 'review.cost', "unknown key 'cost'"),
])
def test_bad_config_names_file_key_and_problem(tmp_path, repo, edit, key, problem):
    path = broken(tmp_path, repo, edit)
    with pytest.raises(ConfigError) as raised:
        load_store_config(path)
    assert raised.value.key == key
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f'{path}: {key}: ')


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / 'store.yaml'
    path.write_text('store:\n  id: demo\n  name: [unclosed\n')
    with pytest.raises(ConfigError) as raised:
        load_store_config(path)
    assert 'malformed YAML' in raised.value.problem and raised.value.key.startswith('line ')


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match='cannot read'):
        load_store_config(tmp_path / 'nope.yaml')


def test_node_with_bad_config_exits_2_with_one_line(tmp_path, repo):
    path = broken(tmp_path, repo, lambda d: d['shelves'][0]['bins'][0].update(sku='NOPE'))
    result = subprocess.run(
        [sys.executable, '-m', 'jwo_nodes.nodes.fusion_node', '--ros-args', '-p', f'store_config:={path}'],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"error: {path}: shelves[0].bins[0].sku: unknown SKU 'NOPE'" in result.stderr


def test_node_without_required_parameter_exits_2(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'jwo_nodes.nodes.fusion_node'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert 'store_config: required parameter is not set' in result.stderr


def test_core_modules_never_import_rclpy():
    code = ('import sys, pkgutil, importlib, jwo_nodes.core as core\n'
            'for m in pkgutil.iter_modules(core.__path__): importlib.import_module("jwo_nodes.core." + m.name)\n'
            'sys.exit("rclpy" in sys.modules)')
    assert subprocess.run([sys.executable, '-c', code], timeout=60).returncode == 0
