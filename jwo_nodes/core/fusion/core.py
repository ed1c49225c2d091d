"""Edge fusion: gate events, shopper positions and shelf weight changes in; a live
cart per visit and a receipt at exit out.

Everything is decided from stamps. A weight change or an exit is acted on as soon as
the tracker (its evidence window is then complete) and every gate (no ENTRY before it is
still on its way) have reported past it; its own shelf has, since it sent it. The other
shelves do not hold it back: the changes are solved in stamp order, a late one from a
slower shelf taking its place among them. A receipt is
issued only once every source has reported past the exit (the shelves through their
heartbeats' ``processed_until``), so a replay at any speed, or inputs that arrive in
another order, give the same receipts. Wall time is used for one
thing only: declaring a silent sensor stale, which makes the receipts it affects
NEEDS_REVIEW instead of waiting forever.

Each change becomes evidence (evidence.py); the changes of the open visits are solved
jointly (solver.py) whenever one arrives, so carts show the most likely explanation so
far and a later change can re-weigh an earlier one. At a visit's exit its receipt is
the most likely cart, each line with its probability, and it goes to review only when
the expected cost of being wrong exceeds the store's review cost (cost.py), or when
something no product or cart explains touched it. The changes it settled are then
committed. No rclpy here.
"""
import bisect
import heapq
import math
import pickle
from dataclasses import astuple, dataclass, field, replace
from typing import Optional

from jwo_nodes.core.config import StoreConfig
from jwo_nodes.core.fusion import receipts
from jwo_nodes.core.fusion.cost import expected_cost
from jwo_nodes.core.fusion.evidence import (NOBODY, LaterIdentity, ReachBasis, confirmation_key, product_fits,
                                           unaccounted, walk_out_doubt)
from jwo_nodes.core.fusion.ledger import Ledger
from jwo_nodes.core.fusion.looks import ProductLooks, held_span, sightings_at
from jwo_nodes.core.fusion.solver import ChangeEvidence, FirstLook, apply_choice, solve
from jwo_nodes.core.fusion.tracks import TrackBook
from jwo_nodes.core.fusion.types import (FINAL, FUSION_RESTARTED, ID_DECISIONS, ID_NOT_VERIFIED, LOW_CONFIDENCE,
                                         NEEDS_REVIEW, NO_CANDIDATE, NS, SENSOR_RESTARTED, SENSOR_STALE, UNRESOLVED_EXIT,
                                         CartSnapshot, ChangeInput, FusionSettings, GateInput, IdCheck,
                                         IdCheckRequestOut, IdDecisionInput, IdVerdict, Outputs, Reason,
                                         ReceiptOut, SeenIds, TrackPath)

# A shopper with a visit this much farther from a gate than one without is as near.
_AS_NEAR_M = 0.25
# A visit is forgotten once it has its receipt and no unsettled change names it (a store
# open for months holds only what is going on); its code is remembered this long after
# its exit, longer than a gate keeps a visit open (gate_logic: 4 h), so that an ENTRY or
# EXIT a gate sends again after a restart is known for what it is.
GONE_CODES_KEPT_NS = 24 * 3600 * NS
# What a core takes from its store config, settings and caller, not kept in its saved state.
_FROM_CONFIG = ('store', 'settings', 'weighed', 'problems', '_prices', '_cameras_of_shelf')


def _stamp_order(change: ChangeEvidence) -> tuple:
    """The order changes are solved in: by stamp, whichever shelf reported first."""
    return change.end_ns, change.start_ns, change.event_id, change.bin_id


@dataclass
class _Visit:
    code: str
    entry_gate_id: str
    entry_ns: int
    group_size: int
    reasons: list = field(default_factory=list)     # reasons that always need review
    exits: list = field(default_factory=list)
    revision: int = 0
    published: dict = field(default_factory=dict)   # the cart of the last snapshot
    published_grams: dict = field(default_factory=dict)   # and what its weighed items weighed
    closed_ns: Optional[int] = None
    receipt_issued: bool = False
    # The last snapshot was a first look (its line probabilities are estimates).
    looked: bool = False
    id_checks: dict = field(default_factory=dict)   # sku -> IdCheck of each age-restricted SKU it held
    # The probability that a walk-out that closed it was somebody else's, and what the
    # reviewer is told of each doubted walk-out.
    exit_doubt: float = 0.0
    exit_notes: list = field(default_factory=list)

    @property
    def people_inside(self) -> int:
        """The visit's people not yet seen leaving (a group leaves one by one)."""
        return max(1, self.group_size - len(self.exits))

    def open_during(self, start_ns: int, end_ns: int) -> bool:
        return (not self.receipt_issued and self.entry_ns <= end_ns
                and (self.closed_ns is None or self.closed_ns > start_ns))


