"""A bad store config stops start-up with one message naming file, key and problem."""
import subprocess
import sys

import pytest
import yaml

from jwo_nodes.core.config import (ConfigError, MealDeal, MultiBuy, PercentOff, PromotionKind, TimeWindow,
                                   load_store_config, parse_store_config)

DEMO = 'config/stores/demo.yaml'


def broken(tmp_path, repo, edit):
    document = yaml.safe_load((repo / DEMO).read_text())
    edit(document)
    path = tmp_path / 'store.yaml'
    path.write_text(yaml.safe_dump(document))
    return path


def promoting(*promotions, **store_keys):
    """An edit of the demo store: a product sold by weight (APPLES), these promotions,
    these store keys."""
    def edit(document):
        document['store'].update(store_keys)
        document['products'].append({'sku': 'APPLES', 'name': 'Apples', 'unit_grams': 180.0,
                                     'tolerance_grams': 40.0, 'price_per_kg_cents': 299})
        document['promotions'] = list(promotions)
    return edit


def multi_buy(skus=('COLA-330',), **changes):
    return {'id': 'cola-3-for-2', 'name': 'Cola 3 for 2', 'kind': 'multi_buy', 'skus': list(skus), 'buy': 3,
            'pay': 2, **changes}


def meal_deal(groups, **changes):
    return {'id': 'lunch', 'name': 'Lunch deal', 'kind': 'meal_deal', 'groups': groups, 'price_cents': 450,
            **changes}


def lunchtime(**window):
    return multi_buy(window={'days': ['mon', 'tue', 'wed', 'thu', 'fri'], 'from': '11:00', 'until': '14:30',
                             **window})


def test_demo_config_loads(repo):
    store = load_store_config(repo / DEMO)
    assert store.store_id == 'demo'
    assert len(store.bins) == 13 and store.bin('S3-B2').sku == 'YOG-PLAIN'
    assert [sku for sku, p in store.products.items() if p.age_restricted] == ['WINE-750']
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
    # Prices by weight, age restriction, promotions and their time windows.
    (lambda d: d['products'][0].update(price_per_kg_cents=299), 'products[0].price_per_kg_cents', 'not both'),
    (lambda d: d['products'][0].pop('price_cents'), 'products[0].price_cents',
     'missing (or price_per_kg_cents for a product sold by weight)'),
    (lambda d: d['products'][1].update(age_restricted='yes'), 'products[1].age_restricted',
     "expected true or false, got 'yes'"),
    (lambda d: d['products'][2].update(low_stock_units=-1), 'products[2].low_stock_units', 'must be >= 0, got -1'),
    (lambda d: d['products'][2].update(low_stock_units=2.5), 'products[2].low_stock_units',
     'expected an integer, got 2.5'),
    (lambda d: d['products'][2].update(colour=[0.6, 0.5]), 'products[2].colour',
     'expected [blue, green] shares of a colour (each 0 to 1, together at most 1), got [0.6, 0.5]'),
    (lambda d: d['products'][2].update(colour='red'), 'products[2].colour', "got 'red'"),
    (lambda d: d.update(promotions={'id': 'x'}), 'promotions', 'expected a list, got dict'),
    (promoting(multi_buy(['COLA-330', 'NOPE'])), 'promotions[0].skus[1]', "unknown SKU 'NOPE' (not under products)"),
    (promoting(multi_buy(['COLA-330', 'COLA-330'])), 'promotions[0].skus[1]', "'COLA-330' is listed twice"),
    (promoting(multi_buy(kind='bogof')), 'promotions[0].kind',
     "unknown kind 'bogof' (known: multi_buy, fixed_price, percent_off, meal_deal)"),
    (promoting(multi_buy(pay=3)), 'promotions[0].pay', 'must be less than buy (3), got 3'),
    (promoting(multi_buy(buy=1, pay=1)), 'promotions[0].buy', 'must be >= 2, got 1'),
    (promoting(multi_buy(['APPLES'])), 'promotions[0].skus[0]',
     "'APPLES' is sold by weight: multi_buy counts units (only percent_off takes products sold by weight)"),
    (promoting({'id': 'p', 'name': 'P', 'kind': 'percent_off', 'skus': ['APPLES'], 'percent': 0}),
     'promotions[0].percent', 'must be >= 1, got 0'),
    (promoting({'id': 'p', 'name': 'P', 'kind': 'percent_off', 'skus': ['APPLES'], 'percent': 100}),
     'promotions[0].percent', 'must be <= 99, got 100'),
    (promoting({'id': 'p', 'name': 'P', 'kind': 'fixed_price', 'skus': ['YOG-STRAW', 'YOG-PLAIN'], 'count': 2,
                'price_cents': 178}),
     'promotions[0].price_cents', '178 never saves: 2 of the dearest listed SKU cost 178'),
    (promoting(meal_deal([['SANDW-EGG'], []])), 'promotions[0].groups[1]', 'must not be empty'),
    (promoting(meal_deal([['SANDW-EGG'], ['COLA-330', 'APPLES']])), 'promotions[0].groups[1][1]',
     "'APPLES' is sold by weight: meal_deal counts units"),
    (promoting(meal_deal([['SANDW-EGG', 'COLA-330']])), 'promotions[0].groups', 'at least two groups'),
    (promoting(meal_deal([['SANDW-EGG'], ['COLA-330']], price_cents=548)), 'promotions[0].price_cents',
     'never saves'),
    (promoting(multi_buy(), multi_buy()), 'promotions[1].id', "duplicate promotion id 'cola-3-for-2'"),
    (promoting(multi_buy(percnt=10)), 'promotions[0].percnt', "unknown key 'percnt' (did you mean 'percent'?)"),
    (promoting(multi_buy(percent=10)), 'promotions[0].percent',
     "unknown key 'percent' (known: id, name, kind, window, skus, buy, pay)"),
    (promoting(multi_buy(name='')), 'promotions[0].name', 'expected a non-empty string'),
    (promoting(lunchtime()), 'store.timezone', 'missing (promotions[0].window is in local time)'),
    (promoting(lunchtime(), timezone='Europe/Berlim'), 'store.timezone',
     "unknown time zone 'Europe/Berlim' (did you mean 'Europe/Berlin'?)"),
    (promoting(lunchtime(days=['mon', 'funday']), timezone='UTC'), 'promotions[0].window.days[1]',
     "unknown day 'funday'"),
    (promoting(lunchtime(days=['mon', 'mon']), timezone='UTC'), 'promotions[0].window.days[1]', 'listed twice'),
    (promoting(lunchtime(**{'from': '25:00'}), timezone='UTC'), 'promotions[0].window.from',
     'expected a time "HH:MM" from 00:00 to 24:00'),
    (promoting(lunchtime(until='14:75'), timezone='UTC'), 'promotions[0].window.until', 'expected a time'),
    # An unquoted 11:00 is the number 660 to YAML.
    (promoting(lunchtime(until=660), timezone='UTC'), 'promotions[0].window.until', 'in quotes'),
    (promoting(lunchtime(until='11:00'), timezone='UTC'), 'promotions[0].window.until', 'equals from'),
    (promoting(lunchtime(**{'from': '24:00'}), timezone='UTC'), 'promotions[0].window.from', 'before 24:00'),
    (promoting(multi_buy(window={}), timezone='UTC'), 'promotions[0].window', 'empty'),
    (promoting(lunchtime(form='11:00'), timezone='UTC'), 'promotions[0].window.form', "did you mean 'from'?"),
])
def test_bad_config_names_file_key_and_problem(tmp_path, repo, edit, key, problem):
    path = broken(tmp_path, repo, edit)
    with pytest.raises(ConfigError) as raised:
        load_store_config(path)
    assert raised.value.key == key
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f'{path}: {key}: ')


