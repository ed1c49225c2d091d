"""The eval's yardstick without a ROS graph: receipts to parties by entry gate and stamp,
line calibration and its ECE, the cost of a run, missing receipts (core.scoring)."""
from collections import Counter

import pytest

from jwo_nodes.core.config import ReviewCosts
from jwo_nodes.core.scoring import (Calibration, FinalReliability, GateEntry, PartyMatcher, RunCost,
                                    calibration, final_reliability, run_cost, score_visits)

S = 1_000_000_000
PRICES = {'COLA': 149, 'WATER': 99, 'CHIPS': 250}
COSTS = ReviewCosts(cost_cents=60, overcharge_weight=3.0, wrong_line_cents=150)


def receipt(receipt_id='r1', lines=(), status='FINAL', visit_code='V1', gate='', entry_ns=0,
            confidence=0.9):
    """A receipt dict as runner.receipt_to_dict writes it; lines: (sku, quantity, confidence)."""
    return {'receipt_id': receipt_id, 'store_id': 'demo', 'visit_code': visit_code,
            'entry_gate_id': gate, 'entry_stamp_ns': entry_ns, 'exit_stamp_ns': entry_ns + 60 * S,
            'status': status, 'confidence': confidence,
            'lines': [{'sku': sku, 'name': sku, 'quantity': n, 'unit_price_cents': PRICES[sku],
                       'line_total_cents': PRICES[sku] * n, 'confidence': c} for sku, n, c in lines],
            'reasons': [{'code': 'ambiguous_attribution', 'event_id': 'e1', 'detail': ''}]
            if status == 'NEEDS_REVIEW' else []}


# -- receipts to parties --------------------------------------------------------------------

ENTRIES = {('G1', 10 * S): 'ana', ('G2', 10 * S): 'ben', ('G1', 30 * S): 'cleo'}


def matcher(**kwargs) -> PartyMatcher:
    return PartyMatcher(lambda gate_id, stamp_ns: ENTRIES.get((gate_id, stamp_ns)), **kwargs)


def test_a_receipt_is_matched_by_its_entry_gate_and_stamp_without_any_entry_event_seen():
    m = matcher()
    assert m.match(receipt('r1', gate='G2', entry_ns=10 * S)) == 'ben'
    assert m.match(receipt('r2', gate='G1', entry_ns=10 * S)) == 'ana'   # same stamp, other gate
    assert m.match(receipt('r3', gate='G1', entry_ns=30 * S), entries=()) == 'cleo'
    assert m.unmatched == [] and m.receipt_of == {'ben': 'r1', 'ana': 'r2', 'cleo': 'r3'}


def test_scenario_runs_match_in_scenario_time():
    """run_scenario: scenario time = stamp - the run's clock start."""
    start = 1_700_000_000 * S
    m = PartyMatcher(lambda gate_id, stamp_ns: ENTRIES.get((gate_id, stamp_ns - start)))
    assert m.match(receipt(gate='G1', entry_ns=start + 30 * S)) == 'cleo'


def test_the_entry_gate_wins_over_the_visit_code():
    """A visit code the ground truth knows does not override what the receipt says."""
    m = matcher(party_of_visit=lambda code: 'ana')
    assert m.match(receipt(visit_code='V1', gate='G2', entry_ns=10 * S)) == 'ben'


def test_without_an_entry_gate_the_visit_code_is_the_fallback():
    m = matcher(party_of_visit={'V9': 'cleo'}.get)
    assert m.match(receipt('r1', visit_code='V9')) == 'cleo'
    seen = [GateEntry('G2', 10 * S, 'V2'), GateEntry('G1', 10 * S, 'V1')]
    assert m.match(receipt('r2', visit_code='V1'), entries=seen) == 'ana'
    assert m.unmatched == []


def test_an_unmatched_receipt_is_recorded_with_its_id_and_why():
    m = matcher()
    assert m.match(receipt('r-nobody', gate='G1', entry_ns=11 * S)) is None
    assert m.match(receipt('r-unseen', visit_code='V7')) is None     # old receipt, no ENTRY seen
    assert [u.receipt_id for u in m.unmatched] == ['r-nobody', 'r-unseen']
    assert 'gate G1' in m.unmatched[0].problem and str(11 * S) in m.unmatched[0].problem
    assert 'V7' in m.unmatched[1].problem
    assert m.receipt_of == {}


