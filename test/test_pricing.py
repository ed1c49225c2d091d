"""The pricing engine (jwo_nodes.core.pricing): promotions, prices by weight, the best
combination for the shopper, time windows in the store's time zone, rounding and tax."""
import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from jwo_common import money
from jwo_nodes.core import pricing
from jwo_nodes.core.config import PromotionKind, parse_store_config
from jwo_nodes.core.pricing import Measure, UsedItem, price_cart

PRODUCTS = [
    {'sku': 'COLA', 'name': 'Cola', 'price_cents': 149},
    {'sku': 'WATER', 'name': 'Water', 'price_cents': 99},
    {'sku': 'JUICE', 'name': 'Juice', 'price_cents': 329},
    {'sku': 'CHIPS', 'name': 'Chips', 'price_cents': 249},
    {'sku': 'SANDWICH', 'name': 'Sandwich', 'price_cents': 399},
    {'sku': 'WRAP', 'name': 'Wrap', 'price_cents': 449},
    {'sku': 'YOG-A', 'name': 'Yogurt A', 'price_cents': 89},
    {'sku': 'YOG-B', 'name': 'Yogurt B', 'price_cents': 79},
    {'sku': 'BAR', 'name': 'Cereal bar', 'price_cents': 105},
    {'sku': 'MINT', 'name': 'Mint', 'price_cents': 40},
    {'sku': 'BEER', 'name': 'Beer', 'price_cents': 189, 'age_restricted': True},
    {'sku': 'APPLES', 'name': 'Apples', 'price_per_kg_cents': 299},
    {'sku': 'NUTS', 'name': 'Nuts (bulk)', 'price_per_kg_cents': 1999},
]
# 2026-12-02 is a Wednesday; Berlin is UTC+1 then (and UTC+2 in July).
BERLIN = ZoneInfo('Europe/Berlin')


def store_with(*promotions, tax_rate_bp=0, timezone='Europe/Berlin'):
    document = {
        'store': {'id': 'test', 'name': 'Test', 'currency': 'EUR', 'tax_rate_bp': tax_rate_bp},
        'review': {'cost_cents': 60, 'overcharge_weight': 3.0, 'wrong_line_cents': 150},
        'products': [{'unit_grams': 100.0, 'tolerance_grams': 5.0, **p} for p in PRODUCTS],
        'shelves': [{'id': 'S1', 'source': 'sim', 'bins': [
            {'id': f'B{i}', 'sku': p['sku'], 'position': [float(i), 1.0], 'initial_units': 10}
            for i, p in enumerate(PRODUCTS)]}],
        'gates': [{'id': 'G1', 'position': [0.5, 4.0], 'radius_m': 0.8, 'source': 'sim'}],
        'promotions': list(promotions),
    }
    if timezone:
        document['store']['timezone'] = timezone
    return parse_store_config(document, 'test.yaml')


def local_ns(year, month, day, hour, minute, second=0, zone=BERLIN) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp()) * 1_000_000_000


NOON = local_ns(2026, 12, 2, 12, 0)


def multi_buy(skus, buy=3, pay=2, id='3for2', **extra):
    return {'id': id, 'name': f'{buy} for {pay}', 'kind': 'multi_buy', 'skus': skus, 'buy': buy, 'pay': pay,
            **extra}


def fixed_price(skus, count, price_cents, id='fixed', **extra):
    return {'id': id, 'name': f'{count} for {price_cents}', 'kind': 'fixed_price', 'skus': skus,
            'count': count, 'price_cents': price_cents, **extra}


def percent_off(skus, percent, id='pct', **extra):
    return {'id': id, 'name': f'{percent} % off', 'kind': 'percent_off', 'skus': skus, 'percent': percent,
            **extra}


def meal_deal(groups, price_cents, id='meal', **extra):
    return {'id': id, 'name': 'Meal deal', 'kind': 'meal_deal', 'groups': groups, 'price_cents': price_cents,
            **extra}


def worth(product, quantity: int) -> int:
    if product.sold_by_weight:
        return money.weighed_price_cents(quantity, product.price_per_kg_cents)
    return quantity * product.price_cents


