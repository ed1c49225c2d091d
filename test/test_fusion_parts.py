"""The parts of the fusion hypothesis engine on their own: ledger, evidence, solver,
cost. Plain values, no ROS graph."""
import math
from dataclasses import replace
from pathlib import Path

import pytest

from jwo_nodes.core.config import ReviewCosts, load_store_config
from jwo_nodes.core.fusion import FusionSettings
from jwo_nodes.core.fusion.cost import expected_cost, wrong_cost
from jwo_nodes.core.fusion.evidence import (NOBODY, LaterIdentity, Reach, ReachBasis, TrackCandidate, product_fits,
                                            reach_evidence)
from jwo_nodes.core.fusion.ledger import Counts, Ledger
from jwo_nodes.core.fusion.looks import FLOOR, ProductLooks, Sighting, held_span, sightings_at
from jwo_nodes.core.fusion.solver import ChangeEvidence, solve
from jwo_nodes.core.fusion.tracks import Sample, TrackBook, TrackWindow
from jwo_nodes.core.held_item import HeldItem, chromaticity
from jwo_nodes.core.render import product_colour

NS = 1_000_000_000
SETTINGS = FusionSettings()


@pytest.fixture(scope='module')
def store():
    return load_store_config(Path(__file__).resolve().parent.parent / 'config/stores/demo.yaml')


def test_counts_are_copied_on_write_and_never_negative():
    empty = Counts()
    one = empty.added('v1', 'COLA-330', 1)
    assert empty.count('v1', 'COLA-330') == 0 and one.count('v1', 'COLA-330') == 1
    assert one.added('v1', 'COLA-330', -3).count('v1', 'COLA-330') == 0
    assert one.added('v1', 'COLA-330', -1) == empty
    ledger = Ledger().with_cart('v1', 'GUM-10', 2).with_stray('S1-B1', 'GUM-10', 1)
    assert dict(ledger.carts.of('v1')) == {'GUM-10': 2} and dict(ledger.strays.of('S1-B1')) == {'GUM-10': 1}


def test_product_fits_rank_counts_and_keep_same_weight_products(store):
    fits = product_fits(store, 700.0, 1.5)
    assert (fits[0].sku, fits[0].quantity) == ('COLA-330', 2)
    yogurts = {f.sku for f in product_fits(store, 135.0, 1.5) if f.quantity == 1}
    assert {'YOG-STRAW', 'YOG-PLAIN'} <= yogurts
    straw, plain = (next(f for f in product_fits(store, 135.0, 1.5) if f.sku == s) for s in ('YOG-STRAW', 'YOG-PLAIN'))
    assert straw.likelihood == pytest.approx(plain.likelihood)
    assert product_fits(store, 40000.0, 1.5) == ()          # nothing that heavy