class FusionCore:
    def __init__(self, store: StoreConfig, settings: FusionSettings = FusionSettings(), weighed: list = None):
        """``weighed``: a list each change's ChangeEvidence is appended to whenever it is
        weighed, and again when the tracker's later word weighs it anew (`jwo fusion-fit`
        fits the settings to what it last was)."""
        self.store = store
        self.settings = settings
        self.weighed = weighed
        self.problems = []            # (counter name, message), drained by the node
        self._visits = {}
        self._gone = {}               # code of a forgotten visit -> its exit stamp, oldest first
        self._seen_events = SeenIds()
        self._tracks = TrackBook(settings.history_s, settings.just_entered_s)
        self._unresolved_exits = []   # walk-outs nobody with a visit was seen at
        self._positions_until = None  # newest positions stamp
        self._shelf_until = {shelf_id: None for shelf_id in store.shelves}
        self._shelf_wall = {shelf_id: None for shelf_id in store.shelves}
        # Gates that send statuses: gate id -> the stamp it has published its events up
        # to, and the wall time of its newest status. A gate that never sent one (a
        # recording from before statuses) holds nothing back.
        self._gate_until = {}
        self._gate_wall = {}
        # Wall time of the first input: a shelf never heard from is silent since then,
        # not since this core started (a replay or a late sensor set may begin long after).
        self._inputs_wall = None
        self._positions_wall = None   # wall ns of the newest positions
        self._pending = []            # heap of (stamp, order, seq, kind, item)
        self._seq = 0                 # order of pending inputs with equal stamps
        self._changes = []            # ChangeEvidence not yet settled on a receipt
        self._decided_until = None    # newest end stamp of a change acted on
        self._settled = Ledger()      # carts and strays as issued receipts settled them
        self._solution = None
        self._settle_due = False      # a change was added since the last settling
        self._unsolved_cause = None   # the change of the last first look not yet solved
        self._prices = {sku: p.price_cents for sku, p in store.products.items()}
        self._looks = ProductLooks(_catalogue_colours(store))
        self._cameras_of_shelf = {
            shelf_id: tuple(c.id for c in store.cameras.values() if shelf_id in c.sees_shelves)
            for shelf_id in store.shelves}

    # -- inputs --------------------------------------------------------------------

    def on_gate_event(self, event: GateInput, wall_ns: int) -> Outputs:
        self._input_at(wall_ns)
        if not self._first_time(event.gate_id, event.event_id, 'duplicate_gate_event'):
            return self.advance(wall_ns)
        if event.is_entry:
            if not event.visit_code:
                self._problem('malformed_gate_event', f'{event.event_id}: ENTRY without a visit code')
            elif event.visit_code in self._visits or event.visit_code in self._gone:
                self._problem('duplicate_gate_event', f'{event.event_id}: visit {event.visit_code} entered already')
            else:
                self._visits[event.visit_code] = _Visit(event.visit_code, event.gate_id, event.stamp_ns,
                                                        max(1, event.group_size))
                self._check_late(event)
        else:
            heapq.heappush(self._pending, (event.stamp_ns, 1, self._next_seq(), 'exit', event))
        return self.advance(wall_ns)

    def on_weight_change(self, change: ChangeInput, wall_ns: int) -> Outputs:
        self._input_at(wall_ns)
        if not self._first_time(change.shelf_id, change.event_id, 'duplicate_weight_change'):
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
        if change.after_restart:
            self._sensor_restarted(change)
            return self.advance(wall_ns)
        # Against every shelf's report: a shelf's own heartbeat travels on another topic
        # and may overtake its change.
        if self._watermark() is not None and change.end_ns < self._watermark():
            self._problem('late_weight_change', f'{change.event_id} arrived after the shelves reported past it')
        heapq.heappush(self._pending, (change.end_ns, 0, self._next_seq(), 'change', change))
        return self.advance(wall_ns)

    def on_positions(self, stamp_ns: int, tracks: list, wall_ns: int) -> Outputs:
        self._input_at(wall_ns)
        if self._positions_until is not None and stamp_ns <= self._positions_until:
            self._problem('out_of_order_positions', f'positions at {stamp_ns} after {self._positions_until}')
            return self.advance(wall_ns)
        self._positions_until = stamp_ns
        self._positions_wall = wall_ns
        self._tracks.keep_from(self._changes_to_come_from(wall_ns))
        for track in tracks:
            if not (math.isfinite(track.x) and math.isfinite(track.y)):
                self._problem('malformed_position', f'track {track.track_id}: ({track.x}, {track.y})')
                continue
            hand, item = track.hand, track.hand_item
            if hand is not None and not all(math.isfinite(v) for v in hand):
                self._problem('malformed_position', f'track {track.track_id}: hand {hand}')
                hand = None
            if item is not None and not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in astuple(item)):
                self._problem('malformed_position', f'track {track.track_id}: held item {item}')
                item = None
            confidence = track.confidence
            if not 0.0 <= confidence <= 1.0:   # NaN too
                self._problem('malformed_position', f'track {track.track_id}: confidence {confidence}')
                confidence = min(1.0, max(0.0, confidence)) if math.isfinite(confidence) else 0.0
            self._tracks.add(track.track_id, stamp_ns, track.x, track.y, hand, track.visit_code, confidence,
                             item if hand is not None else None)
        return self.advance(wall_ns)

    def on_id_decision(self, decision: IdDecisionInput, wall_ns: int) -> Outputs:
        """An associate's answer to an ID check. Kept on the visit until its receipt,
        which counts the latest one stamped by the exit; one that comes after the
        receipt is too late (the receipt went to review without it)."""
        self._input_at(wall_ns)
        if not self._first_time(ID_DECISIONS, decision.decision_id, 'duplicate_id_decision'):
            return self.advance(wall_ns)
        visit = self._visits.get(decision.visit_code)
        check = visit.id_checks.get(decision.sku) if visit is not None else None
        if (visit is not None and visit.receipt_issued) or decision.visit_code in self._gone:
            self._problem('late_id_decision', f'{decision.decision_id}: visit {decision.visit_code} has its '
                          'receipt already')
        elif check is None:
            self._problem('unknown_id_check', f'{decision.decision_id}: no ID check of {decision.sku!r} '
                          f'for visit {decision.visit_code}')
        else:
            check.decisions.append(decision)
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

    def on_gate_status(self, gate_id: str, processed_until_ns: int, last_event_id: str, wall_ns: int) -> Outputs:
        self._input_at(wall_ns)
        if gate_id not in self.store.gates:
            self._problem('unknown_gate', f'status of gate {gate_id!r}, which is not in the store config')
            return self.advance(wall_ns)
        self._gate_wall[gate_id] = wall_ns
        previous = self._gate_until.get(gate_id)
        if previous is not None and processed_until_ns < previous:
            self._problem('out_of_order_status', f'gate {gate_id} went back from {previous} to {processed_until_ns}')
        elif not last_event_id or last_event_id in self._seen_events:
            self._gate_until[gate_id] = processed_until_ns
        # else it overtook its last event (they travel on two topics): held until that is in
        return self.advance(wall_ns)

    # -- deciding ------------------------------------------------------------------

    def advance(self, wall_ns: int) -> Outputs:
        """Acts on every pending input the tracker and the gates have reported past
        (each change's cart as first looked at; solved_carts() follows); issues the
        receipts whose visits have closed and whose shelves have all caught up."""
        out = Outputs()
        tracked = self._acting_until(wall_ns)
        look = None
        while self._pending and tracked is not None and self._pending[0][0] <= tracked:
            _, _, _, kind, item = heapq.heappop(self._pending)
            if kind == 'change':
                if look is None:
                    look = FirstLook(self._solve(), self.store, self.settings)
                for evidence in self._add_change(item):
                    out.carts.extend(self._first_look_snapshot(look, evidence, item))
                self._decided_until = max(item.end_ns, self._decided_until or item.end_ns)
                self._unsolved_cause = item
            else:
                self._check_late(item)
                self._apply_exit(item)
        closed = [visit for visit in self._visits.values() if visit.closed_ns is not None and not visit.receipt_issued]
        if not (closed or self._unresolved_exits):
            return out   # nothing waits for the watermark (a walk over every shelf, per heartbeat)
        watermark = self._watermark(wall_ns)
        if watermark is not None and self._unresolved_exits:
            self._settle_unresolved_exits(watermark)
        stale = self._stale_shelves(wall_ns)
        tracker_stale = self._tracker_stale(wall_ns)
        for visit in list(self._visits.values()):
            if visit.closed_ns is None or visit.receipt_issued:
                continue
            if watermark is not None and watermark >= visit.closed_ns:
                out.receipts.append(self._receipt(visit, stale, tracker_stale))
        return out

    def _acting_until(self, wall_ns: Optional[int] = None) -> Optional[float]:
        """The stamp up to which changes and exits are acted on: the tracker has reported
        past it, less the evidence window's margin (a change or exit before it has every
        position it is weighed by), and so has every gate. None before the first
        positions; no tracker bound while the tracker is stale."""
        gated = self._gated_until(wall_ns)
        if self._tracker_stale(wall_ns):
            return gated
        if self._positions_until is None:
            return None
        return min(self._positions_until - int(self.settings.window_margin_s * NS), gated)

    def _gated_until(self, wall_ns: Optional[int]) -> float:
        """The stamp up to which every gate that sends statuses has published its
        events (one silent for stale_after_s no longer holds anything back)."""
        return min((until for gate_id, until in self._gate_until.items()
                    if wall_ns is None or not self._silent(self._gate_wall[gate_id], wall_ns)), default=math.inf)

    def _watermark(self, wall_ns: Optional[int] = None) -> Optional[int]:
        """The stamp up to which every live source has reported (a source silent for
        stale_after_s no longer holds decisions back: its visits go to review)."""
        tracked = self._acting_until(wall_ns)
        if tracked is None:
            return None
        bounds = [] if tracked == math.inf else [tracked]
        stale = self._stale_shelves(wall_ns) if wall_ns is not None else set()
        for shelf_id, until in self._shelf_until.items():
            if shelf_id in stale:
                continue
            if until is None:
                return None
            bounds.append(until)
        return min(bounds) if bounds else None

    def _changes_to_come_from(self, wall_ns: int) -> Optional[int]:
        """The stamp from which positions may still weigh a change not yet received:
        no live shelf has one in progress that started before the stamp it has reported
        up to (a shelf behind the tracker, as in a replay at full speed, keeps the
        positions it needs beyond history_s). None: one has not reported yet."""
        stale = self._stale_shelves(wall_ns)
        live = [until for shelf_id, until in self._shelf_until.items() if shelf_id not in stale]
        if any(until is None for until in live):
            return None
        return min(live, default=math.inf) - int(self.settings.window_margin_s * NS)

    def _stale_shelves(self, wall_ns: Optional[int]) -> set:
        if wall_ns is None or self._inputs_wall is None:
            return set()
        return {shelf_id for shelf_id, seen in self._shelf_wall.items() if self._silent(seen, wall_ns)}

    def _silent(self, seen_wall: Optional[int], wall_ns: int) -> bool:
        """A source not heard from for stale_after_s (wall clock) since ``seen_wall``
        (None: never, so since the first input)."""
        since = seen_wall if seen_wall is not None else self._inputs_wall
        return wall_ns - since > int(self.settings.stale_after_s * NS)

    def _tracker_stale(self, wall_ns: Optional[int]) -> bool:
        """No positions for stale_after_s (wall clock): the tracker is down."""
        if wall_ns is None or self._inputs_wall is None:
            return False
        seen = self._positions_wall if self._positions_wall is not None else self._inputs_wall
        return wall_ns - seen > int(self.settings.tracker_stale_after_s * NS)

    def _input_at(self, wall_ns: int) -> None:
        if self._inputs_wall is None:
            self._inputs_wall = wall_ns

    def solved_carts(self) -> list:
        """The carts of the joint solve of the changes first looked at since the last
        call (CartSnapshots of the visits it changed, or first looked at). Called after
        every input, once its outputs are out: it also solves what a receipt settled, so
        the next change is looked at without waiting for a solve."""
        cause, self._unsolved_cause = self._unsolved_cause, None
        if cause is None:
            self._solve()
            return []
        return self._snapshots(cause)

    def _add_change(self, change: ChangeInput) -> list:
        """Weighs a change (its ChangeEvidence per bin, returned) into the unsettled ones."""
        self._settle_if_due()
        added = []
        margin = int(self.settings.window_margin_s * NS)
        windows = self._tracks.windows(change.start_ns - margin, change.end_ns + margin)
        open_people = {code: v.people_inside for code, v in self._visits.items()
                       if v.open_during(change.start_ns, change.end_ns)}
        for bin_id, delta in zip(change.bin_ids, change.delta_grams):
            bin_ = self.store.bin(bin_id)
            basis = ReachBasis(tuple(windows), (bin_.x, bin_.y), self.store.shelf_point(bin_id),
                               (change.start_ns, change.end_ns), open_people)
            span = basis.span
            reach = basis.reach(self.settings)
            if reach.visits[0].visit_code == NOBODY:
                self._problem('unattributed_change', f'{change.event_id}: {delta:+.0f} g on {bin_id}: '
                              'nobody with an open visit was likely near')
                self._orphan(change.event_id, bin_id, delta, windows, open_people)
            seen_near = any(w.reach_distance(bin_.x, bin_.y, *span) <= self.settings.reach_free_m
                            + 2 * self.settings.reach_sigma_m for w in windows)
            # Kept with the change: positions this old are gone by the visit's receipt.
            near = {track.identity[0] for track in reach.tracks}
            paths = tuple(TrackPath(w.track_id, w.visit_code, tuple(s.stamp_ns for s in w.samples),
                                    tuple(round(s.x, 3) for s in w.samples), tuple(round(s.y, 3) for s in w.samples))
                          for w in windows if w.track_id in near)
            fits = product_fits(self.store, abs(delta), change.noise_grams)
            sightings = sightings_at(windows, self.store.shelf_point(bin_id), self.settings.hand_zone_m,
                                     held_span(delta, change.start_ns, change.end_ns))
            if delta < 0 and any(fit.sku == bin_.sku and fit.likelihood >= 0.5 * fits[0].likelihood for fit in fits):
                self._looks.learn(bin_.sku, change.end_ns, sightings)
            added.append(ChangeEvidence(
                change.event_id, change.shelf_id, bin_id, delta, change.start_ns, change.end_ns, reach,
                self._looks.weigh(fits, sightings, change.start_ns), seen_near, paths, basis))
            # In stamp order: a slower shelf's change takes its place among the faster ones'.
            bisect.insort(self._changes, added[-1], key=_stamp_order)
            self._log_weighed(added[-1])
        # Settled before anything else is solved or added: whether the solve runs now or
        # after the first look is then the same.
        self._settle_due = True
        return added

    def _confirm_identities(self, until_ns: int) -> None:
        """Weighs the open changes again with how sure the tracker became, by a stamp,
        of who their tracks were: a re-identification later in a track's identity
        epoch vouches for the changes it made before (on held-out hard scenarios 73.7 ->
        68.2 % of visits flagged, 96.3 -> 96.9 % exact among the rest), and a code it
        moved onto or off the track within the epoch says whose they were. Up to the stamp
        of the exit being receipted only, so a replay at any speed gives the same receipts."""
        refreshed = False
        for index, change in enumerate(self._changes):
            basis = change.basis
            later = {}
            for window in basis.windows:
                key = confirmation_key(window)
                code = self._tracks.code_after(*key, until_ns)
                if code is not None:
                    later[key] = LaterIdentity(code, self._tracks.surest(*key[:2], code, until_ns) or 0.0)
                    continue
                surest = self._tracks.surest(*key, until_ns)
                if surest is not None and surest > window.confidence:
                    later[key] = LaterIdentity(window.visit_code, surest)
            if not later:
                continue
            basis = replace(basis, later=tuple(later.items()))
            reach = basis.reach(self.settings)
            if reach != change.reach:
                self._changes[index] = replace(change, reach=reach, basis=basis)
                self._log_weighed(self._changes[index])
                refreshed = True
        if refreshed:
            self._solution = None

    def _log_weighed(self, change: ChangeEvidence) -> None:
        if self.weighed is not None:
            self.weighed.append(change)

    def _orphan(self, event_id: str, bin_id: str, delta: float, windows: list, open_people: dict) -> None:
        """A change nobody with an open visit was likely near (the tracker lost them, or
        was down): each open visit with somebody not surely seen elsewhere then could
        have made it, so goes to review with it."""
        missing = unaccounted(windows, open_people, self.settings)
        for code in sorted(open_people):
            if missing[code] <= 1.0 - receipts.SURE:
                continue
            self._visits[code].reasons.append(Reason(
                NO_CANDIDATE, event_id, f'{delta:+.0f} g on {bin_id}: nobody with an open visit was seen near '
                'it, and this visit was not surely seen elsewhere'))

    def _solve(self):
        """The solution of the unsettled changes, after settling what the last change
        added let settle."""
        self._settle_if_due()
        return self._solved()

    def _settle_if_due(self) -> None:
        if self._settle_due:
            self._settle_due = False
            self._settle_finished_changes()

    def _solved(self):
        """The solution of the unsettled changes: extended when changes were only added
        since the last one, solved again when some were settled."""
        if self._solution is None or len(self._solution.changes) != len(self._changes):
            self._solution = solve(self._changes, self._settled, self.store, self.settings, self._solution)
        return self._solution

    def _settle_finished_changes(self) -> None:
        """Commits the most likely explanation of every change none of whose candidate
        visits is still waiting for its receipt, once it is sure (or the oldest, beyond
        max_unsure_changes): an unsure one (which yogurt went back on which bin) stays
        in the hypotheses for the next shopper at that bin."""
        waiting = {code for code, v in self._visits.items() if not v.receipt_issued}
        finished = [i for i, change in enumerate(self._changes)
                    if not any(c.visit_code in waiting for c in change.visits)]
        if not finished:
            return
        solution = self._solved()
        unsure = [i for i in finished if solution.marginals(i)[solution.best_choice(i)] < receipts.SURE]
        overflow = max(0, len(unsure) - self.settings.max_unsure_changes)
        settled = (set(finished) - set(unsure)) | set(unsure[:overflow])
        if not settled:
            return
        ledger = self._settled
        for i in sorted(settled):
            change = self._changes[i]
            ledger = apply_choice(change, solution.best_choice(i), self.store.bin(change.bin_id).sku, ledger)
        # Who a track was matters while its code's visit or the one it was decided to be
        # is still waiting; changes still open are re-solved from the new start.
        self._settled = ledger.keeping_identities(
            lambda track, code: track[-1] in waiting or code in waiting)
        self._changes = [c for i, c in enumerate(self._changes) if i not in settled]
        self._solution = None

    def _snapshots(self, cause: ChangeInput) -> list:
        solution = self._solve()
        weighed = receipts.weighed_grams(solution, self.store)
        snapshots = []
        for visit in self._visits.values():
            if visit.receipt_issued:
                continue
            cart = {sku: n for sku, n in solution.cart(visit.code).items() if n > 0}
            grams = weighed.get(visit.code, {})
            if cart == visit.published and grams == visit.published_grams and not visit.looked:
                continue
            visit.looked = False
            snapshots.append(self._snapshot(visit, cart, grams, cause, lambda sku, n, code=visit.code:
                                            solution.line_probability(code, sku, n)))
        return snapshots

    def _first_look_snapshot(self, look: FirstLook, evidence: ChangeEvidence, cause: ChangeInput) -> list:
        """The cart of the visit a change first looks like, at once, if that changed it;
        the changed line's probability is the choice's times the line's before it."""
        seen = look.explain(evidence)
        visit = self._visits.get(seen.choice.visit_code)
        cart = {sku: n for sku, n in seen.cart.items() if n > 0}
        if visit is None or visit.receipt_issued or cart == visit.published:
            return []
        before = look.solution
        grams = dict(receipts.weighed_grams(before, self.store).get(visit.code, {}))
        sku = seen.choice.sku
        if sku and seen.choice.explained and not seen.choice.unmatched and self.store.products[sku].sold_by_weight:
            grams[sku] = grams.get(sku, 0) - round(evidence.delta_grams)

        def probability(sku, n):
            if sku != seen.choice.sku:
                return before.line_probability(visit.code, sku, n)
            earlier = n - seen.choice.quantity if evidence.is_take else n + seen.choice.quantity
            return seen.probability * before.line_probability(visit.code, sku, max(0, earlier))
        visit.looked = True
        return [self._snapshot(visit, cart, grams, cause, probability)]

    def _snapshot(self, visit: _Visit, cart: dict, grams: dict, cause: ChangeInput, probability) -> CartSnapshot:
        visit.published, visit.published_grams = cart, grams
        visit.revision += 1
        # Priced at the change's stamp: a promotion's window follows the store's clock.
        priced = receipts.priced(self.store, cart, grams, cause.end_ns, probability)
        # Requested once per visit and SKU, from the stamp-ordered snapshots: a replay
        # raises the same requests.
        requests = tuple(IdCheckRequestOut(visit.code, cause.event_id, cause.shelf_id, line.sku, line.name,
                                           cause.end_ns)
                         for line in priced.lines if line.age_restricted and line.sku not in visit.id_checks)
        visit.id_checks.update((request.sku, IdCheck(request)) for request in requests)
        lines = tuple(replace(line, id_verified=_verified(visit, line.sku, cause.end_ns))
                      if line.age_restricted else line for line in priced.lines)
        return CartSnapshot(visit.code, visit.revision, cause.event_id, cause.end_ns, lines,
                            priced.savings, priced.savings_cents, priced.subtotal_cents, requests)

    def _apply_exit(self, event: GateInput) -> None:
        gate = self.store.gates.get(event.gate_id)
        if gate is None:
            self._problem('unknown_gate', f'{event.event_id}: gate {event.gate_id!r}')
            return
        margin = int(self.settings.window_margin_s * NS)
        came_in_m = gate.radius_m + self.settings.entry_margin_m
        if event.visit_code:
            visit = self._visits.get(event.visit_code)
            if visit is None and event.visit_code in self._gone:
                self._exit_after_close(event)
                return
            if visit is None:
                self._problem('exit_without_entry', f'{event.event_id}: visit {event.visit_code} never entered')
                return
            track, _ = self._tracks.nearest(gate.x, gate.y, event.stamp_ns, gate.radius_m * 2, margin, visit.code,
                                            came_in_m=came_in_m)
        else:
            track, code = self._tracks.nearest(gate.x, gate.y, event.stamp_ns, gate.radius_m, margin, None,
                                               _AS_NEAR_M, came_in_m)
            visit = self._visits.get(code) if track else None
            if visit is None:
                self._problem('unresolved_exit', f'{event.event_id}: no shopper with a visit at gate {gate.id}')
                self._unresolved_exits.append(event)
                return
        if visit.closed_ns is not None:
            self._exit_after_close(event)
            return
        if track and not event.visit_code:
            self._doubt_walk_out(visit, track, event)
        if track:
            self._tracks.mark_exited(track)
        self._close(visit, event.stamp_ns)

    def _doubt_walk_out(self, visit: _Visit, track_id: str, event: GateInput) -> None:
        """A walk-out is as sure as the tracker was of who left: if it was somebody
        else's, this visit's shopper shops on after its receipt. Measured on 620 walk-outs
        of held-out, fresh and suite scenarios with vision: 9 of the 46 the tracker was less than
        0.5 sure of closed a visit whose shopper was still inside, 6 of the 574 others."""
        margin = int(self.settings.window_margin_s * NS)
        windows = self._tracks.windows(event.stamp_ns - margin, event.stamp_ns + margin)
        open_people = {code: v.people_inside for code, v in self._visits.items()
                       if v.open_during(event.stamp_ns, event.stamp_ns)}
        confidence = self._tracks.sureness(track_id, event.stamp_ns, margin)
        doubt = walk_out_doubt(confidence, visit.code, windows, open_people, self.settings)
        visit.exit_doubt = 1.0 - (1.0 - visit.exit_doubt) * (1.0 - doubt)
        if doubt > 1.0 - receipts.SURE:     # in doubt as a change is: the reviewer is told
            visit.exit_notes.append(f'walk-out {event.event_id} at gate {event.gate_id}: the tracker was '
                                    f'{confidence:.2f} sure who left; {doubt:.2f} that it was somebody else')

    def _check_late(self, event: GateInput) -> None:
        """A gate event stamped before changes fusion has already decided (the gate was
        restarted and sent it late): those changes were weighed without it, so its visit
        and every visit they may be goes to review."""
        if self._decided_until is None or event.stamp_ns >= self._decided_until:
            return
        codes = {event.visit_code} | {c.visit_code for change in self._changes if change.end_ns >= event.stamp_ns
                                      for c in change.visits}
        detail = (f'gate {event.gate_id} sent {event.event_id} late: changes up to '
                  f'{(self._decided_until - event.stamp_ns) / NS:.1f} s after it were decided without it')
        for code in sorted(codes):
            visit = self._visits.get(code)
            if visit is not None and not visit.receipt_issued:
                visit.reasons.append(Reason(SENSOR_STALE, event.event_id, detail))
        self._problem('late_gate_event', detail)

    def _exit_after_close(self, event: GateInput) -> None:
        """Somebody else left carrying (or tapping) the code of a visit gone already:
        whose walk-out it was is settled as for one nobody with a visit was seen at."""
        self._problem('exit_after_close', f'{event.event_id}: visit {event.visit_code} has left already')
        self._unresolved_exits.append(event)

    def _close(self, visit: _Visit, stamp_ns: int) -> None:
        visit.exits.append(stamp_ns)
        if len(visit.exits) >= visit.group_size:
            visit.closed_ns = stamp_ns

    def _settle_unresolved_exits(self, watermark: int) -> None:
        """Ties each walk-out nobody with a visit was seen at, once unseen_exit_s has
        passed, to the open visit no track has carried since (the one seen last closest
        to it). When every open visit was seen after it (a code rode on somebody else),
        it waits for the first visit whose code then vanishes for unseen_exit_s: every
        walk-out closes somebody, so every visit gets a receipt."""
        wait, margin = int(self.settings.unseen_exit_s * NS), int(self.settings.window_margin_s * NS)
        still = []
        for event in self._unresolved_exits:
            if watermark < event.stamp_ns + wait:
                still.append(event)
                continue
            seen = {code: self._tracks.code_seen.get(code, visit.entry_ns) for code, visit in self._visits.items()
                    if visit.closed_ns is None and visit.entry_ns <= event.stamp_ns}
            unseen = sorted((abs(stamp - event.stamp_ns), code) for code, stamp in seen.items()
                            if stamp <= event.stamp_ns + margin)
            vanished = sorted((stamp, code) for code, stamp in seen.items() if stamp <= watermark - wait)
            if unseen:
                code, detail = unseen[0][1], 'not seen since'
            elif vanished:
                code, detail = vanished[0][1], f'seen after it, then not for {self.settings.unseen_exit_s:g} s'
            else:
                still.append(event)
                continue
            visit = self._visits[code]
            visit.reasons.append(Reason(UNRESOLVED_EXIT, '', f'walk-out {event.event_id} at gate {event.gate_id}: '
                                        f'nobody with a visit seen there; {visit.code} {detail}'))
            self._close(visit, max(event.stamp_ns, seen[code]))
        self._unresolved_exits = still

    # -- outputs -------------------------------------------------------------------

    def _receipt(self, visit: _Visit, stale: set, tracker_stale: bool) -> ReceiptOut:
        self._confirm_identities(visit.closed_ns)
        solution = self._solve()
        cart = {sku: n for sku, n in solution.cart(visit.code).items() if n > 0}
        changes = receipts.doubts_of(visit.code, solution, self.store, self._cameras_of_shelf)
        doubts = [d for d in changes if d.reason_code]
        reasons = list(visit.reasons)
        for shelf_id in sorted(stale):
            reasons.append(Reason(SENSOR_STALE, '', f'shelf {shelf_id} stopped reporting'))
        if tracker_stale:
            reasons.append(Reason(SENSOR_STALE, '', 'the tracker stopped reporting positions'))
        # A walk-out that was somebody else's leaves at least one line wrong: the
        # shopper's takes after it.
        cost = (expected_cost(cart, [(p, {s: n for s, n in c.items() if n > 0})
                                     for p, c in solution.cart_probabilities(visit.code)],
                              self._prices, self.store.review, solution.dropped(visit.code))
                + visit.exit_doubt * self.store.review.wrong_line_cents)
        # Priced at the exit: the promotions open when the shopper left.
        priced = receipts.priced(self.store, cart, receipts.weighed_grams(solution, self.store).get(visit.code, {}),
                                 visit.closed_ns, lambda sku, n: solution.line_probability(visit.code, sku, n))
        lines = []
        for line in priced.lines:
            if line.age_restricted:
                line = replace(line, id_verified=_verified(visit, line.sku, visit.closed_ns))
                if not line.id_verified:
                    reasons.append(_id_reason(visit, line.sku))
            lines.append(line)
        unexplained = any(d.reason_code in receipts.UNEXPLAINED for d in doubts)
        status = NEEDS_REVIEW if reasons or unexplained or cost > self.store.review.cost_cents else FINAL
        if status == NEEDS_REVIEW:
            reasons += receipts.reasons_of(doubts, visit.code)
            reasons += [Reason(LOW_CONFIDENCE, '', note) for note in visit.exit_notes]
            if not reasons:
                reasons.append(Reason(LOW_CONFIDENCE, '', f'expected cost of a wrong receipt {cost:.0f} cents'))
        if status == FINAL or not doubts or visit.reasons:
            # The reviewer sees every change the visit made; a FINAL receipt carries
            # them too, for a dispute of it to show (fusion_node sends them, no clips).
            doubts = changes
        visit.receipt_issued = True
        receipt = ReceiptOut(
            receipt_id=f'{self.store.store_id}-{visit.code}', store_id=self.store.store_id,
            visit_code=visit.code, entry_gate_id=visit.entry_gate_id, entry_ns=visit.entry_ns,
            exit_ns=visit.closed_ns, lines=tuple(lines), savings=priced.savings,
            savings_cents=priced.savings_cents, subtotal_cents=priced.subtotal_cents, tax_cents=priced.tax_cents,
            total_cents=priced.subtotal_cents + priced.tax_cents, status=status, reasons=tuple(reasons),
            confidence=round(solution.exact_probability(visit.code) * (1.0 - visit.exit_doubt), 3),
            doubts=tuple(dict.fromkeys(doubts)), expected_cost_cents=round(cost, 1))
        self._settle_finished_changes()
        self._forget_finished_visits(visit.closed_ns)
        return receipt

    # -- bookkeeping ---------------------------------------------------------------

    def _first_time(self, source: str, event_id: str, counter: str) -> bool:
        if event_id in self._seen_events:
            self._problem(counter, f'{event_id} seen before')
            return False
        self._seen_events.add(source, event_id)
        return True

    def _forget_finished_visits(self, now_ns: int) -> None:
        """Forgets the visits with receipts that no unsettled change names, with their
        carts and when their codes were last seen; keeps their codes GONE_CODES_KEPT_NS."""
        named = {c.visit_code for change in self._changes for c in change.visits}
        finished = [v for v in self._visits.values() if v.receipt_issued and v.code not in named]
        for visit in finished:
            del self._visits[visit.code]
            self._gone[visit.code] = visit.closed_ns
        if finished:
            self._settled = self._settled.without_carts([v.code for v in finished])
            self._tracks.code_seen = {c: t for c, t in self._tracks.code_seen.items() if c in self._visits}
        for code, closed_ns in list(self._gone.items()):
            if closed_ns >= now_ns - GONE_CODES_KEPT_NS:
                break
            del self._gone[code]

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _problem(self, counter: str, message: str) -> None:
        self.problems.append((counter, message))

    def open_visits(self) -> list:
        return [code for code, v in self._visits.items() if not v.receipt_issued]

    # -- restarts (jwo_nodes.core.fusion.journal) ----------------------------------

    def mark_restarted(self, down_since_ns: int, now_ns: int) -> list:
        """Fusion was down from ``down_since_ns`` (its last input) to ``now_ns``, wall
        clock: every visit still waiting for its receipt goes to review, since what
        happened meanwhile (positions above all) is lost; and a shelf's silence counts
        from now, not across the outage. Returns the codes of the visits marked."""
        detail = (f'fusion was down {(now_ns - down_since_ns) / NS:.1f} s (wall clock): '
                  'evidence from then may be missing')
        marked = []
        for visit in self._visits.values():
            if visit.receipt_issued or any(r.code == FUSION_RESTARTED for r in visit.reasons):
                continue
            visit.reasons.append(Reason(FUSION_RESTARTED, '', detail))
            marked.append(visit.code)
        self._shelf_wall = dict.fromkeys(self._shelf_wall, now_ns)
        self._gate_wall = dict.fromkeys(self._gate_wall, now_ns)
        self._positions_wall = now_ns
        return marked

    def _sensor_restarted(self, change: ChangeInput) -> None:
        """A change a weight sensor found after its restart: any visit inside may have
        made it while the sensor was down, so each goes to review with it (it is not
        attributed: its stamps are those of the restart)."""
        deltas = ', '.join(f'{d:+.0f} g on {b}' for b, d in zip(change.bin_ids, change.delta_grams))
        for visit in self._visits.values():
            if not visit.receipt_issued:
                visit.reasons.append(Reason(SENSOR_RESTARTED, change.event_id,
                                            f'shelf {change.shelf_id} restarted and found {deltas}'))
        self._problem('sensor_restarted', f'{change.event_id}: {deltas} while shelf {change.shelf_id} was down')

    # -- saved state (jwo_nodes.core.fusion.journal) -------------------------------

    def saved_state(self) -> bytes:
        """Everything the core's future depends on (not what the store config gives).
        A pickle: read back only by the same code, from fusion's own state folder."""
        return pickle.dumps({name: value for name, value in vars(self).items() if name not in _FROM_CONFIG},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def load_state(self, saved: bytes) -> None:
        """Becomes the core whose saved_state this is (on this store config)."""
        self.__dict__.update(pickle.loads(saved))
        self._looks.catalogue = _catalogue_colours(self.store)
        self.problems = []


def _catalogue_colours(store: StoreConfig) -> dict:
    """sku -> (blue, green) of the products whose packaging colour the config gives."""
    return {sku: p.colour for sku, p in store.products.items() if p.colour}


def _verified(visit: _Visit, sku: str, stamp_ns: int) -> bool:
    """Whether the latest decision on the visit's ID check of ``sku`` stamped by
    ``stamp_ns`` confirmed the ID."""
    check = visit.id_checks.get(sku)
    decision = check.verdict_by(stamp_ns) if check is not None else None
    return decision is not None and decision.verdict is IdVerdict.VERIFIED


def _id_reason(visit: _Visit, sku: str) -> Reason:
    """Why an age-restricted line of a visit was not verified by its exit. A refused
    one stays on the receipt: the reviewer settles it (the associate took it back)."""
    check = visit.id_checks.get(sku)
    if check is None:
        return Reason(ID_NOT_VERIFIED, '', f'{sku}: no ID check was requested before the exit')
    decision = check.verdict_by(visit.closed_ns)
    if decision is None:
        detail = f'{sku}: no associate confirmed the ID by the exit'
    else:
        detail = f'{sku}: associate {decision.associate_id} refused the ID'
    return Reason(ID_NOT_VERIFIED, check.request.event_id, detail)