def savings_of(priced) -> list:
    return [(s.promotion_id, tuple((u.sku, u.quantity) for u in s.used), s.cents) for s in priced.savings]


def test_no_promotions_prices_the_lines():
    priced = price_cart(store_with(), {'COLA': 2, 'BEER': 1, 'WATER': 0}, NOON)
    assert [(l.sku, l.quantity, l.measure, l.unit_price_cents, l.line_total_cents) for l in priced.lines] == [
        ('BEER', 1, Measure.UNITS, 189, 189), ('COLA', 2, Measure.UNITS, 149, 298)]
    assert [l.age_restricted for l in priced.lines] == [True, False]
    assert priced.savings == ()
    assert (priced.gross_cents, priced.savings_cents, priced.subtotal_cents, priced.total_cents) == (487, 0, 487, 487)


def test_multi_buy_takes_every_full_set_and_leaves_the_rest():
    store = store_with(multi_buy(['COLA']))
    assert savings_of(price_cart(store, {'COLA': 2}, NOON)) == []
    priced = price_cart(store, {'COLA': 7}, NOON)
    assert savings_of(priced) == [('3for2', (('COLA', 3),), 149)] * 2
    assert priced.savings[0].kind is PromotionKind.MULTI_BUY and priced.savings[0].name == '3 for 2'
    assert priced.subtotal_cents == 7 * 149 - 2 * 149


def test_multi_buy_across_skus_gives_the_cheapest_free_and_groups_for_the_most():
    store = store_with(multi_buy(['COLA', 'WATER', 'JUICE']))
    assert savings_of(price_cart(store, {'COLA': 1, 'WATER': 1, 'JUICE': 1}, NOON)) == [
        ('3for2', (('COLA', 1), ('JUICE', 1), ('WATER', 1)), 99)]
    # Three juices together and three waters together free a juice (329) and a water
    # (99); mixed sets would free only waters.
    assert price_cart(store, {'WATER': 3, 'JUICE': 3}, NOON).savings_cents == 329 + 99


def test_fixed_price_takes_the_dearest_mix_and_never_raises_a_price():
    store = store_with(fixed_price(['YOG-A', 'YOG-B'], 2, 150))
    # A + B (168) saves 18, B + B (158) only 8.
    assert savings_of(price_cart(store, {'YOG-A': 1, 'YOG-B': 2}, NOON)) == [
        ('fixed', (('YOG-A', 1), ('YOG-B', 1)), 18)]
    assert price_cart(store, {'YOG-B': 2}, NOON).savings_cents == 8
    # At 2 for 1.60 two B's (158) would cost more: not applied.
    dear = store_with(fixed_price(['YOG-A', 'YOG-B'], 2, 160))
    priced = price_cart(dear, {'YOG-B': 2}, NOON)
    assert priced.savings == () and priced.subtotal_cents == 158


def test_percent_off_rounds_once_per_application_half_up():
    store = store_with(percent_off(['BAR', 'APPLES'], 10))
    # 3 x 105 = 315, 10 % = 31.5 -> 32 (per unit it would be 3 x 11 = 33).
    assert savings_of(price_cart(store, {'BAR': 3}, NOON)) == [('pct', (('BAR', 3),), 32)]
    # 1234 g at 2.99/kg = 368.966 -> 369; 10 % = 36.9 -> 37.
    priced = price_cart(store, {'APPLES': 1234}, NOON)
    assert priced.lines[0].line_total_cents == 369
    assert savings_of(priced) == [('pct', (('APPLES', 1234),), 37)]


def test_largest_percent_off_wins_and_a_cent_rounded_away_is_no_saving_line():
    store = store_with(percent_off(['COLA'], 10, id='ten'), percent_off(['COLA'], 25, id='quarter'),
                       percent_off(['WATER'], 1, id='one'))
    # 298 x 25 % = 74.5 -> 75; 99 x 1 % = 0.99 -> 1.
    assert savings_of(price_cart(store, {'COLA': 2, 'WATER': 1}, NOON)) == [('quarter', (('COLA', 2),), 75),
                                                                             ('one', (('WATER', 1),), 1)]
    cheap = store_with(percent_off(['MINT'], 1))
    priced = price_cart(cheap, {'MINT': 1}, NOON)                   # 0.4 -> 0
    assert priced.savings == () and priced.subtotal_cents == 40