def test_a_second_receipt_for_a_party_is_not_silently_dropped():
    m = matcher()
    assert m.match(receipt('r1', gate='G1', entry_ns=10 * S)) == 'ana'
    assert m.match(receipt('r2', gate='G1', entry_ns=10 * S)) is None
    assert m.receipt_of == {'ana': 'r1'}
    (second,) = m.unmatched
    assert second.receipt_id == 'r2' and 'second receipt for party ana' in second.problem and 'r1' in second.problem


def test_bag_ground_truth_matches_by_gate_and_absolute_stamp():
    from jwo_nodes.simbag import GroundTruthRecord
    epoch = 1_704_067_200 * S
    truth = GroundTruthRecord(path='bag', scenario={'name': 't', 'epoch_ns': epoch, 'parties': ['ana', 'ben']},
                              entries=[{'party': 'ana', 'gate_id': 'G1', 'stamp_ns': epoch + S, 'visit_code': 'VA'},
                                       {'party': 'ben', 'gate_id': 'G1', 'stamp_ns': epoch + 5 * S, 'visit_code': 'VB'}])
    m = PartyMatcher(truth.party_at_entry, truth.party_of_visit)
    assert m.match(receipt('r1', visit_code='VA', gate='G1', entry_ns=epoch + 5 * S)) == 'ben'
    assert m.match(receipt('r2', visit_code='VA')) == 'ana'        # no gate: the code
    assert m.match(receipt('r3', visit_code='VB', gate='G1', entry_ns=epoch + 6 * S)) is None


# -- visits -----------------------------------------------------------------------------------

def test_a_missing_receipt_is_not_exact_and_is_counted_apart_from_reviews():
    expected = {'ana': Counter(COLA=1), 'ben': Counter(WATER=2), 'cleo': Counter()}
    receipts = {'ben': receipt('r2', [('WATER', 2, 0.9)], status='NEEDS_REVIEW'),
                'cleo': receipt('r3', [])}
    scores = score_visits(expected, receipts, PRICES)
    assert scores['per_visit']['ana']['exact'] is False and scores['per_visit']['ana']['missing']
    assert scores['exact_receipt_rate'] == pytest.approx(2 / 3)
    assert scores['missing_receipts'] == 1 and scores['reviews'] == 1
    assert scores['review_rate'] == pytest.approx(2 / 3)     # unchanged: missing counts as flagged
    assert scores['exact_among_not_flagged'] == 1.0


def test_an_empty_visit_without_a_receipt_is_not_exact_either():
    scores = score_visits({'ana': Counter()}, {}, PRICES)
    assert scores['exact_receipt_rate'] == 0.0 and scores['missing_receipts'] == 1


def test_final_receipts_missing_items():
    expected = {'short': Counter(COLA=2), 'absent': Counter(COLA=1, CHIPS=1), 'over': Counter(COLA=1),
                'review': Counter(COLA=3), 'none': Counter(WATER=1), 'ok': Counter(WATER=1)}
    receipts = {'short': receipt('r1', [('COLA', 1, 0.9)]),
                'absent': receipt('r2', [('COLA', 1, 0.9)]),
                'over': receipt('r3', [('COLA', 2, 0.9)]),                       # more, nothing missing
                'review': receipt('r4', [('COLA', 1, 0.5)], status='NEEDS_REVIEW'),  # a person settles it
                'ok': receipt('r6', [('WATER', 1, 0.9)])}
    scores = score_visits(expected, receipts, PRICES)
    assert scores['final_receipts_missing_items'] == 2
    assert scores['per_visit']['absent']['short'] == {'CHIPS': 1}


# -- calibration ------------------------------------------------------------------------------