def window(track, code, x, y, confidence=1.0, hand=None, n=10):
    return TrackWindow(track, tuple(Sample(i * NS // 10, x, y, hand, code, confidence) for i in range(n)))


def candidates(*args) -> tuple:
    return reach_evidence(*args).visits


def test_the_shopper_at_the_bin_is_the_likely_one_and_a_hand_beats_standing(store):
    bin_ = store.bin('S2-B1')
    point, shelf = (bin_.x, bin_.y), store.shelf_point('S2-B1')
    span = (0, NS)
    near, far = window('t1', 'v1', bin_.x, bin_.y), window('t2', 'v2', bin_.x + 1.0, bin_.y)
    ranked = candidates([near, far], point, shelf, span, {'v1': 1, 'v2': 1}, SETTINGS)
    assert ranked[0].visit_code == 'v1' and ranked[0].probability > 0.99
    # Both half-way: even; the one whose hand is in the bin wins.
    left, right = window('t1', 'v1', bin_.x + 0.5, bin_.y), window('t2', 'v2', bin_.x - 0.5, bin_.y)
    even = {c.visit_code: c.probability for c in candidates([left, right], point, shelf, span, {'v1': 1, 'v2': 1}, SETTINGS)}
    assert even['v1'] == pytest.approx(even['v2'])
    left = window('t1', 'v1', bin_.x + 0.5, bin_.y, hand=shelf)
    handed = {c.visit_code: c.probability for c in candidates([left, right], point, shelf, span, {'v1': 1, 'v2': 1}, SETTINGS)}
    assert handed['v1'] > 0.9


def test_a_doubted_identity_goes_to_the_visits_nobody_carries(store):
    bin_ = store.bin('S1-B1')
    doubted = window('t1', 'v1', bin_.x, bin_.y, confidence=0.4)
    ranked = {c.visit_code: c.probability
              for c in candidates([doubted], (bin_.x, bin_.y), store.shelf_point('S1-B1'), (0, NS),
                                        {'v1': 1, 'v2': 1, 'v3': 1}, SETTINGS)}
    belief = SETTINGS.identity_floor + (1 - SETTINGS.identity_floor) * 0.4
    assert ranked['v1'] == pytest.approx(belief, abs=0.01)
    assert ranked['v2'] == pytest.approx(ranked['v3']) == pytest.approx((1 - belief) / 2, abs=0.01)
    assert ranked.get(NOBODY, 0.0) < 0.01


def test_a_doubted_identity_is_somebody_else_only_as_far_as_somebody_is_missing(store):
    """The tracker doubts t1 is v1 (a close pass); the only other shopper inside, v2, is
    followed by a track nearly sure to be theirs. For t1 to be v2, v2 must be missing
    from their own track: the doubt shrinks with how unaccounted-for v2 is."""
    bin_ = store.bin('S1-B1')
    doubted = window('t1', 'v1', bin_.x, bin_.y, confidence=0.4)
    args = ((bin_.x, bin_.y), store.shelf_point('S1-B1'), (0, NS), {'v1': 1, 'v2': 1}, SETTINGS)
    belief = SETTINGS.identity_floor + (1 - SETTINGS.identity_floor) * 0.4
    unseen = {c.visit_code: c.probability for c in candidates([doubted], *args)}
    assert unseen['v2'] == pytest.approx(1 - belief, abs=0.01)
    followed = window('t2', 'v2', 8.0, 5.0, confidence=0.4)
    seen = {c.visit_code: c.probability for c in candidates([doubted, followed], *args)}
    assert seen['v2'] == pytest.approx((1 - belief) ** 2, rel=0.1)      # v2 as unaccounted as v1 is doubted
    assert seen['v1'] > 0.98


def test_an_anonymous_shopper_is_more_likely_one_of_a_group_nobody_follows(store):
    """A group of three came in; one of them is followed. An anonymous track's change is
    then most likely one of the other two's, not the solo shopper's whose track is a
    little in doubt."""
    bin_ = store.bin('S1-B1')
    anonymous = window('t1', '', bin_.x, bin_.y)
    followed, solo = window('t2', 'group', 5.0, 5.0), window('t3', 'solo', 8.0, 5.0, confidence=0.9)
    ranked = {c.visit_code: c.probability
              for c in candidates([anonymous, followed, solo], (bin_.x, bin_.y), store.shelf_point('S1-B1'),
                                  (0, NS), {'group': 3, 'solo': 1}, SETTINGS)}
    assert ranked['group'] > 0.95 and ranked['solo'] < 0.05


def change(store, event_id, bin_id, delta, visits, t):
    """A change by one of the visits (code, probability), each on a track of its own
    that surely is who it says."""
    tracks = tuple(TrackCandidate((f't-{code}', code), code, p, 1.0, ()) for code, p in visits)
    return ChangeEvidence(event_id, store.bin(bin_id).shelf_id, bin_id, delta, t * NS, t * NS + NS,
                          Reach(tracks, (), ()), product_fits(store, abs(delta), 1.5), True)


def test_a_put_back_comes_from_the_cart_that_holds_the_item_and_re_weighs_the_take(store):
    """Who took the chips was a toss-up; v2 then puts chips back: v2 had taken them."""
    changes = [change(store, 'S2/1', 'S2-B1', -165.0, [('v1', 0.5), ('v2', 0.5)], 1),
               change(store, 'S2/2', 'S2-B1', +165.0, [('v2', 0.9), ('v1', 0.1)], 20)]
    before = solve(changes[:1], Ledger(), store, SETTINGS)
    assert before.line_probability('v1', 'CHIPS-150', 1) == pytest.approx(0.5, abs=0.01)
    after = solve(changes, Ledger(), store, SETTINGS)
    assert after.cart('v1') == {} and after.cart('v2') == {}
    assert after.exact_probability('v2') > 0.85
    # Extending a solution gives what solving from scratch gives.
    assert solve(changes, Ledger(), store, SETTINGS, before).cart_probabilities('v2') == after.cart_probabilities('v2')


def test_a_stray_can_be_taken_only_from_the_bin_it_was_left_on(store):
    """v1 leaves chips on the water bin; v2 takes 165 g from there: chips, not water."""
    changes = [change(store, 'S2/1', 'S2-B1', -165.0, [('v1', 1.0)], 1),
               change(store, 'S1/1', 'S1-B2', +165.0, [('v1', 1.0)], 5),
               change(store, 'S1/2', 'S1-B2', -165.0, [('v2', 1.0)], 30)]
    solution = solve(changes, Ledger(), store, SETTINGS)
    assert solution.cart('v1') == {} and solution.cart('v2') == {'CHIPS-150': 1}
    assert solution.strays('S1-B2') == {}
    # Without the stray, 165 g off the water bin is nothing the bin holds.
    alone = solve(changes[2:], Ledger(), store, SETTINGS)
    assert not alone.best_choice(0).explained


def test_a_put_back_elsewhere_is_likelier_beside_the_products_own_facing(store):
    """v1 holds a yogurt of each flavour (135 g both) and leaves one on the milk's bin,
    beside the plain yogurt's facing: more likely the plain one, as beside_prior is
    more than elsewhere_prior."""
    changes = [change(store, 'S3/1', 'S3-B1', -135.0, [('v1', 1.0)], 1),
               change(store, 'S3/2', 'S3-B2', -135.0, [('v1', 1.0)], 5),
               change(store, 'S3/3', 'S3-B3', +135.0, [('v1', 1.0)], 20)]
    solution = solve(changes, Ledger(), store, SETTINGS)
    assert solution.cart('v1') == {'YOG-STRAW': 1}
    beside = SETTINGS.beside_prior / (SETTINGS.beside_prior + SETTINGS.elsewhere_prior)
    assert solution.line_probability('v1', 'YOG-STRAW', 1) == pytest.approx(beside, abs=0.01)
    assert solution.strays('S3-B3') == {'YOG-PLAIN': 1}


def test_wrong_cost_weighs_overcharge_above_undercharge():
    costs = ReviewCosts(cost_cents=60, overcharge_weight=3.0, wrong_line_cents=100)
    prices = {'A': 200, 'B': 50}
    assert wrong_cost({'A': 1}, {'A': 1}, prices, costs) == 0
    assert wrong_cost({'A': 2}, {'A': 1}, prices, costs) == 3 * 200 + 100
    assert wrong_cost({}, {'A': 1}, prices, costs) == 200 + 100
    assert wrong_cost({'B': 1}, {'A': 1}, prices, costs) == 3 * 50 + 200 + 2 * 100
    assert expected_cost({'A': 1}, [(0.9, {'A': 1}), (0.1, {})], prices, costs) == pytest.approx(0.1 * (600 + 100))
    assert math.isclose(expected_cost({}, [(1.0, {})], prices, costs), 0.0)


def test_who_a_track_is_is_decided_once_for_all_its_changes(store):
    """A track the tracker is 80 % sure is v1 takes twice: both takes are v1's with 80 %
    (not 64 %), both v2's otherwise -- never one each."""
    track = TrackCandidate(('t1', 'v1'), 'v1', 1.0, 0.8, (('v2', 1.0),))
    changes = [ChangeEvidence(f'S1/{i}', 'S1', 'S1-B1', -350.0, i * 10 * NS, i * 10 * NS + NS,
                              Reach((track,), (), ()), product_fits(store, 350.0, 1.5), True) for i in (1, 2)]
    solution = solve(changes, Ledger(), store, SETTINGS)
    assert solution.cart('v1') == {'COLA-330': 2}
    assert solution.exact_probability('v1') == pytest.approx(0.8, abs=0.01)
    assert solution.line_probability('v2', 'COLA-330', 1) < 0.01


def test_one_hand_makes_one_change_at_a_time(store):
    """v1's hand is in two neighbouring bins while both change at once; v2's shopper,
    whose hand nobody saw, stood there too. v1 made one of them, not both: neither
    receipt is sure. A second later, one after the other, both are v1's."""
    track = TrackCandidate(('t1', 0, 'v1'), 'v1', 0.9, 1.0, ())

    def take(event_id, bin_id, grams, start_s):
        return ChangeEvidence(event_id, bin_id[:2], bin_id, -grams, start_s * NS, start_s * NS + NS,
                              Reach((track,), (('v2', 0.1),), ()), product_fits(store, grams, 1.5), True)

    at_once = [take('S1/1', 'S1-B1', 350.0, 10.0), take('S2/1', 'S2-B1', 165.0, 10.5)]
    solution = solve(at_once, Ledger(), store, SETTINGS)
    assert solution.exact_probability('v1') < 0.6 and solution.exact_probability('v2') < 0.6
    assert solution.line_probability('v2', 'COLA-330', 1) + solution.line_probability('v2', 'CHIPS-150', 1) > 0.7
    two_hands = solve(at_once, Ledger(), store, FusionSettings(one_hand_share=1.0))
    assert two_hands.cart('v1') == {'COLA-330': 1, 'CHIPS-150': 1}
    in_turn = solve([take('S1/1', 'S1-B1', 350.0, 10.0), take('S2/1', 'S2-B1', 165.0, 11.5)], Ledger(), store,
                    SETTINGS)
    assert in_turn.cart('v1') == {'COLA-330': 1, 'CHIPS-150': 1}
    assert in_turn.exact_probability('v1') == pytest.approx(0.81, abs=0.01)


def test_two_shoppers_hands_in_one_bin_may_have_made_its_change_together(store):
    """v2 took two colas; later v1's and v2's hands are both in the cola bin while it
    loses one can. v1 took it, or v1 took two while v2 put one back: the load cell sees
    only the sum, so the second stays in the hypotheses with two_hands_prior's weight.
    Without v2's hand in the bin, or without a cola in v2's cart, only v1 took it."""
    c = SETTINGS.two_hands_prior

    def net_take(grams, hand_v2, held):
        tracks = (TrackCandidate(('t1', 0, 'v1'), 'v1', 0.95, 1.0, (), 1.0),
                  TrackCandidate(('t2', 0, 'v2'), 'v2', 0.05, 1.0, (), hand_v2))
        changes = [change(store, 'S1/1', 'S1-B1', -700.0, [('v2', 1.0)], 1)] if held else []
        changes.append(ChangeEvidence('S1/2', 'S1', 'S1-B1', -grams, 30 * NS, 31 * NS, Reach(tracks, (), ()),
                                      product_fits(store, grams, 1.5), True))
        return solve(changes, Ledger(), store, SETTINGS)

    together = net_take(350.0, 1.0, held=True)
    # One can, against two taken and one put back, or three taken and two: counts halve.
    one, two_back_one, three_back_two = 1.0, c * 0.95 * 0.5, c * 0.95 * 0.25 * 0.5
    total = one + two_back_one + three_back_two
    assert together.cart('v1') == {'COLA-330': 1}
    assert together.line_probability('v1', 'COLA-330', 2) == pytest.approx(two_back_one / total, rel=0.02)
    assert together.line_probability('v2', 'COLA-330', 1) == pytest.approx(two_back_one / total, rel=0.02)
    marginals = together.marginals(1)
    partnered = [choice for choice in marginals if choice.partner is not None]
    assert {(ch.quantity, ch.partner.visit_code, ch.partner.quantity) for ch in partnered} == {(2, 'v2', -1),
                                                                                              (3, 'v2', -2)}
    assert net_take(350.0, 0.0, held=True).line_probability('v1', 'COLA-330', 2) == 0.0
    assert net_take(350.0, 1.0, held=False).line_probability('v1', 'COLA-330', 2) == 0.0
    # Two cans off with both hands in: one each, or (far likelier) v1 took both.
    both = net_take(700.0, 1.0, held=False)
    assert both.cart('v1') == {'COLA-330': 2}
    assert both.line_probability('v2', 'COLA-330', 1) == pytest.approx(c * 0.95 / (0.95 * 0.5 + 0.05 * 0.5 + c * 0.95),
                                                                       rel=0.05)


def test_what_the_beam_drops_stays_doubt(store):
    """Four takes, each any of three visits': 15 ways to fill the carts. A beam of one
    (and the few other carts kept per visit) drops some, and the receipts must not look
    surer for it: what it dropped stays as the probability that the visit's cart is none
    it kept, in the receipt's confidence and its expected cost."""
    changes = [change(store, f'S2/{i}', 'S2-B1', -165.0, [('v1', 0.4), ('v2', 0.3), ('v3', 0.3)], 10 * i)
               for i in (1, 2, 3, 4)]
    wide = solve(changes, Ledger(), store, SETTINGS)
    narrow = solve(changes, Ledger(), store, FusionSettings(beam_width=1))
    assert wide.dropped('v1') == 0.0 and wide.exact_probability('v1') == pytest.approx(0.346, abs=0.01)
    assert narrow.cart('v1') == wide.cart('v1') == {'CHIPS-150': 2}
    kept_only = sum(p for p, cart in narrow.cart_probabilities('v1') if cart == narrow.cart('v1'))
    assert narrow.dropped('v1') > 0.05
    assert narrow.exact_probability('v1') == pytest.approx(kept_only * (1 - narrow.dropped('v1')))
    costs = ReviewCosts(cost_cents=60, overcharge_weight=3.0, wrong_line_cents=100)
    prices = {'CHIPS-150': 199}
    carts = narrow.cart_probabilities('v1')
    assert expected_cost({'CHIPS-150': 2}, carts, prices, costs, narrow.dropped('v1')) > \
        expected_cost({'CHIPS-150': 2}, carts, prices, costs)


def test_a_track_that_walked_past_counts_a_metre_farther_by_pairs_as_by_the_bounding_box():
    """reach_distance's test whether a track moved more than half a metre during a
    change (on its bounding box, pairs only where the box cannot tell) agrees with
    comparing every pair of samples."""
    import random
    rng = random.Random(5)
    for _ in range(500):
        spread = rng.choice((0.2, 0.4, 0.6))
        samples = tuple(Sample(k, 1.0 + rng.uniform(0, spread), 2.0 + rng.uniform(0, spread), None, 'V', 1.0)
                        for k in range(rng.randint(1, 12)))
        window = TrackWindow('t', samples)
        moved = max(math.hypot(a.x - b.x, a.y - b.y) for a in samples for b in samples)
        distance = sorted(math.hypot(s.x - 1.0, s.y - 2.0) for s in samples)[(len(samples) - 1) // 3]
        assert window.reach_distance(1.0, 2.0, 0, len(samples)) == pytest.approx(
            distance if moved <= 0.5 else distance + 1.0)
        assert window.reach_distance(1.0, 2.0, 0, len(samples), reached=True) == pytest.approx(distance)


def test_a_hand_counts_less_the_farther_from_the_facing_it_is():
    """hand_share with hand_sigma_m: in the real-store layout the next facing is 0.1-0.3 m
    along the shelf, inside hand_zone_m."""
    hands = ((1.0, 2.0), (1.12, 2.0), (1.35, 2.0), None)
    window = TrackWindow('t', tuple(Sample(k, 1.0, 1.4, hand, 'V', 1.0) for k, hand in enumerate(hands)))
    assert window.hand_share(1.0, 2.0, 0.3) == 0.5
    assert window.hand_share(1.0, 2.0, 0.3, 0.12) == pytest.approx((1 + math.exp(-0.5)) / 4)


def test_a_shopper_whose_hand_reached_in_was_not_walking_past_however_their_track_wandered(store):
    """In a crowd a track jumps between neighbours' detections while its shopper stands
    and reaches: its positions spread over more than half a metre, but its hand was in
    the bin more than anybody's (hand_reached), so it stays the likely maker. Without
    the hand it counts a metre farther, as somebody walking past."""
    bin_ = store.bin('S2-B1')
    point, shelf = (bin_.x, bin_.y), store.shelf_point('S2-B1')
    people = {'v1': 1, 'v2': 1}

    def wandering(hand):
        return TrackWindow('t1', tuple(Sample(k * NS // 10, bin_.x + (0.3 if k % 2 else -0.3), bin_.y, hand, 'v1', 1.0)
                                       for k in range(10)))
    standing = window('t2', 'v2', bin_.x + 0.4, bin_.y)
    reached = candidates([wandering(shelf), standing], point, shelf, (0, NS), people, SETTINGS)
    assert reached[0].visit_code == 'v1' and reached[0].probability > 0.95
    passed = candidates([wandering(None), standing], point, shelf, (0, NS), people, SETTINGS)
    assert passed[0].visit_code == 'v2' and passed[0].probability > 0.95


def test_how_sure_the_tracker_became_is_kept_per_identity_epoch_and_code_up_to_a_stamp():
    """TrackBook.surest: the highest confidence of a track in one identity epoch while
    it carried one code, by the stamp asked for; a fall that starts a new epoch, or
    another code, is another identity."""
    book = TrackBook(history_s=60.0, just_entered_s=3.0)
    for k, (code, confidence) in enumerate([('V', 0.6), ('V', 0.55), ('V', 0.9), ('V', 0.8),   # coasting dip
                                            ('V', 0.5),                                      # a fall: epoch 1
                                            ('W', 0.45), ('W', 0.95)]):
        book.add('t', k * NS // 10, 1.0, 1.0, None, code, confidence)
    assert book.surest('t', 0, 'V', NS // 10) == 0.6
    assert book.surest('t', 0, 'V', 2 * NS // 10) == 0.9
    assert book.surest('t', 0, 'V', NS) == 0.9
    assert book.surest('t', 1, 'V', NS) == 0.5
    assert book.surest('t', 1, 'W', 4 * NS // 10) is None        # not carried yet by then
    assert book.surest('t', 1, 'W', NS) == 0.95
    assert book.surest('u', 0, 'V', NS) is None
    # TrackBook.sureness: that of the epoch of the position nearest a stamp (an exit), by it.
    assert book.sureness('t', 3 * NS // 10, NS // 20) == 0.9
    assert book.sureness('t', 4 * NS // 10, NS // 20) == 0.5
    assert book.sureness('t', 6 * NS // 10, NS // 20) == 0.95
    assert book.sureness('t', 5 * NS, NS // 20) == 0.0 and book.sureness('u', 0, NS) == 0.0
    # TrackBook.code_after: epoch 1 went on with W after V, from the sixth frame.
    assert book.code_after('t', 1, 'V', NS) == 'W'
    assert book.code_after('t', 1, 'V', 4 * NS // 10) is None       # not by then
    assert book.code_after('t', 0, 'V', NS) is None and book.code_after('t', 1, 'W', NS) is None


def test_the_code_a_track_carried_last_in_an_epoch_follows_every_move_within_it():
    """An anonymous track given a code, then the code taken off it again within one
    identity epoch: the track followed nobody with a visit all along. A code taken off
    at a fall of confidence (a new epoch) says nothing of the epoch before."""
    book = TrackBook(history_s=60.0, just_entered_s=3.0)
    for k, (code, confidence) in enumerate([('', 0.3), ('V', 0.3), ('', 0.3), ('W', 0.3), ('W', 0.1), ('', 0.1)]):
        book.add('t', k * NS // 10, 1.0, 1.0, None, code, confidence)
    assert book.code_after('t', 0, '', 1 * NS // 10) == 'V'
    assert book.code_after('t', 0, '', 2 * NS // 10) == ''         # V was somebody else's
    assert book.code_after('t', 0, 'V', NS) == 'W'
    assert book.code_after('t', 0, 'W', NS) is None                # then in doubt: epoch 1
    assert book.code_after('t', 1, 'W', NS) == ''


def test_a_confirmed_identity_takes_the_doubt_off_its_changes_and_where_else_it_went(store):
    """A track at confidence 0.6 may be v2, whom nobody follows; weighed again with the
    confidence its epoch later reached (a re-identification), it is v1 nearly surely;
    had the tracker moved v2's code onto it later in the epoch, v2."""
    bin_ = store.bin('S1-B1')
    window = TrackWindow('t1', tuple(Sample(k * NS // 10, bin_.x, bin_.y, None, 'v1', 0.6) for k in range(10)))
    basis = ReachBasis((window,), (bin_.x, bin_.y), store.shelf_point('S1-B1'), (0, NS), {'v1': 1, 'v2': 1})

    def visits(later=None):
        return {v.visit_code: v.probability for v in replace(basis, later=tuple((later or {}).items()))
                .reach(SETTINGS).visits}

    def belief(confidence):
        return SETTINGS.identity_floor + (1 - SETTINGS.identity_floor) * confidence

    doubted, confirmed = visits(), visits({('t1', 0, 'v1'): LaterIdentity('v1', 0.95)})
    assert doubted['v1'] == pytest.approx(belief(0.6), abs=0.01)
    assert doubted['v2'] == pytest.approx(1 - belief(0.6), abs=0.01)
    assert confirmed['v1'] == pytest.approx(belief(0.95), abs=0.01) and confirmed['v1'] > doubted['v1']
    assert visits({('t1', 0, 'v1'): LaterIdentity('v2', 0.95)})['v2'] == pytest.approx(belief(0.95), abs=0.01)
    # Another epoch's or code's: not this window's.
    elsewhere = replace(basis, later=((('t1', 0, 'v2'), LaterIdentity('v2', 0.95)),))
    assert elsewhere.reach(SETTINGS) == basis.reach(SETTINGS)


def test_a_product_looks_like_the_median_of_its_takes_and_only_earlier_ones_count():
    looks = ProductLooks()
    plain, straw = chromaticity(product_colour('YOG-PLAIN')), chromaticity(product_colour('YOG-STRAW'))
    looks.learn('YOG-PLAIN', 5 * NS, [Sighting(0, 0.9, *plain), Sighting(0, 0.9, *plain)])
    # A stray strawberry yogurt taken from the plain bin is outvoted; an empty hand teaches nothing.
    looks.learn('YOG-PLAIN', 9 * NS, [Sighting(0, 0.9, *plain), Sighting(0, 0.9, *straw), Sighting(0, 0.1, 0.5, 0.5)])
    assert looks.colour('YOG-PLAIN', 10 * NS) == pytest.approx(plain)
    assert looks.colour('YOG-PLAIN', 5 * NS) is None       # none stamped before
    assert looks.colour('YOG-STRAW', 10 * NS) is None


def test_the_catalogue_colour_stands_in_until_the_product_is_seen_in_hands():
    plain, straw = chromaticity(product_colour('YOG-PLAIN')), chromaticity(product_colour('YOG-STRAW'))
    photographed = (plain[0] + 0.01, plain[1])
    looks = ProductLooks({'YOG-PLAIN': photographed})
    assert looks.colour('YOG-PLAIN', NS) == photographed and looks.colour('YOG-STRAW', NS) is None
    # From its first sale on, strawberry in a hand rules plain out where neither was
    # taken before; without the catalogue nothing tells them apart yet.
    held_straw = [Sighting(NS + i, 0.95, *straw) for i in range(6)]
    assert looks.factors(['YOG-PLAIN', 'YOG-STRAW'], held_straw, 2 * NS)['YOG-PLAIN'] < 0.05
    assert min(ProductLooks().factors(['YOG-PLAIN', 'YOG-STRAW'], held_straw, 2 * NS).values()) == 1.0
    # Once seen in hands, what the store's own cameras see wins.
    looks.learn('YOG-PLAIN', 3 * NS, [Sighting(0, 0.9, *plain)] * 2)
    assert looks.colour('YOG-PLAIN', 4 * NS) == pytest.approx(plain)
    assert looks.colour('YOG-PLAIN', 3 * NS) == photographed


def test_hands_holding_a_learned_colour_tell_products_of_one_weight_apart(store):
    looks = ProductLooks()
    plain, straw = chromaticity(product_colour('YOG-PLAIN')), chromaticity(product_colour('YOG-STRAW'))
    looks.learn('YOG-PLAIN', NS, [Sighting(0, 0.9, *plain)] * 3)
    fits = tuple(f for f in product_fits(store, 135.0, 1.5) if f.quantity == 1)
    assert {f.sku for f in fits} >= {'YOG-PLAIN', 'YOG-STRAW'}
    # Not plain's colour: strawberry (never seen yet) explains it better; plain's: plain.
    held_straw = [Sighting(2 * NS + i, 0.95, *straw) for i in range(6)]
    factor = looks.factors(['YOG-PLAIN', 'YOG-STRAW'], held_straw, 3 * NS)
    assert factor['YOG-STRAW'] == 1.0 and factor['YOG-PLAIN'] < 0.05
    # A colour near a learned one (cola, 0.05 from apples) does not rule out one never seen.
    looks.learn('COLA-330', NS, [Sighting(0, 0.9, *chromaticity(product_colour('COLA-330')))] * 3)
    apples = [Sighting(2 * NS, 0.95, *chromaticity(product_colour('APPLE-1')))] * 6
    assert looks.factors(['COLA-330', 'APPLE-1'], apples, 3 * NS)['APPLE-1'] > 0.1
    weighed = looks.weigh(fits, [Sighting(2 * NS, 0.95, *plain)] * 6, 3 * NS)
    assert weighed[0].sku == 'YOG-PLAIN'
    assert next(f for f in weighed if f.sku == 'YOG-STRAW').likelihood < 0.05 * weighed[0].likelihood
    # An empty hand, no reading or a colour learned only later say nothing.
    empty = looks.factors(['YOG-PLAIN', 'YOG-STRAW'], [Sighting(2 * NS, 0.02, *straw)] * 6, 3 * NS)
    assert min(empty.values()) > 0.9
    assert looks.weigh(fits, [], 3 * NS) == fits
    assert looks.weigh(fits, held_straw, NS) == fits


def test_a_hand_is_read_at_the_bin_while_it_holds_the_product():
    item = HeldItem(0.9, 0.3, 0.4)
    samples = tuple(Sample(i * NS // 10, 2.0, 6.0, (2.0, 6.6) if i else (5.0, 6.6), 'v1', 1.0, 0, item)
                    for i in range(20))
    take, put_back = held_span(-135.0, 0, NS), held_span(135.0, 0, NS)
    assert take == (NS // 2, NS + NS * 3 // 10) and put_back == (-NS * 4 // 10, NS // 2)
    # The first sample's hand is 3 m away; from the middle of a take to the arm back.
    seen = sightings_at([TrackWindow('t1', samples)], (2.0, 6.8), 0.5, take)
    assert [s.stamp_ns for s in seen] == [i * NS // 10 for i in range(5, 14)]
    assert sightings_at([TrackWindow('t1', samples)], (2.0, 6.8), 0.5, (0, 0)) == ()


def test_of_two_hands_at_a_bin_the_nearer_one_is_read():
    near, far = HeldItem(0.9, 0.3, 0.4), HeldItem(0.9, 0.2, 0.2)
    windows = [TrackWindow(track, (Sample(NS, x, 6.0, (x, 6.6), code, 1.0, 0, item),))
               for track, code, x, item in (('t1', 'v1', 2.1, near), ('t2', 'v2', 2.4, far))]
    assert sightings_at(windows, (2.0, 6.8), 0.5, (0, 2 * NS)) == (Sighting(NS, 0.9, 0.3, 0.4),)