def test_meal_deal_takes_the_dearest_item_of_each_group():
    store = store_with(meal_deal([['SANDWICH', 'WRAP'], ['COLA', 'WATER', 'JUICE'], ['CHIPS']], 600))
    priced = price_cart(store, {'SANDWICH': 1, 'WRAP': 1, 'WATER': 1, 'JUICE': 1, 'CHIPS': 1}, NOON)
    assert savings_of(priced) == [('meal', (('CHIPS', 1), ('JUICE', 1), ('WRAP', 1)), 449 + 329 + 249 - 600)]
    assert price_cart(store, {'SANDWICH': 1, 'COLA': 1}, NOON).savings == ()     # a group left empty


def test_meal_deal_that_would_cost_more_than_its_items_is_not_applied():
    store = store_with(meal_deal([['SANDWICH', 'YOG-B'], ['WATER', 'JUICE']], 400))
    assert price_cart(store, {'YOG-B': 1, 'WATER': 1}, NOON).savings == ()        # 178 < 400
    assert price_cart(store, {'SANDWICH': 1, 'WATER': 1}, NOON).savings_cents == 399 + 99 - 400


def test_percent_off_beats_a_multi_buy_that_saves_less():
    store = store_with(multi_buy(['COLA']), percent_off(['COLA'], 50))
    # 3 for 2 saves 149; half off the three saves 223.5 -> 224.
    assert savings_of(price_cart(store, {'COLA': 3}, NOON)) == [('pct', (('COLA', 3),), 224)]
    # Six: two sets of 3 for 2 save 298 < half off 447 -> 447.
    assert price_cart(store, {'COLA': 6}, NOON).savings_cents == 447


def test_units_left_by_a_bundle_still_get_their_percent_off():
    store = store_with(multi_buy(['COLA']), percent_off(['COLA'], 10))
    assert savings_of(price_cart(store, {'COLA': 4}, NOON)) == [('3for2', (('COLA', 3),), 149),
                                                                 ('pct', (('COLA', 1),), 15)]


def test_best_combination_beats_taking_the_biggest_deal_first():
    # Two juices for 3.00 saves most alone (658 - 300 = 358), but then the meal deal has
    # no juice; juice + chips for 3.00 (278) and juice + water in the meal deal (128)
    # save 406 together.
    store = store_with(fixed_price(['JUICE', 'CHIPS'], 2, 300), meal_deal([['JUICE'], ['WATER']], 300))
    cart = {'JUICE': 2, 'CHIPS': 1, 'WATER': 1}
    priced = price_cart(store, cart, NOON)
    assert priced.best_proven
    assert savings_of(priced) == [('fixed', (('CHIPS', 1), ('JUICE', 1)), 278),
                                  ('meal', (('JUICE', 1), ('WATER', 1)), 128)]
    assert priced.savings_cents == 406


def test_past_the_search_bound_a_greedy_choice_is_taken_and_said(monkeypatch):
    store = store_with(fixed_price(['JUICE', 'CHIPS'], 2, 300), meal_deal([['JUICE'], ['WATER']], 300))
    monkeypatch.setattr(pricing, 'SEARCH_LIMIT', 1)
    priced = price_cart(store, {'JUICE': 2, 'CHIPS': 1, 'WATER': 1}, NOON)
    assert not priced.best_proven
    assert savings_of(priced) == [('fixed', (('JUICE', 2),), 358)]


def test_greedy_choice_never_saves_less_than_the_percentages_alone(monkeypatch):
    store = store_with(multi_buy(['COLA']), percent_off(['COLA'], 50))
    monkeypatch.setattr(pricing, 'MAX_EXACT_UNITS', 0)
    priced = price_cart(store, {'COLA': 3}, NOON)
    assert not priced.best_proven and savings_of(priced) == [('pct', (('COLA', 3),), 224)]


