"""Scoring a run against the simulator's ground truth (what `jwo eval` reports).

Pure: takes plain receipts (dicts as written by the runner), the expected items per
party and the true and detected weight events. A line-item hit needs the right
product, the right quantity and the right visit, as in the 2020 AutoCheckout
competition's scoring. Also: which party a receipt belongs to (PartyMatcher), how well
the lines' confidences are calibrated, and what a run costs the store. No rclpy.
"""
import statistics
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable, Optional

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


def is_final(receipt: Optional[dict]) -> bool:
    return receipt is not None and receipt['status'] == 'FINAL'


def short_items(want: Counter, got: Counter) -> Counter:
    """What the visit took beyond what its receipt charges, per SKU."""
    return Counter({sku: n - got.get(sku, 0) for sku, n in want.items() if n > got.get(sku, 0)})


# -- receipts to parties ------------------------------------------------------------------

@dataclass(frozen=True)
class GateEntry:
    """An ENTRY gate event as a watcher of the graph saw it."""
    gate_id: str
    stamp_ns: int
    visit_code: str


@dataclass(frozen=True)
class UnmatchedReceipt:
    """A receipt the scorer could not give to a party: the run is wrong, not the visit."""
    receipt_id: str
    visit_code: str
    problem: str


class PartyMatcher:
    """Receipts to the simulator's parties, from what the receipt itself carries: its
    entry gate and entry stamp, and ``party_at_entry(gate_id, stamp_ns)`` (from the
    ground truth) says which party entered there and then. A receipt without an entry
    gate (issued before Receipt had one) falls back to its visit code:
    ``party_of_visit`` (a bag's ground truth knows the codes), else the ENTRY event the
    caller saw with that code. A receipt of no party, or a second one for a party, is
    kept in ``unmatched``: a scorer must fail the run on it, not count a missing
    receipt."""

    def __init__(self, party_at_entry: Callable[[str, int], Optional[str]],
                 party_of_visit: Callable[[str], Optional[str]] = lambda code: None):
        self.party_at_entry = party_at_entry
        self.party_of_visit = party_of_visit
        self.receipt_of = {}     # party -> id of the receipt given to it
        self.unmatched = []      # UnmatchedReceipt, in arrival order

    def match(self, receipt: dict, entries: Iterable[GateEntry] = ()) -> Optional[str]:
        """The party this receipt belongs to, or None (then recorded in ``unmatched``)."""
        gate_id, stamp_ns = receipt.get('entry_gate_id', ''), receipt['entry_stamp_ns']
        if gate_id:
            party = self.party_at_entry(gate_id, stamp_ns)
            problem = f'no party entered at gate {gate_id} at stamp {stamp_ns} ns'
        else:
            party = self._party_of_code(receipt['visit_code'], entries)
            problem = (f'no entry gate on the receipt and no ENTRY event seen with visit code '
                       f'{receipt["visit_code"]!r}')
        if party is not None and party in self.receipt_of:
            problem = f'a second receipt for party {party} (the first: {self.receipt_of[party]})'
        elif party is not None:
            self.receipt_of[party] = receipt['receipt_id']
            return party
        self.unmatched.append(UnmatchedReceipt(receipt['receipt_id'], receipt['visit_code'], problem))
        return None

    def _party_of_code(self, visit_code: str, entries: Iterable[GateEntry]) -> Optional[str]:
        known = self.party_of_visit(visit_code) if visit_code else None
        if known is not None or not visit_code:
            return known
        entry = next((e for e in entries if e.visit_code == visit_code), None)
        return self.party_at_entry(entry.gate_id, entry.stamp_ns) if entry else None


def score_visits(expected: dict, receipts: dict, prices: dict) -> dict:
    """expected: party -> Counter of SKUs taken; receipts: party -> receipt dict (missing
    parties have none); prices: sku -> cents. Returns per-visit rows and totals."""
    rows = {}
    hits = predicted = truth = 0
    wrong_items = wrong_cents = final_missing_items = 0
    for party, want in expected.items():
        want = +want
        receipt = receipts.get(party)
        got = items_of(receipt) if receipt else Counter()
        exact = receipt is not None and got == want   # no receipt is never exact
        short = short_items(want, got)
        # A FINAL receipt that lets the shopper walk out with items not charged.
        final_missing_items += is_final(receipt) and not exact and bool(short)
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
                       'overcharged': over, 'short': dict(short),
                       'confidence': receipt['confidence'] if receipt else None,
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
        # Flagged counts the visits without a receipt too; these say which is which.
        'missing_receipts': sum(r['missing'] for r in rows.values()),
        'reviews': sum(r['flagged'] and not r['missing'] for r in rows.values()),
        'final_receipts_missing_items': final_missing_items,
        'per_visit': rows,
    }