def test_calibration_bins_and_ece_on_hand_made_receipts():
    expected = {'ana': Counter(COLA=1, WATER=2), 'ben': Counter(CHIPS=1)}
    receipts = {
        # right, right, a product not taken
        'ana': receipt('r1', [('COLA', 1, 0.95), ('WATER', 2, 0.9), ('CHIPS', 1, 0.35)]),
        # right product on the wrong quantity, in review: still a line with a confidence
        'ben': receipt('r2', [('CHIPS', 2, 0.3), ('COLA', 0, 0.99)], status='NEEDS_REVIEW'),
    }
    calib = calibration(expected, receipts)
    assert isinstance(calib, Calibration) and calib.lines == 4       # the zero-quantity line is no line
    assert len(calib.bins) == 10 and [b.low for b in calib.bins][:3] == [0.0, 0.1, 0.2]
    by_low = {b.low: b for b in calib.bins}
    assert by_low[0.9].lines == 2 and by_low[0.9].observed == 1.0
    assert by_low[0.9].mean_confidence == pytest.approx(0.925)
    assert by_low[0.3].lines == 2 and by_low[0.3].observed == 0.0
    assert by_low[0.3].mean_confidence == pytest.approx(0.325)
    assert by_low[0.5].lines == 0 and by_low[0.5].observed is None
    # ECE = 2/4 x |0.925 - 1| + 2/4 x |0.325 - 0|
    assert calib.ece == pytest.approx(0.5 * 0.075 + 0.5 * 0.325)


def test_calibration_edges_and_perfect_confidence():
    expected = {'ana': Counter(COLA=1, WATER=1), 'ben': Counter(CHIPS=1)}
    receipts = {'ana': receipt('r1', [('COLA', 1, 1.0), ('WATER', 1, 0.1)]),
                'ben': receipt('r2', [('CHIPS', 1, 0.0)])}
    calib = calibration(expected, receipts)
    by_low = {b.low: b for b in calib.bins}
    assert by_low[0.9].lines == 1          # 1.0 is in the last bin
    assert by_low[0.1].lines == 1          # 0.1 opens the second bin
    assert by_low[0.0].lines == 1
    assert calib.ece == pytest.approx((0 + 0.9 + 1.0) / 3)
    assert calibration({}, {}).ece == 0.0 and calibration({}, {}).lines == 0


def test_lines_on_the_wrong_visit_are_wrong():
    """A right product and quantity on another visit's receipt is not a hit."""
    expected = {'ana': Counter(COLA=1), 'ben': Counter()}
    calib = calibration(expected, {'ben': receipt('r1', [('COLA', 1, 0.8)])})
    assert calib.lines == 1 and {b.low: b for b in calib.bins}[0.8].observed == 0.0


def test_final_reliability_counts_final_receipts_wrong_against_their_confidence():
    """Only FINAL receipts count: one exact at 0.9, one missing an item at 0.8; the one
    in review and the visit without a receipt are a person's to settle or counted apart."""
    expected = {'ana': Counter(COLA=1), 'ben': Counter(CHIPS=1, WATER=1), 'cy': Counter(COLA=2),
                'dee': Counter(WATER=1)}
    receipts = {'ana': receipt('r1', [('COLA', 1, 0.9)], confidence=0.9),
                'ben': receipt('r2', [('CHIPS', 1, 0.9)], confidence=0.8),
                'cy': receipt('r3', [('COLA', 1, 0.5)], status='NEEDS_REVIEW', confidence=0.1)}
    final = final_reliability(expected, receipts)
    assert (final.receipts, final.wrong) == (2, 1)
    assert final.expected_wrong == pytest.approx(0.1 + 0.2)
    sure = {'ana': receipt('r4', [('COLA', 1, 1.0)], confidence=1.0)}
    both = final.plus(final_reliability({'ana': Counter(COLA=1)}, sure))
    assert (both.receipts, both.wrong) == (3, 1) and both.expected_wrong == pytest.approx(0.3)
    assert final_reliability({}, {}) == FinalReliability()


# -- cost ---------------------------------------------------------------------------------------

