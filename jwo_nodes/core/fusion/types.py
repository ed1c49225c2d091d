"""What fusion takes in and gives out, and its settings: plain frozen values, no rclpy."""
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from jwo_nodes.core.held_item import HeldItem

NS = 1_000_000_000
# The depth of the transient-local history that re-sends events to a restarted fusion
# (jwo_nodes.ros_common.DURABLE_EVENT_QOS): ids older than that never come back.
RESENT_DEPTH = 1000
FINAL, NEEDS_REVIEW = 'FINAL', 'NEEDS_REVIEW'
# The source under which ID-check decisions' ids are remembered (as a gate's or a shelf's).
ID_DECISIONS = 'id_decisions'

# Review reason codes (the same strings as jwo/ReviewReason constants).
AMBIGUOUS_ATTRIBUTION = 'ambiguous_attribution'
NO_CANDIDATE = 'no_candidate'
UNIDENTIFIED_ITEM = 'unidentified_item'
AMBIGUOUS_PRODUCT = 'ambiguous_product'
UNMATCHED_PUT_BACK = 'unmatched_put_back'
SENSOR_STALE = 'sensor_stale'
UNRESOLVED_EXIT = 'unresolved_exit'
LOW_CONFIDENCE = 'low_confidence'
FUSION_RESTARTED = 'fusion_restarted'
SENSOR_RESTARTED = 'sensor_restarted'
ID_NOT_VERIFIED = 'id_not_verified'


