"""The shoppers' positions as the tracker published them: one history per track, each
sample with the visit code and confidence it had then (a code the tracker moves to
another track goes with it), and its identity epoch: who a track is holds from one
change to the next only while nothing put it in doubt in between."""
import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

from jwo_nodes.core.fusion.types import NS
from jwo_nodes.core.held_item import HeldItem

# The tracker lowers a track's confidence when its identity is put in doubt (two tracks
# close enough to swap: x0.85 until their colours settle it, a re-acquisition: x0.75,
# for good); coasting lowers it
# for a while, by at most 5 % a frame at 10 Hz. A fall larger than this, or a gap in the
# track's positions longer than COASTED_S (it was lost and found again), starts a new
# identity epoch.
DOUBT_FALL = 0.88
COASTED_S = 1.0
# How long after a track was last seen what it became sure of is kept: longer than a
# change of a visit waits for its receipt.
CONFIRMATIONS_KEPT_S = 1800.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One track at one stamp."""
    stamp_ns: int
    x: float
    y: float
    hand: Optional[tuple]
    visit_code: str
    confidence: float
    epoch: int = 0
    hand_item: Optional[HeldItem] = None


@dataclass(frozen=True)
class TrackWindow:
    """A track's samples around a change."""
    track_id: str
    samples: tuple

    @property
    def visit_code(self) -> str:
        """The code the track carried for most of the window ('' for none)."""
        codes = [s.visit_code for s in self.samples]
        return max(dict.fromkeys(codes), key=codes.count)

    @property
    def identity(self) -> tuple:
        """(track id, epoch) of most of the window: changes with one identity were made
        by one person, whoever that is."""
        epochs = [s.epoch for s in self.samples]
        return self.track_id, max(dict.fromkeys(epochs), key=epochs.count)

    @property
    def confidence(self) -> float:
        """The tracker's lowest confidence in the track over the window."""
        return min(s.confidence for s in self.samples)

    def reach_distance(self, x: float, y: float, start_ns: int, end_ns: int, reached: bool = False) -> float:
        """How near a point the track stood while a change happened: the distance it was
        within for at least a third of the window (someone who reached and then walked
        off stood there long enough). A track that moved more than half a metre while
        the weight changed (start to end) was walking past, not reaching: it counts a
        metre farther, unless its hand was seen to reach into the bin (``reached``)."""
        distances = sorted(math.hypot(s.x - x, s.y - y) for s in self.samples)
        distance = distances[(len(distances) - 1) // 3]
        during = [s for s in self.samples if start_ns <= s.stamp_ns <= end_ns]
        return distance if reached or _spread_within(during, 0.5) else distance + 1.0

    def hand_share(self, x: float, y: float, zone_m: float, sigma_m: float = 0.0) -> float:
        """The share of the window's samples with the hand within zone_m of a point,
        each counted by a normal fall-off of sigma_m from it (in full without one)."""
        inside = 0.0
        for s in self.samples:
            if s.hand is None:
                continue
            d = math.hypot(s.hand[0] - x, s.hand[1] - y)
            if d <= zone_m:
                inside += math.exp(-0.5 * (d / sigma_m) ** 2) if sigma_m > 0 else 1.0
        return inside / len(self.samples)


@dataclass(slots=True)
class _Confirmations:
    """A track's confidence in one identity epoch and code, by its record highs."""
    seen_ns: int            # newest stamp of the track in it
    highs: list             # (stamp, confidence), each higher than the one before

    def add(self, stamp_ns: int, confidence: float) -> None:
        self.seen_ns = stamp_ns
        if confidence > self.highs[-1][1]:
            self.highs.append((stamp_ns, confidence))

    def until(self, stamp_ns: int) -> Optional[float]:
        i = bisect.bisect_right(self.highs, stamp_ns, key=lambda high: high[0])
        return self.highs[i - 1][1] if i else None


def _spread_within(samples: list, metres: float) -> bool:
    """Whether no two samples lie more than ``metres`` apart. Their bounding box
    settles it without comparing pairs unless only its diagonal exceeds the limit
    (called for every track near every change, while the shopper waits for the cart)."""
    if not samples:
        return True
    xs, ys = [s.x for s in samples], [s.y for s in samples]
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    if max(width, height) > metres:
        return False
    if math.hypot(width, height) <= metres:
        return True
    return all(math.hypot(a.x - b.x, a.y - b.y) <= metres for a in samples for b in samples)


class TrackBook:
    def __init__(self, history_s: float, just_entered_s: float):
        self._history_ns = int(history_s * NS)
        self._just_entered_ns = int(just_entered_s * NS)
        self._histories = {}          # track id -> deque of Sample
        self._exited = set()
        self.code_seen = {}           # visit code -> newest stamp a track carried it
        self._swept_ns = None         # stamp of the last sweep of tracks gone for good
        self._kept_from_ns = math.inf  # samples from this stamp on are kept, however old
        # (track id, epoch, code) -> _Confirmations: how sure the tracker became, later
        # in an identity epoch, that the track carried the right code.
        self._confirmations = {}
        # (track id, epoch) -> [(stamp, code)] each time the code it carried changed.
        self._codes = {}

    def keep_from(self, stamp_ns: Optional[int]) -> None:
        """Keeps the samples from this stamp on even past history_s (None: from the
        oldest): a change still to come may be weighed by them."""
        self._kept_from_ns = stamp_ns if stamp_ns is not None else -math.inf

    def add(self, track_id: str, stamp_ns: int, x: float, y: float, hand: Optional[tuple], visit_code: str,
            confidence: float, hand_item: Optional[HeldItem] = None) -> None:
        """One published position of a track, in its identity epoch."""
        if visit_code:
            self.code_seen[visit_code] = stamp_ns
        history = self._histories.setdefault(track_id, deque())
        epoch = 0
        if history:
            last = history[-1]
            epoch = last.epoch + (confidence < DOUBT_FALL * last.confidence
                                  or stamp_ns - last.stamp_ns > COASTED_S * NS)
        sample = Sample(stamp_ns, x, y, hand, visit_code, confidence, epoch, hand_item)
        if not history or history[-1].epoch != epoch or history[-1].visit_code != visit_code:
            self._codes.setdefault((track_id, epoch), []).append((stamp_ns, visit_code))
        history.append(sample)
        key = (track_id, epoch, visit_code)
        confirmations = self._confirmations.get(key)
        if confirmations is None:
            self._confirmations[key] = _Confirmations(stamp_ns, [(stamp_ns, confidence)])
        else:
            confirmations.add(stamp_ns, confidence)
        horizon = min(sample.stamp_ns - self._history_ns, self._kept_from_ns)
        while history and history[0].stamp_ns < horizon:
            history.popleft()
        if self._swept_ns is None or self._swept_ns < horizon:
            self._sweep(horizon)
            self._swept_ns = sample.stamp_ns

    def _sweep(self, horizon_ns: int) -> None:
        """Forgets the tracks not seen since the horizon (a store sees thousands of
        tracks a day): what a trimmed history would hold of them is nothing."""
        gone = [track_id for track_id, history in self._histories.items() if history[-1].stamp_ns < horizon_ns]
        for track_id in gone:
            del self._histories[track_id]
            self._exited.discard(track_id)
        forgotten = horizon_ns - int(CONFIRMATIONS_KEPT_S * NS)
        self._confirmations = {key: c for key, c in self._confirmations.items() if c.seen_ns >= forgotten}
        self._codes = {key: codes for key, codes in self._codes.items()
                       if (*key, codes[-1][1]) in self._confirmations}

    def surest(self, track_id: str, epoch: int, visit_code: str, until_ns: int) -> Optional[float]:
        """The highest confidence the tracker gave a track in one identity epoch while
        it carried a code, up to a stamp (None: not seen so, or long forgotten). Nothing
        put who the track is in doubt within the epoch, so a re-identification later
        in it vouches for the changes it made before."""
        confirmations = self._confirmations.get((track_id, epoch, visit_code))
        return confirmations.until(until_ns) if confirmations is not None else None

    def code_after(self, track_id: str, epoch: int, visit_code: str, until_ns: int) -> Optional[str]:
        """The code a track carried last in an identity epoch, by a stamp, where the
        tracker moved codes on or off it within the epoch after it carried
        ``visit_code`` (re-identification gave an anonymous track its visitor's code,
        or took a code to the shopper who looks like its visitor); None where it did
        not. Nothing put who the track is in doubt within the epoch, so that is who it
        followed all along."""
        codes = [code for stamp, code in self._codes.get((track_id, epoch), ()) if stamp <= until_ns]
        if visit_code not in codes or codes.index(visit_code) == len(codes) - 1:
            return None
        return codes[-1]

    def sureness(self, track_id: str, stamp_ns: int, margin_ns: int) -> float:
        """How sure the tracker was, by a stamp, that a track carried the right code: the
        highest confidence it gave the track in the identity epoch of its position at
        the stamp, up to the stamp (as a change made in that epoch is weighed); 0 where
        the track has no position within margin_ns of the stamp."""
        sample = _sample_at(self._histories.get(track_id, ()), stamp_ns, margin_ns)
        if sample is None:
            return 0.0
        surest = self.surest(track_id, sample.epoch, sample.visit_code, stamp_ns)
        return max(sample.confidence, surest or 0.0)

    def mark_exited(self, track_id: str) -> None:
        self._exited.add(track_id)

    def windows(self, start_ns: int, end_ns: int) -> list:
        """Every track seen between the stamps, as TrackWindows."""
        found = []
        for track_id, history in self._histories.items():
            if not history or history[-1].stamp_ns < start_ns:
                continue
            # From the newest back: a change is recent, its window near the end.
            newest_first = []
            for sample in reversed(history):
                if sample.stamp_ns < start_ns:
                    break
                if sample.stamp_ns <= end_ns:
                    newest_first.append(sample)
            if newest_first:
                found.append(TrackWindow(track_id, tuple(reversed(newest_first))))
        return found

    def codes_seen_between(self, start_ns: int, end_ns: int) -> set:
        return {s.visit_code for window in self.windows(start_ns, end_ns) for s in window.samples
                if s.visit_code}

    def nearest(self, x: float, y: float, stamp_ns: int, radius: float, margin_ns: int,
                visit_code: Optional[str], as_near_m: float = 0.25, came_in_m: float = math.inf) -> tuple:
        """(track id, its visit code) of the track with a visit standing nearest the
        point at the stamp, if within radius, else (None, None). Someone who has just
        come in (a track first seen within came_in_m of the point) is taken only when
        nobody else is there. Without ``visit_code`` (a walk-out) the nearest track of
        all decides: when it has no code (the tracker lost who it is), nobody with a
        visit is taken unless standing as near."""
        ranked = []
        for track_id, history in self._histories.items():
            if track_id in self._exited:
                continue
            sample = _sample_at(history, stamp_ns, margin_ns)
            if sample is None or (visit_code is not None and sample.visit_code != visit_code):
                continue
            distance = math.hypot(sample.x - x, sample.y - y)
            if distance <= radius:
                first = history[0]
                just_entered = (first.stamp_ns > stamp_ns - self._just_entered_ns
                                and math.hypot(first.x - x, first.y - y) <= came_in_m)
                ranked.append((just_entered, distance, track_id, sample.visit_code))
        ranked.sort()
        coded = [r for r in ranked if r[3]]
        if not coded or (not ranked[0][3] and coded[0][:2] > (ranked[0][0], ranked[0][1] + as_near_m)):
            return None, None
        return coded[0][2:]


def _sample_at(history, stamp_ns: int, margin_ns: int) -> Optional[Sample]:
    stamps = [s.stamp_ns for s in history]
    i = bisect.bisect_left(stamps, stamp_ns)
    nearby = [history[j] for j in (i - 1, i) if 0 <= j < len(history)]
    nearby = [s for s in nearby if abs(s.stamp_ns - stamp_ns) <= margin_ns]
    return min(nearby, key=lambda s: abs(s.stamp_ns - stamp_ns)) if nearby else None