def test_cost_arithmetic():
    expected = {'ana': Counter(COLA=1, WATER=2),   # FINAL: one water short, chips not taken
                'ben': Counter(COLA=2),             # NEEDS_REVIEW: only a review
                'cleo': Counter(CHIPS=1),           # no receipt: all of it undercharged
                'dan': Counter(WATER=1)}            # exact FINAL: nothing
    receipts = {'ana': receipt('r1', [('COLA', 1, 0.9), ('WATER', 1, 0.9), ('CHIPS', 1, 0.9)]),
                'ben': receipt('r2', [('COLA', 5, 0.2)], status='NEEDS_REVIEW'),
                'dan': receipt('r4', [('WATER', 1, 0.9)])}
    cost = run_cost(expected, receipts, PRICES, COSTS)
    assert cost == RunCost(overcharged_cents=250, undercharged_cents=99 + 250, wrong_final_lines=2,
                           reviews=1, total_cents=250 * 3 + 349 + 2 * 150 + 60)


def test_cost_of_a_product_swap_and_rounding_of_the_weight():
    costs = ReviewCosts(cost_cents=0, overcharge_weight=1.5, wrong_line_cents=0)
    cost = run_cost({'ana': Counter(WATER=1)}, {'ana': receipt('r1', [('COLA', 1, 0.9)])}, PRICES, costs)
    assert (cost.overcharged_cents, cost.undercharged_cents, cost.wrong_final_lines) == (149, 99, 1)
    assert cost.total_cents == round(149 * 1.5) + 99 and isinstance(cost.total_cents, int)


def test_costs_of_runs_add_up():
    a = RunCost(overcharged_cents=1, undercharged_cents=2, wrong_final_lines=3, reviews=4, total_cents=5)
    assert a.plus(a) == RunCost(2, 4, 6, 8, 10) and RunCost().plus(a) == a


# -- the report -------------------------------------------------------------------------------

def test_report_totals_per_group_and_the_html_plots():
    """jwo eval's totals and report.html from hand-made runs (no nodes run)."""
    from dataclasses import asdict

    from jwo_nodes.core.scoring import score_weight_events
    from jwo_nodes.eval import _summary, build_report, render_html
    from jwo_nodes.core.config import load_store_config
    from jwo_nodes.eval import DEFAULT_STORE

    def entry(name, expected, receipts, unmatched=()):
        return {'scenario': f'{name}.yaml', 'name': name,
                'visits': score_visits(expected, receipts, PRICES),
                'weight_events': score_weight_events([], []),
                'cost': asdict(run_cost(expected, receipts, PRICES, COSTS)), 'receipts': receipts,
                'exit_to_receipt_s': {p: 1.0 for p in receipts},
                'expected': {p: dict(+c) for p, c in expected.items()},
                'failure': None, 'unmatched_receipts': list(unmatched)}
    results = [entry('easy-1', {'ana': Counter(COLA=1)}, {'ana': receipt('r1', [('COLA', 1, 0.95)])}),
               entry('hard-1', {'ben': Counter(WATER=1), 'cleo': Counter(CHIPS=1)},
                     {'ben': receipt('r2', [('WATER', 2, 0.6)])},
                     [{'receipt_id': 'r9', 'visit_code': 'V9', 'problem': 'no party entered at gate G1'}])]
    report = build_report(results, load_store_config(DEFAULT_STORE), PRICES)
    hard, overall = report['groups']['hard'], report['overall']
    assert hard['missing_receipts'] == 1 and hard['final_receipts_missing_items'] == 0
    assert hard['unmatched_receipts'] == 1 and overall['unmatched_receipts'] == 1
    assert hard['calibration']['lines'] == 1 and hard['calibration']['ece'] == pytest.approx(0.6)
    assert overall['calibration']['lines'] == 2
    assert overall['cost']['total_cents'] == results[0]['cost']['total_cents'] + results[1]['cost']['total_cents']
    assert hard['cost'] == asdict(RunCost(overcharged_cents=99, undercharged_cents=250, wrong_final_lines=1,
                                          reviews=0, total_cents=99 * 3 + 250 + 150))
    line = _summary(hard)
    assert 'ECE 0.600' in line and f'cost {hard["cost"]["total_cents"]} cents' in line
    assert '1 missing receipts' in line and 'FINAL missing items 0' in line
    page = render_html(report)
    assert 'line calibration' in page and 'stroke-dasharray' in page      # the plot and its diagonal
    assert 'receipt r9: no party entered at gate G1' in page