def test_greedy_choice_never_applies_a_deal_that_would_cost_more(monkeypatch):
    store = store_with(fixed_price(['YOG-A', 'YOG-B'], 2, 160))
    monkeypatch.setattr(pricing, 'MAX_EXACT_UNITS', 0)
    # Two A's (178) save 18; two B's (158) at 1.60 would cost 2 more: left alone.
    priced = price_cart(store, {'YOG-A': 2, 'YOG-B': 2}, NOON)
    assert savings_of(priced) == [('fixed', (('YOG-A', 2),), 18)]
    assert priced.subtotal_cents == 178 + 158 - 18


def test_same_cart_and_stamp_always_give_the_same_receipt():
    store = store_with(multi_buy(['COLA', 'WATER', 'JUICE']), fixed_price(['YOG-A', 'YOG-B'], 2, 150),
                       meal_deal([['SANDWICH', 'WRAP'], ['COLA', 'WATER', 'JUICE']], 500),
                       percent_off(['COLA', 'APPLES'], 10))
    cart = {'COLA': 4, 'WATER': 2, 'JUICE': 1, 'YOG-A': 3, 'YOG-B': 2, 'SANDWICH': 1, 'WRAP': 1, 'APPLES': 850}
    first = price_cart(store, cart, NOON)
    shuffled = list(cart.items())
    random.Random(4).shuffle(shuffled)
    assert price_cart(store, dict(shuffled), NOON) == first
    assert price_cart(store, dict(reversed(list(cart.items()))), NOON) == first


def test_equal_savings_go_to_fewer_applications():
    # Two meal deals (cola + water for 1.49, 99 off each) and one 4 for 2 (both waters
    # free) save 198 alike: the receipt gets the one line.
    store = store_with(meal_deal([['COLA'], ['WATER']], 149),
                       multi_buy(['COLA', 'WATER'], buy=4, pay=2, id='4for2'))
    assert savings_of(price_cart(store, {'COLA': 2, 'WATER': 2}, NOON)) == [
        ('4for2', (('COLA', 2), ('WATER', 2)), 198)]


def test_no_price_is_ever_raised_on_random_carts():
    store = store_with(multi_buy(['COLA', 'WATER', 'BAR']), fixed_price(['YOG-A', 'YOG-B', 'BAR'], 3, 250),
                       meal_deal([['SANDWICH', 'WRAP', 'YOG-B'], ['COLA', 'WATER', 'JUICE', 'BAR']], 420),
                       percent_off(['COLA', 'APPLES', 'NUTS', 'JUICE'], 15), tax_rate_bp=825)
    rng = random.Random(12)
    for _ in range(150):
        cart = {sku: rng.randint(0, 3) for sku in rng.sample(sorted(store.products), 6)}
        cart.update({sku: rng.randint(1, 2500) for sku in ('APPLES', 'NUTS') if sku in cart})
        priced = price_cart(store, cart, NOON)
        assert priced.best_proven
        assert 0 <= priced.subtotal_cents <= priced.gross_cents
        assert all(s.cents > 0 for s in priced.savings)
        used = {}
        for saving in priced.savings:
            assert saving.cents < sum(worth(store.products[u.sku], u.quantity) for u in saving.used)
            for item in saving.used:
                used[item.sku] = used.get(item.sku, 0) + item.quantity
        assert all(used[sku] <= cart[sku] for sku in used)     # no unit in two promotions


def test_tax_is_on_the_subtotal_after_savings():
    store = store_with(multi_buy(['COLA']), tax_rate_bp=825)
    priced = price_cart(store, {'COLA': 3, 'CHIPS': 1}, NOON)
    assert (priced.gross_cents, priced.savings_cents, priced.subtotal_cents) == (696, 149, 547)
    assert priced.tax_cents == 45                    # 547 x 8.25 % = 45.1275
    assert priced.total_cents == 547 + 45