@dataclass(frozen=True)
class FusionSettings:
    # A shopper standing this close to a bin's standing point is as likely as anybody
    # to have reached into it ...
    reach_free_m: float = 0.25
    # ... and one farther away is less likely by a normal fall-off of this spread.
    reach_sigma_m: float = 0.2
    # Tracks farther than this from a bin are no candidates for its changes.
    candidate_radius_m: float = 2.5
    # Positions this long before and after a change count as "at the shelf".
    window_margin_s: float = 0.5
    # A hand this close to a bin's shelf point is in the bin (hands come placed over the
    # floor under them).
    hand_zone_m: float = 0.3
    # ... and counts by a normal fall-off of this spread from the shelf point: in the
    # real-store layout the next facing is 0.1-0.3 m away, and on its scenarios the
    # hand of the shopper who made a change lay a median 0.056 m from the facing's
    # centre along the shelf (90 % within 0.147 m), other hands in the zone 0.138 m.
    hand_sigma_m: float = 0.12
    # Where hands were seen in the bin, a candidate whose hand was never there keeps
    # this much of the weight of one whose hand was there all the window.
    hand_floor: float = 0.02
    # A hand in the bin for this share of the window counts as there all along (the
    # reach is shorter than the window, and frames miss hands).
    hand_full_share: float = 0.6
    # A track whose hand was in the bin for this share of the window, more than any
    # other track's (or for HAND_SURE_SHARE, evidence.py), reached into it: it was not
    # walking past, however far its position wandered (in a crowd a track jumps
    # between neighbours' detections while its shopper stands and reaches).
    hand_reached: float = 0.1
    # The weight of "somebody nobody tracked" (staff, a shopper the cameras missed)
    # against a candidate standing at the bin with a sure identity.
    background_weight: float = 0.002
    # Strangers (staff, somebody the cameras never saw) that may have made a change
    # nobody tracked was near, against each person of an open visit the tracks do not
    # account for.
    stranger_weight: float = 0.1
    # Prior weight of taking stray units of another product lying on a bin (left at
    # the front, the first thing a hand meets), against the bin's own product.
    stray_prior: float = 1.0
    # Prior weight of a put-back on a bin of another product, against its own bin.
    elsewhere_prior: float = 0.15
    # ... and on the facing beside one of its own (StoreConfig.beside_home), where a
    # shopper who changed their mind at the shelf leaves it: on 592 put-backs of the
    # real-store presets that more than one product fits, 1.0 against 0.15 lowered the
    # log loss of the true product 0.146 -> 0.113 (README "How fusion decides").
    beside_prior: float = 1.0
    # Weight of a track's shopper making a change while making another on another bin
    # (a hand in each), against one change at a time.
    one_hand_share: float = 0.1
    # Weight of two shoppers whose hands were both in a bin making its change together
    # (one took while the other put back, or both took), against one of them alone: the
    # load cell sees only the sum. On the real-store presets and held-out seeds 501-508
    # (36 scenarios), 4 changes were two shoppers' at once; of the 28 whose evidence was
    # captured, 3 such against 121 one shopper's with a second track's hand in the bin
    # (at least hand_reached of the window).
    two_hands_prior: float = 0.03
    # The probability that a track carries the right visit code when the tracker's
    # confidence in it is 0 (it rises linearly to 1 at confidence 1). Fitted (log loss)
    # to the track following the maker of each take and put-back, suite and held-out
    # hard 2,477 (best 0.75-0.8), real-store layout 2,225 (best 0.85); see
    # identity_belief.
    identity_floor: float = 0.85
    # Hypotheses kept while solving. What the beam drops is lost to the probabilities of
    # what it keeps, so a narrow beam issues wrong receipts as sure: on 22 hard scenarios
    # not in the suite (vision, seeds 201-222), 22 items wrongly charged at 32, 15 at 64,
    # 14 at 128 (README "How fusion decides").
    beam_width: int = 64
    # Changes of visits that have their receipts stay in the hypotheses while their
    # explanation is unsure (what lies on a bin), up to this many, the oldest settled first.
    max_unsure_changes: int = 12
    # A sensor silent for this long (wall clock) no longer holds decisions back.
    stale_after_s: float = 3.0
    # ... and the tracker, whose frames may lag behind on a busy machine, this long:
    # then its visits are decided without it, and go to review.
    tracker_stale_after_s: float = 10.0
    # Position history kept per track. A change's evidence is read once, when it comes
    # in; the oldest that can still come is one a sensor held while fusion restarted
    # (seconds), and positions are not replayed after an outage, so a minute is ample.
    # It sets fusion's memory and the size of its journal's state record.
    history_s: float = 60.0
    # A walk-out that no shopper with a visit was seen at (the tracker lost who it
    # was) closes, this long after it, the open visit no track has carried since --
    # the one seen last closest to the walk-out -- for review, rather than never.
    unseen_exit_s: float = 15.0
    # A track first seen this recently, within a gate's radius plus entry_margin_m of
    # it (the tracker's gate_margin_m), is coming in there, not leaving; one first seen
    # farther in is a shopper the tracker found again.
    just_entered_s: float = 3.0
    entry_margin_m: float = 0.6


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
    # Seen by a weight sensor after its restart (its level differs from the one it
    # saved, or it cannot tell): the change happened while it was down, at an unknown
    # moment, so its stamps say nothing about who made it.
    after_restart: bool = False


@dataclass(frozen=True)
class TrackInput:
    track_id: str
    visit_code: str
    x: float
    y: float
    # The track's hand on the floor plane (x, y) when the cameras saw one.
    hand: Optional[tuple] = None
    # How sure the tracker is that the track is still the person its visit code was
    # given to (1: certain).
    confidence: float = 1.0
    # What that hand held (jwo_nodes.core.held_item.HeldItem), when read.
    hand_item: Optional[HeldItem] = None


@dataclass(frozen=True)
class Line:
    sku: str
    name: str
    # Units (for a product sold by weight: the pieces counted).
    quantity: int
    # Per unit, or per kilogram when sold_by_weight.
    unit_price_cents: int
    # Before savings.
    line_total_cents: int
    # The probability that this line is right (product and quantity, on this visit).
    confidence: float
    sold_by_weight: bool = False
    # What the pieces of a product sold by weight weighed (0 for the others).
    grams: int = 0
    age_restricted: bool = False
    # age_restricted and an associate confirmed the shopper's ID (see IdCheck).
    id_verified: bool = False


@dataclass(frozen=True)
class Saving:
    """One promotion applied to a cart (jwo_nodes.core.pricing.SavingLine)."""
    promotion_id: str
    name: str
    skus: tuple
    cents: int


