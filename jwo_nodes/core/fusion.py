"""Edge fusion: gate events, shopper positions and shelf weight changes in; a live
cart per visit and a receipt at exit out.

Everything is decided from stamps. An input is acted on only once every source has
reported past its stamp (the shelves through their heartbeats' ``processed_until``,
the tracker through its newest positions), so a replay at any speed, or inputs that
arrive in another order, give the same carts and receipts. Wall time is used for one
thing only: declaring a silent sensor stale, which makes the receipts it affects
NEEDS_REVIEW instead of waiting forever. No rclpy here.
"""
import bisect
import heapq
import itertools
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from jwo_nodes.core.config import StoreConfig
from jwo_nodes.core.money import tax_cents

NS = 1_000_000_000
FINAL, NEEDS_REVIEW = 'FINAL', 'NEEDS_REVIEW'
# A track first seen this recently is coming in, not leaving.
_JUST_ENTERED_NS = 3 * NS
# A shopper with a visit this much farther from a gate than one without is as near.
_AS_NEAR_M = 0.25

# Review reason codes (the same strings as jwo_msgs/ReviewReason constants).
AMBIGUOUS_ATTRIBUTION = 'ambiguous_attribution'
NO_CANDIDATE = 'no_candidate'
UNIDENTIFIED_ITEM = 'unidentified_item'
AMBIGUOUS_PRODUCT = 'ambiguous_product'
UNMATCHED_PUT_BACK = 'unmatched_put_back'
SENSOR_STALE = 'sensor_stale'
UNRESOLVED_EXIT = 'unresolved_exit'
LOW_CONFIDENCE = 'low_confidence'


@dataclass(frozen=True)
class FusionSettings:
    # A shopper within this distance of a bin's standing point can reach into it.
    reach_radius_m: float = 0.9
    # Beyond reach, the nearest shopper within this distance is a (doubtful) candidate.
    fallback_radius_m: float = 2.5
    # Attribution is sure when the runner-up stands this much farther away.
    ambiguity_margin_m: float = 0.4
    # Positions this long before and after a change count as "at the shelf".
    window_margin_s: float = 0.5
    # A hand this close to a bin's shelf point is in the bin.
    hand_zone_m: float = 0.5
    # Attribution by hands is sure when the runner-up had its hand in the bin for this
    # much less of the change's window (a share of its frames then).
    hand_margin: float = 0.3
    # A receipt below this confidence goes to review.
    review_threshold: float = 0.75
    # A sensor silent for this long (wall clock) no longer holds decisions back.
    stale_after_s: float = 3.0
    # Position history kept per track.
    history_s: float = 300.0
    # A walk-out that no shopper with a visit was seen at (the tracker lost who it
    # was) closes, this long after it, the open visit no track has carried since --
    # the one seen last closest to the walk-out -- for review, rather than never.
    unseen_exit_s: float = 15.0


@dataclass(frozen=True)
class GateInput:
    event_id: str
    gate_id: str
    stamp_ns: int
    is_entry: bool
    visit_code: str
    group_size: int


@dataclass(frozen=True)
class ChangeInput:
    event_id: str
    shelf_id: str
    bin_ids: tuple
    delta_grams: tuple
    start_ns: int
    end_ns: int
    noise_grams: float


@dataclass(frozen=True)
class TrackInput:
    track_id: str
    visit_code: str
    x: float
    y: float
    # The track's hand on the floor plane (x, y) when the cameras saw one.
    hand: Optional[tuple] = None
    # How sure the tracker is that the track is still the person its visit code was
    # given to (1: certain); an attribution to it is no surer than this.
    confidence: float = 1.0


class _Sample(NamedTuple):
    """One track at one stamp, as the tracker published it."""
    stamp_ns: int
    x: float
    y: float
    hand: Optional[tuple]
    visit_code: str
    confidence: float


@dataclass(frozen=True)
class Line:
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int
    confidence: float


@dataclass(frozen=True)
class Reason:
    code: str
    event_id: str
    detail: str


@dataclass(frozen=True)
class Doubt:
    event_id: str
    reason_code: str
    shelf_id: str
    bin_ids: tuple
    delta_grams: tuple
    window_start_ns: int
    window_end_ns: int
    candidate_visits: tuple
    candidate_scores: tuple
    proposed_sku: str
    proposed_quantity: int
    camera_ids: tuple