def test_price_by_weight_rounds_half_up_per_line():
    store = store_with()
    assert money.weighed_price_cents(500, 299) == 150           # 149.5
    assert money.weighed_price_cents(1, 499) == 0               # 0.499
    assert money.weighed_price_cents(1, 500) == 1               # 0.5
    priced = price_cart(store, {'APPLES': 500, 'NUTS': 137}, NOON)
    assert [(l.sku, l.quantity, l.measure, l.unit_price_cents, l.line_total_cents) for l in priced.lines] == [
        ('APPLES', 500, Measure.GRAMS, 299, 150), ('NUTS', 137, Measure.GRAMS, 1999, 274)]  # 273.863


def test_weighed_product_has_the_price_of_a_typical_piece_for_unit_counting_code():
    apples = store_with().products['APPLES']
    assert apples.sold_by_weight and apples.price_cents == 30          # 100 g at 2.99/kg = 29.9
    assert not store_with().products['COLA'].sold_by_weight


@pytest.mark.parametrize('stamp, open_', [
    (local_ns(2026, 12, 2, 10, 59, 59), False),     # Wednesday, a second early
    (local_ns(2026, 12, 2, 11, 0), True),
    (local_ns(2026, 12, 2, 14, 29, 59), True),
    (local_ns(2026, 12, 2, 14, 30), False),         # until is exclusive
    (local_ns(2026, 12, 5, 12, 0), False),          # Saturday
    (local_ns(2026, 12, 2, 12, 0, zone=ZoneInfo('America/New_York')), False),   # 18:00 in Berlin
    (local_ns(2026, 7, 1, 11, 30), True),           # summer time: UTC+2
])
def test_time_window_in_the_store_time_zone(stamp, open_):
    store = store_with(multi_buy(['COLA'], window={'days': ['mon', 'tue', 'wed', 'thu', 'fri'],
                                                   'from': '11:00', 'until': '14:30'}))
    assert bool(price_cart(store, {'COLA': 3}, stamp).savings) is open_


def test_same_instant_is_open_in_one_time_zone_and_not_another():
    window = {'from': '08:00', 'until': '09:00'}
    instant = local_ns(2026, 12, 2, 8, 30)                              # 07:30 UTC
    assert price_cart(store_with(multi_buy(['COLA'], window=window)), {'COLA': 3}, instant).savings
    assert not price_cart(store_with(multi_buy(['COLA'], window=window), timezone='Europe/London'),
                          {'COLA': 3}, instant).savings


@pytest.mark.parametrize('stamp, open_', [
    (local_ns(2026, 12, 4, 21, 59), False),         # Friday before it starts
    (local_ns(2026, 12, 4, 22, 0), True),
    (local_ns(2026, 12, 5, 1, 59), True),           # Saturday early: Friday's window
    (local_ns(2026, 12, 5, 2, 0), False),
    (local_ns(2026, 12, 5, 22, 30), False),         # Saturday's own evening is not listed
    (local_ns(2026, 12, 4, 1, 0), False),           # Friday early belongs to Thursday
])
def test_window_past_midnight_belongs_to_the_day_it_starts(stamp, open_):
    store = store_with(percent_off(['BEER'], 20, window={'days': ['fri'], 'from': '22:00', 'until': '02:00'}))
    assert bool(price_cart(store, {'BEER': 1}, stamp).savings) is open_


def test_window_until_midnight():
    store = store_with(percent_off(['BEER'], 20, window={'from': '18:00', 'until': '00:00'}))
    assert price_cart(store, {'BEER': 1}, local_ns(2026, 12, 2, 23, 59, 59)).savings
    assert not price_cart(store, {'BEER': 1}, local_ns(2026, 12, 3, 0, 0)).savings


def test_bad_cart_is_refused():
    store = store_with()
    with pytest.raises(ValueError, match="unknown SKU 'NOPE'"):
        price_cart(store, {'NOPE': 1}, NOON)
    with pytest.raises(ValueError, match='whole number'):
        price_cart(store, {'COLA': -1}, NOON)
    with pytest.raises(ValueError, match='whole number'):
        price_cart(store, {'APPLES': 12.5}, NOON)


def test_used_items_name_units_and_grams():
    store = store_with(percent_off(['NUTS'], 10))
    assert price_cart(store, {'NUTS': 250}, NOON).savings[0].used == (UsedItem('NUTS', 250),)