def test_prices_by_weight_age_restriction_promotions_and_packaging_colours(repo):
    document = yaml.safe_load((repo / DEMO).read_text())
    promoting(lunchtime(), meal_deal([['SANDW-EGG'], ['COLA-330', 'WATER-500']]),
              {'id': 'fruit', 'name': 'Fruit 10 % off', 'kind': 'percent_off', 'skus': ['APPLES'], 'percent': 10,
               'window': {'from': '18:00', 'until': '00:00'}},
              timezone='Europe/Berlin')(document)
    document['products'][0]['age_restricted'] = True
    document['products'][1]['low_stock_units'] = 4
    document['products'][1]['colour'] = [0.25, 0.5]
    store = parse_store_config(document, 'store.yaml')
    assert store.products['WATER-500'].low_stock_units == 4 and store.products['COLA-330'].low_stock_units is None
    assert store.products['WATER-500'].colour == (0.25, 0.5) and store.products['COLA-330'].colour is None
    apples = store.products['APPLES']
    assert apples.sold_by_weight and apples.price_per_kg_cents == 299
    assert apples.price_cents == 54                     # a typical 180 g at 2.99/kg: 53.82
    assert store.products['COLA-330'].age_restricted and not store.products['WATER-500'].age_restricted
    assert not store.products['WATER-500'].sold_by_weight and store.products['WATER-500'].price_per_kg_cents is None
    assert store.timezone == 'Europe/Berlin'
    cola, lunch, fruit = store.promotions
    assert isinstance(cola, MultiBuy) and (cola.skus, cola.buy, cola.pay) == (('COLA-330',), 3, 2)
    assert cola.window == TimeWindow(days=frozenset({0, 1, 2, 3, 4}), from_minute=660, until_minute=870)
    assert isinstance(lunch, MealDeal) and lunch.groups == (('SANDW-EGG',), ('COLA-330', 'WATER-500'))
    assert lunch.skus == ('SANDW-EGG', 'COLA-330', 'WATER-500') and lunch.window is None
    assert isinstance(fruit, PercentOff) and fruit.kind is PromotionKind.PERCENT_OFF
    assert fruit.window == TimeWindow(days=frozenset(range(7)), from_minute=18 * 60, until_minute=24 * 60)


def test_every_shipped_store_config_loads(repo):
    paths = sorted((repo / 'config' / 'stores').glob('*.yaml'))
    assert len(paths) >= 2
    for path in paths:
        store = load_store_config(path)
        assert all(isinstance(p.price_cents, int) for p in store.products.values())


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