@dataclass(frozen=True)
class CartSnapshot:
    visit_code: str
    revision: int
    cause_event_id: str
    stamp_ns: int
    lines: tuple
    total_cents: int


@dataclass(frozen=True)
class ReceiptOut:
    receipt_id: str
    store_id: str
    visit_code: str
    entry_ns: int
    exit_ns: int
    lines: tuple
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    status: str
    reasons: tuple
    confidence: float
    doubts: tuple


@dataclass
class Outputs:
    carts: list = field(default_factory=list)
    receipts: list = field(default_factory=list)


@dataclass
class _Visit:
    code: str
    entry_ns: int
    group_size: int
    quantities: Counter = field(default_factory=Counter)
    confidence: dict = field(default_factory=dict)      # sku -> lowest confidence
    reasons: list = field(default_factory=list)
    doubts: list = field(default_factory=list)
    exits: list = field(default_factory=list)
    revision: int = 0
    # Lowest confidence of any event attributed to (or doubted for) this visit.
    event_confidence: float = 1.0
    closed_ns: Optional[int] = None
    receipt_issued: bool = False


class FusionCore:
    def __init__(self, store: StoreConfig, settings: FusionSettings = FusionSettings()):
        self.store = store
        self.settings = settings
        self.problems = []            # (counter name, message), drained by the node
        self._visits = {}
        self._seen_events = set()
        self._track_history = {}      # track id -> deque of _Sample
        self._exited_tracks = set()
        self._unresolved_exits = []   # walk-outs nobody with a visit was seen at
        self._code_seen = {}          # visit code -> newest stamp a track carried it
        self._positions_until = None  # newest positions stamp
        self._positions_wall = None
        self._shelf_until = {shelf_id: None for shelf_id in store.shelves}
        self._shelf_wall = {shelf_id: None for shelf_id in store.shelves}
        # Wall time of the first input: a shelf never heard from is silent since then,
        # not since this core started (a replay or a late sensor set may begin long after).
        self._inputs_wall = None
        self._pending = []            # heap of (stamp, order, seq, kind, item)
        self._seq = itertools.count()
        # Items known to lie on a bin of another product, and items that may (a put-back
        # of one of two products that weigh the same).
        self._foreign = {bin_id: Counter() for bin_id in store.bins}
        self._maybe_foreign = {bin_id: Counter() for bin_id in store.bins}
        self._cameras_of_shelf = {
            shelf_id: tuple(c.id for c in store.cameras.values() if shelf_id in c.sees_shelves)
            for shelf_id in store.shelves}

    # -- inputs --------------------------------------------------------------------

    def on_gate_event(self, event: GateInput, wall_ns: int) -> Outputs:
        self._input_at(wall_ns)
        if not self._first_time(event.event_id, 'duplicate_gate_event'):
            return self.advance(wall_ns)
        if event.is_entry:
            if not event.visit_code:
                self._problem('malformed_gate_event', f'{event.event_id}: ENTRY without a visit code')
            elif event.visit_code in self._visits:
                self._problem('duplicate_gate_event', f'{event.event_id}: visit {event.visit_code} entered already')
            else:
                self._visits[event.visit_code] = _Visit(event.visit_code, event.stamp_ns,
                                                        max(1, event.group_size))
        else:
            heapq.heappush(self._pending, (event.stamp_ns, 1, next(self._seq), 'exit', event))
        return self.advance(wall_ns)

    def on_weight_change(self, change: ChangeInput, wall_ns: int) -> Outputs:
        self._input_at(wall_ns)
        if not self._first_time(change.event_id, 'duplicate_weight_change'):
            return self.advance(wall_ns)
        shelf = self.store.shelves.get(change.shelf_id)
        if shelf is None:
            self._problem('unknown_shelf', f'{change.event_id}: shelf {change.shelf_id!r} is not in the store config')
            return self.advance(wall_ns)
        bins = {b.id for b in shelf.bins}
        if (len(change.bin_ids) != len(change.delta_grams) or not change.bin_ids
                or any(b not in bins for b in change.bin_ids)
                or not all(math.isfinite(d) for d in change.delta_grams)
                or change.end_ns < change.start_ns):
            self._problem('malformed_weight_change', f'{change.event_id}: bins {change.bin_ids} deltas {change.delta_grams}')
            return self.advance(wall_ns)
        if self._watermark() is not None and change.end_ns < self._watermark():
            self._problem('late_weight_change', f'{change.event_id} arrived after its shelf reported past it')
        heapq.heappush(self._pending, (change.end_ns, 0, next(self._seq), 'change', change))
        return self.advance(wall_ns)

    def on_positions(self, stamp_ns: int, tracks: list, wall_ns: int) -> Outputs:
        self._input_at(wall_ns)
        if self._positions_until is not None and stamp_ns <= self._positions_until:
            self._problem('out_of_order_positions', f'positions at {stamp_ns} after {self._positions_until}')
            return self.advance(wall_ns)
        self._positions_until = stamp_ns
        self._positions_wall = wall_ns
        for track in tracks:
            if not (math.isfinite(track.x) and math.isfinite(track.y)):
                self._problem('malformed_position', f'track {track.track_id}: ({track.x}, {track.y})')
                continue
            hand = track.hand
            if hand is not None and not all(math.isfinite(v) for v in hand):
                self._problem('malformed_position', f'track {track.track_id}: hand {hand}')
                hand = None
            # A track's code can change (the tracker re-identified who it is): each
            # sample keeps the code it had then.
            confidence = track.confidence
            if not 0.0 <= confidence <= 1.0:   # NaN too
                self._problem('malformed_position', f'track {track.track_id}: confidence {confidence}')
                confidence = min(1.0, max(0.0, confidence)) if math.isfinite(confidence) else 0.0
            if track.visit_code:
                self._code_seen[track.visit_code] = stamp_ns
            history = self._track_history.setdefault(track.track_id, deque())
            history.append(_Sample(stamp_ns, track.x, track.y, hand, track.visit_code, confidence))
            while history and history[0].stamp_ns < stamp_ns - int(self.settings.history_s * NS):
                history.popleft()
        return self.advance(wall_ns)

    def on_shelf_status(self, shelf_id: str, processed_until_ns: int, wall_ns: int) -> Outputs:
        self._input_at(wall_ns)
        if shelf_id not in self._shelf_until:
            self._problem('unknown_shelf', f'status of shelf {shelf_id!r}, which is not in the store config')
            return self.advance(wall_ns)
        previous = self._shelf_until[shelf_id]
        if previous is not None and processed_until_ns < previous:
            self._problem('out_of_order_status', f'shelf {shelf_id} went back from {previous} to {processed_until_ns}')
        else:
            self._shelf_until[shelf_id] = processed_until_ns
        self._shelf_wall[shelf_id] = wall_ns
        return self.advance(wall_ns)

    # -- deciding ------------------------------------------------------------------

    def advance(self, wall_ns: int) -> Outputs:
        """Acts on every pending input all sources have reported past; issues the
        receipts whose visits have closed and whose shelves have caught up."""
        out = Outputs()
        watermark = self._watermark(wall_ns)
        while self._pending and watermark is not None and self._pending[0][0] <= watermark:
            _, _, _, kind, item = heapq.heappop(self._pending)
            if kind == 'change':
                out.carts.extend(self._apply_change(item))
            else:
                self._apply_exit(item)
        if watermark is not None and self._unresolved_exits:
            self._settle_unresolved_exits(watermark)
        stale = self._stale_shelves(wall_ns)
        for visit in self._visits.values():
            if visit.closed_ns is None or visit.receipt_issued:
                continue
            if watermark is not None and watermark >= visit.closed_ns:
                out.receipts.append(self._receipt(visit, stale))
        return out

    def _watermark(self, wall_ns: Optional[int] = None) -> Optional[int]:
        """The stamp up to which every live source has reported."""
        if self._positions_until is None:
            return None
        bounds = [self._positions_until - int(self.settings.window_margin_s * NS)]
        stale = self._stale_shelves(wall_ns) if wall_ns is not None else set()
        for shelf_id, until in self._shelf_until.items():
            if shelf_id in stale:
                continue
            if until is None:
                return None
            bounds.append(until)
        return min(bounds)

    def _stale_shelves(self, wall_ns: Optional[int]) -> set:
        if wall_ns is None or self._inputs_wall is None:
            return set()
        limit = int(self.settings.stale_after_s * NS)
        return {shelf_id for shelf_id, seen in self._shelf_wall.items()
                if wall_ns - (seen if seen is not None else self._inputs_wall) > limit}

    def _input_at(self, wall_ns: int) -> None:
        if self._inputs_wall is None:
            self._inputs_wall = wall_ns

    def _apply_exit(self, event: GateInput) -> None:
        gate = self.store.gates.get(event.gate_id)
        if gate is None:
            self._problem('unknown_gate', f'{event.event_id}: gate {event.gate_id!r}')
            return
        if event.visit_code:
            visit = self._visits.get(event.visit_code)
            if visit is None:
                self._problem('exit_without_entry', f'{event.event_id}: visit {event.visit_code} never entered')
                return
            track, _ = self._nearest_track(gate.x, gate.y, event.stamp_ns, gate.radius_m * 2, visit.code)
        else:
            track, code = self._nearest_track(gate.x, gate.y, event.stamp_ns, gate.radius_m, None)
            visit = self._visits.get(code) if track else None
            if visit is None:
                self._problem('unresolved_exit', f'{event.event_id}: no shopper with a visit at gate {gate.id}')
                self._unresolved_exits.append(event)
                return
        if visit.closed_ns is not None:
            self._problem('exit_after_close', f'{event.event_id}: visit {visit.code} has left already')
            return
        if track:
            self._exited_tracks.add(track)
        visit.exits.append(event.stamp_ns)
        if len(visit.exits) >= visit.group_size:
            visit.closed_ns = event.stamp_ns

    def _settle_unresolved_exits(self, watermark: int) -> None:
        wait, margin = int(self.settings.unseen_exit_s * NS), int(self.settings.window_margin_s * NS)
        still = []
        for event in self._unresolved_exits:
            if watermark < event.stamp_ns + wait:
                still.append(event)
                continue
            seen = {code: self._code_seen.get(code, visit.entry_ns) for code, visit in self._visits.items()
                    if visit.closed_ns is None}
            unseen = sorted((abs(stamp - event.stamp_ns), code) for code, stamp in seen.items()
                            if stamp <= event.stamp_ns + margin)
            if not unseen:
                self._problem('unresolved_exit_unmatched', f'{event.event_id}: every open visit was seen after it')
                continue
            visit = self._visits[unseen[0][1]]
            visit.reasons.append(Reason(UNRESOLVED_EXIT, '', f'walk-out {event.event_id} at gate {event.gate_id}: '
                                        f'nobody with a visit seen there; {visit.code} not seen since'))
            visit.exits.append(event.stamp_ns)
            if len(visit.exits) >= visit.group_size:
                visit.closed_ns = event.stamp_ns
        self._unresolved_exits = still

    def _nearest_track(self, x: float, y: float, stamp_ns: int, radius: float,
                       visit_code: Optional[str]) -> tuple:
        """(track id, its visit code) of the track with a visit standing nearest the
        point at the stamp (its sample closest in time, within the window margin), if
        within radius, else (None, None). Someone who has just come in through the gate
        is taken only when nobody else is there. Without ``visit_code`` (a walk-out)
        the nearest track of all decides: when it has no code (the tracker lost who it
        is), nobody with a visit is taken unless standing as near."""
        margin = int(self.settings.window_margin_s * NS)
        ranked = []
        for track_id, history in self._track_history.items():
            if track_id in self._exited_tracks:
                continue
            sample = self._sample_at(history, stamp_ns, margin)
            if sample is None or (visit_code is not None and sample.visit_code != visit_code):
                continue
            distance = math.hypot(sample.x - x, sample.y - y)
            if distance <= radius:
                just_entered = history[0].stamp_ns > stamp_ns - _JUST_ENTERED_NS
                ranked.append((just_entered, distance, track_id, sample.visit_code))
        ranked.sort()
        coded = [r for r in ranked if r[3]]
        if not coded or (not ranked[0][3] and coded[0][:2] > (ranked[0][0], ranked[0][1] + _AS_NEAR_M)):
            return None, None
        return coded[0][2:]

    @staticmethod
    def _sample_at(history, stamp_ns: int, margin_ns: int):
        stamps = [s.stamp_ns for s in history]
        i = bisect.bisect_left(stamps, stamp_ns)
        nearby = [history[j] for j in (i - 1, i) if 0 <= j < len(history)]
        nearby = [s for s in nearby if abs(s.stamp_ns - stamp_ns) <= margin_ns]
        return min(nearby, key=lambda s: abs(s.stamp_ns - stamp_ns)) if nearby else None

    @staticmethod
    def _window(history, start_ns: int, end_ns: int) -> list:
        stamps = [s.stamp_ns for s in history]
        return list(itertools.islice(history, bisect.bisect_left(stamps, start_ns),
                                     bisect.bisect_right(stamps, end_ns)))

    @staticmethod
    def _reach_distance(samples, x: float, y: float) -> float:
        """How far a track stood from a point while a change happened: its mean distance
        over the window's samples. A track that moved more than half a metre meanwhile
        was walking past, not reaching: it counts as far away."""
        distance = sum(math.hypot(s.x - x, s.y - y) for s in samples) / len(samples)
        first, last = samples[0], samples[-1]
        return distance if math.hypot(last.x - first.x, last.y - first.y) <= 0.5 else distance + 1.0

    def _visit_windows(self, start_ns: int, end_ns: int) -> list:
        """(visit code, samples) of every track seen around a change while it held the
        code of an open visit."""
        margin = int(self.settings.window_margin_s * NS)
        windows = []
        for history in self._track_history.values():
            samples = self._window(history, start_ns - margin, end_ns + margin)
            for code in dict.fromkeys(s.visit_code for s in samples):
                visit = self._visits.get(code)
                if visit is not None and not visit.receipt_issued:
                    windows.append((code, [s for s in samples if s.visit_code == code]))
        return windows

    def _candidates(self, windows: list, x: float, y: float) -> list:
        """(distance, visit code) of every visit with a track near the point, nearest first."""
        nearest = {}
        for code, samples in windows:
            distance = self._reach_distance(samples, x, y)
            if distance < nearest.get(code, math.inf):
                nearest[code] = distance
        return sorted((d, code) for code, d in nearest.items())

    def _hands_in(self, windows: list, x: float, y: float) -> dict:
        """Visit code -> the largest share of one of its tracks' frames around a change
        with the hand within hand_zone_m of the point, for visits with any."""
        shares = {}
        for code, samples in windows:
            inside = sum(1 for s in samples if s.hand is not None
                         and math.hypot(s.hand[0] - x, s.hand[1] - y) <= self.settings.hand_zone_m)
            if inside:
                shares[code] = max(shares.get(code, 0.0), inside / len(samples))
        return shares

    def _attribute(self, bin_id: str, start_ns: int, end_ns: int) -> Optional[tuple]:
        """(candidate visits best first, their scores, confidence, doubt code or None) of
        a change on a bin, or None when nobody was near. The confidence is at most the
        tracker's in the chosen visit's track over the window; below review_threshold the
        attribution is in doubt."""
        windows = self._visit_windows(start_ns, end_ns)
        attribution = self._attribute_in(windows, bin_id)
        if attribution is None:
            return None
        candidates, scores, confidence, doubt_code = attribution
        identity = min((sample.confidence for code, samples in windows if code == candidates[0]
                        for sample in samples), default=1.0)
        if identity < self.settings.review_threshold and doubt_code is None:
            doubt_code = AMBIGUOUS_ATTRIBUTION
        return candidates, scores, confidence * identity, doubt_code

    def _attribute_in(self, windows: list, bin_id: str) -> Optional[tuple]:
        """_attribute by place and hands: a hand seen in the bin decides: the candidates
        are the visits with a hand there and those standing in reach, scored by the share
        of the window their hand was in. Without one, where they stood decides."""
        s = self.settings
        bin_ = self.store.bin(bin_id)
        candidates = self._candidates(windows, bin_.x, bin_.y)
        near = [(d, c) for d, c in candidates if d <= s.reach_radius_m]
        shares = self._hands_in(windows, *self.store.shelf_point(bin_id))
        if shares:
            for _, code in near:
                shares.setdefault(code, 0.0)
            ranked = sorted(shares.items(), key=lambda item: (-item[1], item[0]))
            margin = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else None
            return ((tuple(c for c, _ in ranked), tuple(round(share, 3) for _, share in ranked))
                    + self._by_margin(margin, s.hand_margin))
        if near:
            margin = near[1][0] - near[0][0] if len(near) > 1 else None
            confidence, doubt_code = self._by_margin(margin, s.ambiguity_margin_m)
        else:
            near = [(d, c) for d, c in candidates if d <= s.fallback_radius_m][:1]
            if not near:
                return None
            confidence, doubt_code = 0.3, NO_CANDIDATE
        return (tuple(c for _, c in near), tuple(round(1.0 / (1.0 + d), 3) for d, _ in near),
                confidence, doubt_code)

    @staticmethod
    def _by_margin(margin: Optional[float], sure_margin: float) -> tuple:
        """(confidence, doubt code or None) from how far the best candidate is ahead of
        the runner-up (None: nobody else)."""
        if margin is None:
            return 0.99, None
        if margin >= sure_margin:
            return min(0.99, 0.85 + 0.14 * margin / (2 * sure_margin)), None
        return 0.5 * (1 + margin / sure_margin) / 2, AMBIGUOUS_ATTRIBUTION

    def _apply_change(self, change: ChangeInput) -> list:
        touched = {}
        for bin_id, delta in zip(change.bin_ids, change.delta_grams):
            attribution = self._attribute(bin_id, change.start_ns, change.end_ns)
            if attribution is None:
                self._problem('unattributed_change',
                              f'{change.event_id}: {delta:+.0f} g on {bin_id} with no shopper near')
                continue
            candidates, scores, attribution_confidence, doubt_code = attribution
            visit = self._visits[candidates[0]]
            sku, quantity, identify_confidence, identify_doubt = self._identify(visit, bin_id, delta, change.noise_grams)
            confidence = attribution_confidence * identify_confidence
            visit.event_confidence = min(visit.event_confidence, confidence)
            if sku:
                signed = quantity if delta < 0 else -quantity
                visit.quantities[sku] += signed
                visit.confidence[sku] = min(visit.confidence.get(sku, 1.0), confidence)
            for code in filter(None, (doubt_code, identify_doubt)):
                doubt = Doubt(
                    event_id=change.event_id, reason_code=code, shelf_id=change.shelf_id,
                    bin_ids=(bin_id,), delta_grams=(delta,), window_start_ns=change.start_ns,
                    window_end_ns=change.end_ns,
                    candidate_visits=candidates, candidate_scores=scores,
                    proposed_sku=sku, proposed_quantity=quantity,
                    camera_ids=self._cameras_of_shelf[change.shelf_id])
                # Everyone who could have caused a doubtful event is reviewed with it.
                for code_of_visit in (doubt.candidate_visits if code == AMBIGUOUS_ATTRIBUTION else (visit.code,)):
                    other = self._visits[code_of_visit]
                    other.event_confidence = min(other.event_confidence, confidence)
                    other.reasons.append(Reason(code, change.event_id,
                                                f'{delta:+.1f} g on {bin_id}; proposed {quantity} x {sku or "?"} for {visit.code}'))
                    other.doubts.append(doubt)
            visit.revision += 1
            touched[visit.code] = visit
        return [self._snapshot(v, change.event_id, change.end_ns) for v in touched.values()]

    def _identify(self, visit: _Visit, bin_id: str, delta: float, noise: float) -> tuple:
        """(sku, quantity, confidence, doubt code or None) for a change on a bin."""
        bin_ = self.store.bin(bin_id)
        grams = abs(delta)
        if delta < 0:
            stray = self._foreign[bin_id] + self._maybe_foreign[bin_id]
            options = [bin_.sku] + sorted(s for s, n in stray.items() if n > 0 and s != bin_.sku)
        else:
            options = [s for s, n in visit.quantities.items() if n > 0]
        matches = []
        for sku in options:
            product = self.store.products[sku]
            quantity = round(grams / product.unit_grams)
            if quantity < 1 or (delta > 0 and quantity > visit.quantities[sku]):
                continue
            tolerance = quantity * product.tolerance_grams + 3.0 * max(noise, 0.5) * math.sqrt(2) + 2.0
            residual = abs(grams - quantity * product.unit_grams)
            if residual <= tolerance:
                matches.append((residual / tolerance, sku, quantity))
        matches.sort()
        if not matches:
            if delta > 0:
                return '', 0, 0.2, UNMATCHED_PUT_BACK
            product = self.store.products[bin_.sku]
            return bin_.sku, max(1, round(grams / product.unit_grams)), 0.2, UNIDENTIFIED_ITEM
        skus = {sku for _, sku, _ in matches}
        if len(skus) == 1:
            score, sku, quantity = matches[0]
            confidence, doubt = 0.99 - 0.2 * score, None
        elif delta > 0 and bin_.sku in skus:
            # Same weight, different products in the cart: an item put back on the bin
            # of its own product is the likelier case, but not sure enough to charge
            # without review at the default threshold.
            _, sku, quantity = next(m for m in matches if m[1] == bin_.sku)
            confidence, doubt = 0.7, None
            for _, other, n in matches:
                if other != sku:
                    self._maybe_foreign[bin_id][other] += n
        else:
            preferred = [m for m in matches if m[1] == bin_.sku] or matches
            _, sku, quantity = preferred[0]
            confidence, doubt = 0.4, AMBIGUOUS_PRODUCT
        if delta < 0:
            for _, matched, n in matches:
                if self._maybe_foreign[bin_id][matched] > 0:
                    self._maybe_foreign[bin_id][matched] -= n
        if delta < 0 and sku != bin_.sku:
            self._foreign[bin_id][sku] = max(0, self._foreign[bin_id][sku] - quantity)
        elif delta > 0 and sku != bin_.sku:
            self._foreign[bin_id][sku] += quantity
        return sku, quantity, confidence, doubt

    # -- outputs -------------------------------------------------------------------

    def _lines(self, visit: _Visit) -> tuple:
        lines = []
        for sku in sorted(visit.quantities):
            quantity = visit.quantities[sku]
            if quantity <= 0:
                continue
            product = self.store.products[sku]
            lines.append(Line(sku, product.name, quantity, product.price_cents,
                              quantity * product.price_cents, round(visit.confidence.get(sku, 1.0), 3)))
        return tuple(lines)

    def _snapshot(self, visit: _Visit, cause: str, stamp_ns: int) -> CartSnapshot:
        lines = self._lines(visit)
        return CartSnapshot(visit.code, visit.revision, cause, stamp_ns, lines,
                            sum(line.line_total_cents for line in lines))

    def _receipt(self, visit: _Visit, stale: set) -> ReceiptOut:
        visit.receipt_issued = True
        lines = self._lines(visit)
        reasons = list(visit.reasons)
        for shelf_id in sorted(stale):
            reasons.append(Reason(SENSOR_STALE, '', f'shelf {shelf_id} stopped reporting'))
        confidence = min([line.confidence for line in lines] + [visit.event_confidence])
        if confidence < self.settings.review_threshold and not reasons:
            reasons.append(Reason(LOW_CONFIDENCE, '', f'confidence {confidence:.2f}'))
        subtotal = sum(line.line_total_cents for line in lines)
        tax = tax_cents(subtotal, self.store.tax_rate_bp)
        return ReceiptOut(
            receipt_id=f'{self.store.store_id}-{visit.code}', store_id=self.store.store_id,
            visit_code=visit.code, entry_ns=visit.entry_ns, exit_ns=visit.closed_ns,
            lines=lines, subtotal_cents=subtotal, tax_cents=tax, total_cents=subtotal + tax,
            status=NEEDS_REVIEW if reasons else FINAL, reasons=tuple(reasons),
            confidence=round(confidence, 3), doubts=tuple(dict.fromkeys(visit.doubts)))

    # -- bookkeeping ---------------------------------------------------------------

    def _first_time(self, event_id: str, counter: str) -> bool:
        if event_id in self._seen_events:
            self._problem(counter, f'{event_id} seen before')
            return False
        self._seen_events.add(event_id)
        return True

    def _problem(self, counter: str, message: str) -> None:
        self.problems.append((counter, message))

    def open_visits(self) -> list:
        return [code for code, v in self._visits.items() if not v.receipt_issued]