@dataclass(frozen=True)
class CalibrationBin:
    """Receipt lines whose confidence fell in [low, high) (the last bin includes 1)."""
    low: float
    high: float
    lines: int
    mean_confidence: Optional[float]   # None for an empty bin
    observed: Optional[float]          # share of its lines that were right


@dataclass(frozen=True)
class Calibration:
    """Line confidence (CartLine.confidence) against how often the lines were right."""
    lines: int
    ece: float          # expected calibration error: sum over bins of share x |confidence - observed|
    bins: list = field(default_factory=list)   # CalibrationBin


def calibration(expected: dict, receipts: dict, bins: int = 10) -> Calibration:
    """Every charged line of every receipt (in review or not), binned by its confidence
    against whether it was right: the right product and quantity on the right visit
    (the line-item hit of score_visits)."""
    binned = [[] for _ in range(bins)]    # (confidence, right) per bin
    for party, receipt in receipts.items():
        want, got = +expected.get(party, Counter()), items_of(receipt)
        for line in receipt['lines']:
            if line['quantity'] <= 0:
                continue
            confidence = min(1.0, max(0.0, float(line['confidence'])))
            index = min(bins - 1, int(round(confidence * bins, 9)))
            binned[index].append((confidence, want.get(line['sku']) == got[line['sku']]))
    total = sum(len(b) for b in binned)
    table, ece = [], 0.0
    for i, members in enumerate(binned):
        mean = statistics.fmean(c for c, _ in members) if members else None
        observed = sum(right for _, right in members) / len(members) if members else None
        if members:
            ece += len(members) / total * abs(mean - observed)
        table.append(CalibrationBin(low=round(i / bins, 6), high=round((i + 1) / bins, 6),
                                    lines=len(members), mean_confidence=mean, observed=observed))
    return Calibration(lines=total, ece=ece, bins=table)


@dataclass(frozen=True)
class FinalReliability:
    """FINAL receipts against how sure fusion was of them. A receipt's confidence is the
    probability that it is exact, so about ``expected_wrong`` (the sum of 1 - confidence)
    of them should be wrong; many more wrong than that means receipts leave review on
    confidence they do not have."""
    receipts: int = 0
    wrong: int = 0
    expected_wrong: float = 0.0

    def plus(self, other: 'FinalReliability') -> 'FinalReliability':
        return _added(self, other)


def final_reliability(expected: dict, receipts: dict) -> FinalReliability:
    """Over the FINAL receipts of the parties in ``expected``: how many, how many not
    exact, and how many fusion's confidences expected not to be."""
    finals = [(receipts[party], +want) for party, want in expected.items() if is_final(receipts.get(party))]
    return FinalReliability(receipts=len(finals),
                            wrong=sum(items_of(receipt) != want for receipt, want in finals),
                            expected_wrong=sum(1.0 - min(1.0, max(0.0, float(receipt['confidence'])))
                                               for receipt, _ in finals))


@dataclass(frozen=True)
class RunCost:
    """What a run's receipts cost the store (config `review`, core.config.ReviewCosts),
    in cents. Receipts sent to review are settled by a person: they cost a review and
    nothing else."""
    overcharged_cents: int = 0    # charged on FINAL receipts beyond what the visit took
    undercharged_cents: int = 0   # taken but not on the visit's FINAL receipt, or no receipt at all
    wrong_final_lines: int = 0    # lines on FINAL receipts not right in product and quantity
    reviews: int = 0              # receipts sent to review
    total_cents: int = 0

    def plus(self, other: 'RunCost') -> 'RunCost':
        """Two runs together (each priced with its own store's costs)."""
        return _added(self, other)


def _added(one, other):
    """Two tallies of one dataclass, field by field."""
    return type(one)(**{f.name: getattr(one, f.name) + getattr(other, f.name) for f in fields(one)})


def run_cost(expected: dict, receipts: dict, prices: dict, costs) -> RunCost:
    """costs: core.config.ReviewCosts. total = overcharged x overcharge_weight +
    undercharged + wrong FINAL lines x wrong_line_cents + reviews x cost_cents. A visit
    without a receipt charges nothing and asks no one: all it took is undercharged."""
    over = under = wrong_lines = reviews = 0
    for party, want in expected.items():
        want, receipt = +want, receipts.get(party)
        if receipt is not None and not is_final(receipt):
            reviews += 1
            continue
        got = items_of(receipt) if receipt else Counter()
        over += sum(prices[sku] * n for sku, n in short_items(got, want).items())
        under += sum(prices[sku] * n for sku, n in short_items(want, got).items())
        wrong_lines += sum(1 for sku, n in got.items() if want.get(sku) != n)
    total = (round(over * costs.overcharge_weight) + under + wrong_lines * costs.wrong_line_cents
             + reviews * costs.cost_cents)
    return RunCost(overcharged_cents=over, undercharged_cents=under, wrong_final_lines=wrong_lines,
                   reviews=reviews, total_cents=int(total))


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
