"""Scoring a run against the simulator's ground truth (what `jwo eval` reports).

Pure: takes plain receipts (dicts as written by the runner), the expected items per
party and the true and detected weight events. A line-item hit needs the right
product, the right quantity and the right visit, as in the 2020 AutoCheckout
competition's scoring. No rclpy.
"""
import statistics
from collections import Counter

LOW_CONFIDENCE = 'low_confidence'


def percentiles(values: list, points=(50, 95, 99)) -> dict:
    if not values:
        return {'count': 0}
    ordered = sorted(values)
    result = {'count': len(ordered), 'mean': statistics.fmean(ordered), 'max': ordered[-1]}
    for p in points:
        result[f'p{p}'] = ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
    return result


def flagged(receipt: dict, threshold: float = None) -> bool:
    """Sent to review: NEEDS_REVIEW as issued, or, when a threshold is given, for a
    hard reason (not just low confidence) or a confidence below the threshold."""
    if threshold is None:
        return receipt['status'] == 'NEEDS_REVIEW'
    hard = any(r['code'] != LOW_CONFIDENCE for r in receipt['reasons'])
    return hard or receipt['confidence'] < threshold


def items_of(receipt: dict) -> Counter:
    return Counter({line['sku']: line['quantity'] for line in receipt['lines'] if line['quantity'] > 0})


def score_visits(expected: dict, receipts: dict, prices: dict) -> dict:
    """expected: party -> Counter of SKUs taken; receipts: party -> receipt dict (missing
    parties have none); prices: sku -> cents. Returns per-visit rows and totals."""
    rows = {}
    hits = predicted = truth = 0
    wrong_items = wrong_cents = 0
    for party, want in expected.items():
        want = +want
        receipt = receipts.get(party)
        got = items_of(receipt) if receipt else Counter()
        exact = receipt is not None and got == want
        line_hits = sum(1 for sku, n in got.items() if want.get(sku) == n)
        hits += line_hits
        predicted += len(got)
        truth += len(want)
        is_flagged = receipt is None or flagged(receipt)
        over = {sku: n - want.get(sku, 0) for sku, n in got.items() if n > want.get(sku, 0)}
        if not is_flagged:
            wrong_items += sum(over.values())
            wrong_cents += sum(prices[sku] * n for sku, n in over.items())
        rows[party] = {'exact': exact, 'flagged': is_flagged, 'missing': receipt is None,
                       'line_hits': line_hits, 'lines_issued': len(got), 'lines_true': len(want),
                       'overcharged': over, 'confidence': receipt['confidence'] if receipt else None,
                       'reasons': sorted({r['code'] for r in receipt['reasons']}) if receipt else ['missing']}
    visits = len(expected)
    not_flagged = [r for r in rows.values() if not r['flagged']]
    precision = hits / predicted if predicted else 1.0
    recall = hits / truth if truth else 1.0
    return {
        'visits': visits,
        'exact_receipt_rate': sum(r['exact'] for r in rows.values()) / visits if visits else 1.0,
        'line_precision': precision, 'line_recall': recall,
        'line_f1': 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        'review_rate': sum(r['flagged'] for r in rows.values()) / visits if visits else 0.0,
        'not_flagged': len(not_flagged),
        'exact_among_not_flagged': (sum(r['exact'] for r in not_flagged) / len(not_flagged)
                                    if not_flagged else 1.0),
        'wrong_charge_items': wrong_items, 'wrong_charge_cents': wrong_cents,
        'missing_receipts': sum(r['missing'] for r in rows.values()),
        'per_visit': rows,
    }


def threshold_sweep(expected: dict, receipts: dict, thresholds=None) -> list:
    """Exact-receipt rate among visits not flagged against review rate, as the
    confidence threshold for review moves."""
    thresholds = thresholds or [round(i / 20, 2) for i in range(21)]
    points = []
    for threshold in thresholds:
        kept = exact = flagged_count = 0
        for party, want in expected.items():
            receipt = receipts.get(party)
            if receipt is None or flagged(receipt, threshold):
                flagged_count += 1
                continue
            kept += 1
            exact += items_of(receipt) == +want
        points.append({'threshold': threshold,
                       'review_rate': flagged_count / len(expected) if expected else 0.0,
                       'exact_among_not_flagged': exact / kept if kept else 1.0})
    return points


def score_weight_events(true_events: list, detected: list, time_tolerance_ns: int = 1_500_000_000) -> dict:
    """true_events: (bin_id, end_ns, delta_grams); detected: the same from the detector.
    A detection matches an unmatched true event on the same bin ending within the time
    tolerance with the same sign and a delta within 25 %."""
    unmatched = list(true_events)
    hits = 0
    for bin_id, end_ns, delta in sorted(detected, key=lambda e: e[1]):
        best = None
        for i, (true_bin, true_end, true_delta) in enumerate(unmatched):
            if (true_bin == bin_id and abs(true_end - end_ns) <= time_tolerance_ns
                    and true_delta * delta > 0 and abs(true_delta - delta) <= 0.25 * abs(true_delta)):
                if best is None or abs(true_end - end_ns) < abs(unmatched[best][1] - end_ns):
                    best = i
        if best is not None:
            hits += 1
            unmatched.pop(best)
    return {'true': len(true_events), 'detected': len(detected), 'matched': hits,
            'precision': hits / len(detected) if detected else 1.0,
            'recall': hits / len(true_events) if true_events else 1.0}