@dataclass(frozen=True)
class Reason:
    code: str
    event_id: str
    detail: str


@dataclass(frozen=True)
class ProductCandidate:
    """One product a weight change may have been, for a reviewer."""
    sku: str
    quantity: int
    unit_grams: float
    probability: float


@dataclass(frozen=True)
class Doubt:
    """One weight change a reviewer must settle."""
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
    candidate_products: tuple = ()
    # The visit the most likely explanation gave it to (NOBODY: somebody unknown).
    proposed_visit: str = ''
    # TrackPath of each track that stood within reach over the window.
    tracks: tuple = ()


@dataclass(frozen=True)
class TrackPath:
    """Where one track went over a change's window, as a reviewer sees it on the floor plan."""
    track_id: str
    visit_code: str        # the code it carried ('' for none)
    stamps_ns: tuple
    xs: tuple
    ys: tuple


class IdVerdict(Enum):
    VERIFIED = 'verified'
    REFUSED = 'refused'


@dataclass(frozen=True)
class IdDecisionInput:
    """An associate's answer to an ID-check request (jwo/IdCheckDecision)."""
    decision_id: str
    visit_code: str
    sku: str
    verdict: IdVerdict
    associate_id: str
    stamp_ns: int


@dataclass(frozen=True)
class IdCheckRequestOut:
    """A visit's cart holds an age-restricted product for the first time: an associate
    must check the shopper's ID (jwo/IdCheckRequest)."""
    visit_code: str
    # The change after which the cart first held it (its end stamp), and its shelf.
    event_id: str
    shelf_id: str
    sku: str
    name: str
    stamp_ns: int


@dataclass
class IdCheck:
    """One age-restricted SKU of a visit: its request, and the associates' decisions
    on it in arrival order (the latest stamped by the exit counts)."""
    request: IdCheckRequestOut
    decisions: list = field(default_factory=list)   # IdDecisionInput

    def verdict_by(self, stamp_ns: int):
        """The latest decision stamped at or before ``stamp_ns``; None without one."""
        return max((d for d in self.decisions if d.stamp_ns <= stamp_ns), key=lambda d: d.stamp_ns, default=None)


@dataclass(frozen=True)
class CartSnapshot:
    visit_code: str
    revision: int
    cause_event_id: str
    stamp_ns: int
    lines: tuple
    savings: tuple         # Saving
    savings_cents: int
    # The lines less the savings, before tax.
    total_cents: int
    # The ID checks this cart raised: restricted products it holds for the first time.
    id_checks: tuple = ()     # IdCheckRequestOut


@dataclass(frozen=True)
class ReceiptOut:
    receipt_id: str
    store_id: str
    visit_code: str
    entry_gate_id: str
    entry_ns: int
    exit_ns: int
    lines: tuple
    savings: tuple         # Saving
    savings_cents: int
    # The lines less the savings.
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    status: str
    reasons: tuple
    confidence: float
    # Doubt: what a reviewer of a NEEDS_REVIEW receipt is shown; of a FINAL one, every
    # change behind its lines (reason '' where sure), for a dispute of it.
    doubts: tuple
    # What a wrong FINAL receipt would cost, expected, against the store's review cost.
    expected_cost_cents: float = 0.0


@dataclass
class Outputs:
    carts: list = field(default_factory=list)
    receipts: list = field(default_factory=list)


class SeenIds:
    """Event ids seen, the newest RESENT_DEPTH per source (a shelf or a gate)."""

    def __init__(self, by_source: Optional[dict] = None):
        self._by_source = {source: deque(ids) for source, ids in (by_source or {}).items()}
        self._ids = {event_id for ids in self._by_source.values() for event_id in ids}

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, source: str, event_id: str) -> None:
        ids = self._by_source.setdefault(source, deque())
        ids.append(event_id)
        self._ids.add(event_id)
        if len(ids) > RESENT_DEPTH:
            self._ids.discard(ids.popleft())

    def ids(self) -> frozenset:
        return frozenset(self._ids)

    def document(self) -> dict:
        return {source: list(ids) for source, ids in self._by_source.items()}
