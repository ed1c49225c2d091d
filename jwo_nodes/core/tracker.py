"""Multi-camera shopper tracking on the floor plane. Pure: no rclpy, no clocks.

Per time step (``Tracker.step``) the detections of every camera, already projected to
the floor through the camera's homography, are merged across overlapping cameras (one
shopper seen by two cameras is one point), matched to the tracks by the Hungarian
method on the distance to each track's constant-velocity Kalman prediction, and used to
update, start and lose tracks:

* a detection no track claims first tries to re-acquire a lost track (the nearest one
  it can have walked from since it was lost), otherwise starts a tentative track,
  confirmed after ``confirm_hits`` hits. A track started at a gate can take a visit
  code; one started elsewhere cannot (it is most likely a lost shopper or a false
  detection) until it is re-acquired by nobody — it stays anonymous.
* a track that misses is predicted on (coasting) and published for ``coast_publish_s``,
  then lost: kept out of sight for re-acquisition for ``keep_lost_s``, except at a gate,
  where it has left.
* ENTRY events (``add_entry``) give their visit code to the tracks started at that gate
  around the entry's stamp, as many as the group has people, in order of their start
  (not to one that looks like a shopper inside whom no track follows now: that is them
  coming back past the gate). A code whose track is lost, ends or goes out before its
  shopper's colours are learnt (a false start beside the person coming in, a leaver)
  passes to another anonymous track that started at the gate then.
* EXIT events (``add_exit``) mark the coded track at the gate as gone out; if it is
  still seen ``exit_grace_s`` later, that is somebody else (a shopper entering as
  another leaves looks like one track at the gate): the track ends and a new one starts
  there, which the entrant's ENTRY code can go to.
* identity is uncertain after a re-acquisition, after starting away from a gate, and
  after two tracks came close enough to swap; each lowers the track's confidence, the
  close pass until the tracks are clear again and the colours each then shows, against
  both before, settle it (encounter_* in TrackerSettings); coasting lowers it while it
  lasts. Colour confirming a track's code raises it again: to reid_identity
  for a code kept since the gate, to reid_moved_identity for one re-identification moved
  there (such codes are wrong more often); only once the track's encounters are
  settled, since until then its colour is the one it showed before the close pass.
* a hand detection goes to the published track nearest the feet of the shopper whose
  sleeve reaches it, where the camera saw whose that is; otherwise to the nearest
  published track within arm's reach.

Everything is decided from the stamps given: the same inputs give the same tracks.
"""
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from jwo_nodes.core import appearance as look
from jwo_nodes.core.config import Gate
from jwo_nodes.core.held_item import HeldItem

NS = 1_000_000_000
_INFEASIBLE = 1e6
_SAME_LOOK = 0.15   # colour distance within which two detections may be one person
_LEARNT = 3         # lone frames after which a track's or a visitor's colour is known


@dataclass(frozen=True)
class TrackerSettings:
    merge_radius_m: float = 0.5       # detections of two cameras this close are one shopper
    merge_same_look_m: float = 0.9    # ... and this close if their colours are alike
    match_radius_m: float = 1.0       # a detection this far from a track's prediction is not its
    accel_mps2: float = 2.0           # Kalman process noise: unmodelled acceleration
    measurement_sigma_m: float = 0.12
    confirm_hits: int = 2
    coast_publish_s: float = 1.0      # a track without detections is published this long
    keep_lost_s: float = 120.0        # and kept for re-acquisition this long
    reacquire_m: float = 1.2          # a lost track can be re-acquired this far away ...
    reacquire_mps: float = 0.6        # ... plus this much per second lost ...
    reacquire_max_m: float = 4.0      # ... up to this
    gate_margin_m: float = 0.6        # a track starting within gate radius + this started at the gate
    entry_before_s: float = 1.0       # tracks started this long before an ENTRY stamp can take it
    entry_after_s: float = 1.5        # ... or this long after (plus group_stagger_s per extra member)
    group_stagger_s: float = 0.5
    arm_reach_m: float = 1.1          # a hand belongs to the nearest track within this ...
    arm_track_s: float = 1.0          # ... before one started away from a gate less than this ago
    arm_owner_m: float = 0.4          # a hand whose sleeve was seen goes to the track this near its wearer
    same_hand_m: float = 0.3          # two cameras' hands this close are one
    exit_grace_s: float = 0.3         # a track still seen this long after its EXIT is someone else
    just_entered_s: float = 3.0       # an EXIT takes a track this young only if no other is at the gate
    # Appearance (jwo_nodes.core.appearance): a colour difference counts as this many
    # metres in matching; a lost track is not re-acquired by a detection that looks
    # more different than appearance_reject; colours are learnt from detections with
    # no other within appearance_alone_m, at appearance_rate per frame.
    appearance_weight_m: float = 1.0
    appearance_reject: float = 0.5
    appearance_alone_m: float = 0.8
    appearance_rate: float = 0.15
    # Re-identification: each visitor's colour is learnt from their first
    # reid_learn_frames lone frames after the code was given and then kept; a code
    # moves to the track that looks like its visitor (within reid_accept) when the
    # track holding it looks unlike them (beyond appearance_reject) or was lost.
    reid_learn_frames: int = 8
    reid_accept: float = 0.25
    reid_identity: float = 0.95       # identity of a track re-identified beyond doubt:
    reid_moved_identity: float = 0.7  # ... or of one whose code it took from another track:
    reid_margin: float = 0.3          # ... looking this much more like its visitor than any other
    # Two tracks that came this close may have swapped: each keeps encounter_doubt of
    # its identity until the colours it shows in encounter_frames lone frames after it
    # settle it. Looking more like its own colour before than like any other track it
    # may have swapped with, by encounter_margin or more, leaves encounter_settled (in
    # between, a share of the way from encounter_doubt); looking more like another,
    # encounter_swapped. Measured over 20 hard scenarios not in the suite (seeds
    # 701-720, 1,963 settled encounters whose shoppers stood clear before and after):
    # tracks swapped at 61 % of those that looked more like another, 12 % at margins
    # under 0.3, 5.5 % at 0.3-0.6, 1.1-1.5 % above (README "Vision").
    swap_radius_m: float = 0.45
    # ... and have to stand this far apart before coming close again is another
    # encounter: neighbours working one shelf side by side drift in and out of
    # swap_radius_m without ever standing clear, and that is one chance to swap, not
    # one per drift. Measured over 16 real-store scenarios not in the suite (seeds
    # 501-508): tracks swapped in 7 of 810 encounters that came close once before
    # standing 0.8 m apart, 2 of 271 that came close two times or more.
    swap_clear_m: float = 0.8
    encounter_doubt: float = 0.85
    encounter_frames: int = 5
    encounter_margin: float = 0.6
    encounter_settled: float = 0.99
    encounter_swapped: float = 0.4


@dataclass(frozen=True)
class FloorDetection:
    x: float
    y: float
    score: float = 1.0
    camera: str = ''
    appearance: Optional[tuple] = None   # jwo_nodes.core.appearance colour, if sampled
    item: Optional[HeldItem] = None      # what a hand holds, if read
    arm: Optional[tuple] = None          # a hand's: the feet of the shopper whose sleeve reaches it


@dataclass(frozen=True)
class TrackOutput:
    track_id: str
    visit_code: str
    x: float
    y: float
    confidence: float


@dataclass(frozen=True)
class HandOutput:
    track_id: str
    x: float
    y: float
    score: float
    item: Optional[HeldItem] = None
    # Whether a camera saw whose arm reached the hand (its sleeve), not only the
    # nearest track: such hands go to the right shopper more often.
    sleeve_seen: bool = False


@dataclass
class _Track:
    id: str
    state: np.ndarray            # x, y, vx, vy
    cov: np.ndarray
    born_ns: int
    updated_ns: int
    gate_id: str                 # gate it started at ('' elsewhere)
    hits: int = 1
    confirmed: bool = False
    lost: bool = False
    visit_code: str = ''
    identity: float = 1.0
    close_to: set = field(default_factory=set)
    encounters: list = field(default_factory=list)   # _Encounter, not settled yet
    exited_ns: Optional[int] = None  # stamp of the EXIT event that took this track's shopper out
    appearance: Optional[np.ndarray] = None
    appearance_n: int = 0
    code_moved: bool = False     # its code came by re-identification, not at the gate


@dataclass
class _Encounter:
    """A close pass of tracks that may have swapped who they follow, until the colours
    after it say whether they did."""
    own_before: np.ndarray       # the track's colour as it came close
    others_before: list          # the colours of the tracks it may have swapped with
    after: Optional[np.ndarray] = None    # mean colour of the lone frames since
    n: int = 0


@dataclass
class _Entry:
    gate_id: str
    stamp_ns: int
    visit_code: str
    people: int
    given: int = 0


@dataclass
class _Visitor:
    """One person a visit code was given to, as the tracker remembers them."""
    visit_code: str
    track: Optional[_Track]          # None: their track ended while they had not gone out
    entry: _Entry                    # the ENTRY that gave the code
    appearance: Optional[np.ndarray] = None
    n: int = 0
    orphaned_ns: Optional[int] = None


def merge_detections(detections: list, radius_m: float, same_look_radius_m: float = 0.0) -> list:
    """One point per shopper: detections of different cameras within radius_m merged
    (score-weighted mean), strongest first; two of one camera are never merged. Within
    same_look_radius_m they are merged too if their colours are alike (where two cameras'
    views meet, each places the feet differently). A merged point has the colour of its
    strongest detection that has one."""
    clusters = []   # [sum_w, sum_wx, sum_wy, cameras, best, appearance]
    for d in sorted(detections, key=lambda d: -d.score):
        best, best_distance = None, max(radius_m, same_look_radius_m)
        for cluster in clusters:
            cx, cy = cluster[1] / cluster[0], cluster[2] / cluster[0]
            distance = math.hypot(d.x - cx, d.y - cy)
            if distance > radius_m:
                unlike = look.clothes_distance(cluster[5], d.appearance)
                if unlike is None or unlike > _SAME_LOOK:
                    continue
            if distance <= best_distance and d.camera not in cluster[3]:
                best, best_distance = cluster, distance
        w = max(d.score, 1e-3)
        if best is None:
            clusters.append([w, w * d.x, w * d.y, {d.camera}, d.score, d.appearance])
        else:
            best[0] += w
            best[1] += w * d.x
            best[2] += w * d.y
            best[3].add(d.camera)
            best[4] = max(best[4], d.score)
            best[5] = best[5] or d.appearance
    return [FloorDetection(c[1] / c[0], c[2] / c[0], c[4], '+'.join(sorted(c[3])), c[5]) for c in clusters]


class Tracker:
    def __init__(self, gates: list, settings: TrackerSettings = TrackerSettings()):
        """``gates``: the store config's gates (id, x, y, radius_m)."""
        self.gates = list(gates)
        self.settings = settings
        self.tracks = []
        self._entries = []
        self._next_id = 1
        self._detections = []   # this step's merged detections
        self._visitors = []
        self.stamp_ns: Optional[int] = None
        self.counters = {name: 0 for name in (
            'steps', 'detections', 'merged', 'tracks_started_at_gate', 'tracks_started_elsewhere',
            'tracks_confirmed', 'tracks_lost', 'tracks_left', 'reacquired', 'visits_assigned',
            'entries_unfilled', 'close_encounters', 'hands', 'hands_unassigned', 'out_of_order',
            'exits_matched', 'tracks_split_at_exit', 'codes_moved', 'entry_codes_passed_on',
            'encounters_settled')}

    # -- inputs ----------------------------------------------------------------------

    def add_entry(self, gate_id: str, stamp_ns: int, visit_code: str, people: int = 1) -> None:
        """An ENTRY event: its code goes to the tracks that start at the gate then."""
        self._entries.append(_Entry(gate_id, stamp_ns, visit_code, max(1, people)))
        self._assign_entries()

    def add_exit(self, gate_id: str, stamp_ns: int, visit_code: str = '') -> None:
        """An EXIT event: the shopper of the track nearest the gate (the one holding
        ``visit_code`` for a tap-out, if one is there) went out. If detections keep
        matching that track afterwards, they are of somebody else, most likely entering
        as the other left (see step)."""
        gate = next((g for g in self.gates if g.id == gate_id), None)
        if gate is None:
            return
        reach = gate.radius_m + self.settings.gate_margin_m
        # Somebody who has just come in is taken only when nobody else is there.
        just_entered_ns = int(self.settings.just_entered_s * NS)
        near = [(not (visit_code and t.visit_code == visit_code), t.born_ns > stamp_ns - just_entered_ns,
                 math.hypot(t.state[0] - gate.x, t.state[1] - gate.y), t.id, t) for t in self.tracks
                if t.confirmed and not t.lost and t.exited_ns is None]
        near = [item for item in near if item[2] <= reach]
        if near:
            min(near)[4].exited_ns = stamp_ns
            self.counters['exits_matched'] += 1

    def step(self, stamp_ns: int, shoppers: list, hands: list = ()) -> tuple:
        """Detections (FloorDetection, floor metres) of every camera at one stamp ->
        (published tracks, hands given to tracks). A stamp not after the previous one is
        ignored (counted)."""
        if self.stamp_ns is not None and stamp_ns <= self.stamp_ns:
            self.counters['out_of_order'] += 1
            return [], []
        s = self.settings
        self.counters['steps'] += 1
        self.counters['detections'] += len(shoppers)
        merged = merge_detections(shoppers, s.merge_radius_m, s.merge_same_look_m)
        self._detections = merged
        self.counters['merged'] += len(shoppers) - len(merged)
        for track in self.tracks:
            if not track.lost:
                self._predict(track, stamp_ns)
        self.stamp_ns = stamp_ns
        active = [t for t in self.tracks if not t.lost]
        unmatched = self._match(active, merged, stamp_ns, lambda t: s.match_radius_m)
        self._split_exited(stamp_ns)
        # Nobody claimed these: re-acquire a lost track, else start one.
        lost = [t for t in self.tracks if t.lost]
        if unmatched and lost:
            def reach(track):
                radius = s.reacquire_m + s.reacquire_mps * (stamp_ns - track.updated_ns) / NS
                return min(radius, s.reacquire_max_m)
            detections = [merged[i] for i in unmatched]
            rest = self._match(lost, detections, stamp_ns, reach, reacquire=True)
            unmatched = [unmatched[i] for i in rest]
        for i in unmatched:
            self._start(merged[i], stamp_ns)
        self._age(stamp_ns)
        self._watch_encounters()
        self._assign_entries()
        self._reidentify()
        published = self.published()
        return published, self._hands(hands, published)

    # -- the steps -------------------------------------------------------------------

    def _match(self, tracks: list, detections: list, stamp_ns: int, radius, reacquire=False) -> list:
        """Assigns detections to tracks (Hungarian, within each track's radius); returns
        the indices of the detections left over."""
        if not tracks or not detections:
            return list(range(len(detections)))
        s = self.settings
        cost = np.full((len(tracks), len(detections)), _INFEASIBLE)
        for r, track in enumerate(tracks):
            limit = radius(track)
            known = track.appearance if track.appearance_n >= _LEARNT else None
            for c, d in enumerate(detections):
                distance = math.hypot(track.state[0] - d.x, track.state[1] - d.y)
                if distance > limit:
                    continue
                unlike = look.clothes_distance(known, d.appearance)
                if reacquire and unlike is not None and unlike > s.appearance_reject:
                    continue   # somebody else: better a new track than the wrong identity
                if reacquire and not track.visit_code and self._gate_at(d.x, d.y) is not None:
                    continue   # at a gate somebody coming in, whom an ENTRY code can go to
                # Unknown colours cost what a typical match does, so they neither win nor lose.
                cost[r, c] = distance + s.appearance_weight_m * min(unlike if unlike is not None else 0.15, 1.0)
                if reacquire and track.visit_code:
                    cost[r, c] -= 0.3   # a lost track with a visit is worth re-finding first
        rows, cols = linear_sum_assignment(cost)
        used = set()
        for r, c in zip(rows, cols):
            if cost[r, c] >= _INFEASIBLE:
                continue
            track = tracks[r]
            if reacquire:
                self._reacquire(track, detections[c], stamp_ns)
            else:
                self._update(track, detections[c], stamp_ns)
            self._learn(track, detections[c])
            used.add(c)
        return [c for c in range(len(detections)) if c not in used]

    def _predict(self, track: _Track, stamp_ns: int) -> None:
        dt = (stamp_ns - (self.stamp_ns if self.stamp_ns is not None else stamp_ns)) / NS
        if dt <= 0:
            return
        f = np.eye(4)
        f[0, 2] = f[1, 3] = dt
        q = self.settings.accel_mps2 ** 2
        g = np.array([[dt * dt / 2, 0], [0, dt * dt / 2], [dt, 0], [0, dt]])
        track.state = f @ track.state
        track.cov = f @ track.cov @ f.T + g @ g.T * q
        # Coasting: the velocity fades, so a hidden shopper is not carried off.
        if stamp_ns - track.updated_ns > NS // 2:
            track.state[2:] *= 0.5

    def _update(self, track: _Track, d: FloorDetection, stamp_ns: int) -> None:
        h = np.zeros((2, 4))
        h[0, 0] = h[1, 1] = 1.0
        r = np.eye(2) * self.settings.measurement_sigma_m ** 2
        innovation = np.array([d.x, d.y]) - h @ track.state
        s = h @ track.cov @ h.T + r
        k = track.cov @ h.T @ np.linalg.inv(s)
        track.state = track.state + k @ innovation
        track.cov = (np.eye(4) - k @ h) @ track.cov
        track.updated_ns = stamp_ns
        track.hits += 1
        if not track.confirmed and track.hits >= self.settings.confirm_hits:
            track.confirmed = True
            self.counters['tracks_confirmed'] += 1

    def _learn(self, track: _Track, d: FloorDetection) -> None:
        """Updates the track's colour from a detection nobody else stands close to."""
        s = self.settings
        if d.appearance is None or any(
                other is not d and math.hypot(other.x - d.x, other.y - d.y) < s.appearance_alone_m
                for other in self._detections):
            return
        colour = np.asarray(d.appearance, dtype=np.float64)
        if track.appearance is None:
            track.appearance = colour
        else:
            track.appearance = track.appearance + s.appearance_rate * (colour - track.appearance)
        track.appearance_n += 1
        self._settle_encounters(track, colour)
        for visitor in self._visitors:
            if visitor.track is track and visitor.n < s.reid_learn_frames:
                visitor.appearance = colour if visitor.appearance is None else (
                    visitor.appearance + (colour - visitor.appearance) / (visitor.n + 1))
                visitor.n += 1

    @staticmethod
    def _encounter(track: _Track, other: _Track) -> None:
        """Opens an encounter of ``track`` with ``other``. Its unsettled ones may now
        have swapped with ``other`` too, and the colours they gathered before this one
        cannot tell: they start again."""
        for encounter in track.encounters:
            encounter.others_before.append(other.appearance.copy())
            encounter.after, encounter.n = None, 0
        track.encounters.append(_Encounter(track.appearance.copy(), [other.appearance.copy()]))

    def _settle_encounters(self, track: _Track, colour: np.ndarray) -> None:
        """Adds a lone frame's colour to the track's unsettled encounters and settles
        those that have encounter_frames of them (see TrackerSettings)."""
        s = self.settings
        unsettled = []
        for encounter in track.encounters:
            encounter.n += 1
            encounter.after = colour if encounter.after is None else (
                encounter.after + (colour - encounter.after) / encounter.n)
            if encounter.n < s.encounter_frames:
                unsettled.append(encounter)
                continue
            own, *others = look.distances([encounter.after], [encounter.own_before, *encounter.others_before])[0]
            margin = min(others) - own
            if margin < 0:
                kept = s.encounter_swapped
            else:
                share = min(1.0, margin / s.encounter_margin)
                kept = s.encounter_doubt + (s.encounter_settled - s.encounter_doubt) * share
            track.identity = min(1.0, track.identity / s.encounter_doubt * kept)
            self.counters['encounters_settled'] += 1
        track.encounters = unsettled

    def _reacquire(self, track: _Track, d: FloorDetection, stamp_ns: int) -> None:
        track.lost = False
        track.state = np.array([d.x, d.y, 0.0, 0.0])
        track.cov = np.diag([0.1 ** 2, 0.1 ** 2, 1.0, 1.0])
        track.updated_ns = stamp_ns
        track.identity *= 0.75
        track.encounters.clear()     # its colours since then are of a re-acquisition, not the encounter
        self.counters['reacquired'] += 1

    def _start(self, d: FloorDetection, stamp_ns: int) -> None:
        gate = self._gate_at(d.x, d.y)
        track = _Track(id=f'vt-{self._next_id}', state=np.array([d.x, d.y, 0.0, 0.0]),
                       cov=np.diag([0.1 ** 2, 0.1 ** 2, 1.0, 1.0]), born_ns=stamp_ns,
                       updated_ns=stamp_ns, gate_id=gate.id if gate else '',
                       identity=1.0 if gate else 0.6)
        self._next_id += 1
        self._learn(track, d)
        self.tracks.append(track)
        self.counters['tracks_started_at_gate' if gate else 'tracks_started_elsewhere'] += 1
        if self.settings.confirm_hits <= 1:
            track.confirmed = True
            self.counters['tracks_confirmed'] += 1

    def _split_exited(self, stamp_ns: int) -> None:
        """A track whose shopper went out but that is still being seen after exit_grace_s
        has passed to somebody else at the gate: the leaver's track ends there and the
        other person gets a new track (which an ENTRY at that gate can take)."""
        grace = int(self.settings.exit_grace_s * NS)
        for track in list(self.tracks):
            if (track.exited_ns is not None and track.updated_ns == stamp_ns
                    and stamp_ns - track.exited_ns > grace):
                self.tracks.remove(track)
                self.counters['tracks_left'] += 1
                self.counters['tracks_split_at_exit'] += 1
                self._start(FloorDetection(float(track.state[0]), float(track.state[1]), 1.0, ''),
                            stamp_ns)

    def _age(self, stamp_ns: int) -> None:
        s = self.settings
        keep = []
        for track in self.tracks:
            missing_s = (stamp_ns - track.updated_ns) / NS
            if not track.confirmed and stamp_ns > track.updated_ns:
                continue  # a tentative track that missed: a false start
            if not track.lost and missing_s > s.coast_publish_s:
                if self._gate_at(track.state[0], track.state[1]) is not None:
                    self.counters['tracks_left'] += 1
                    continue  # out through the gate
                track.lost = True
                track.state[2:] = 0.0
                self.counters['tracks_lost'] += 1
            if track.lost and missing_s > s.keep_lost_s:
                continue
            keep.append(track)
        self.tracks = keep

    def _watch_encounters(self) -> None:
        shown = [t for t in self.tracks if t.confirmed and not t.lost]
        for i, a in enumerate(shown):
            for b in shown[i + 1:]:
                if a.visit_code and a.visit_code == b.visit_code:
                    continue   # a group's members swapping changes nobody's cart
                apart = math.hypot(a.state[0] - b.state[0], a.state[1] - b.state[1])
                close = apart < self.settings.swap_radius_m
                if close and b.id not in a.close_to:
                    a.close_to.add(b.id)
                    b.close_to.add(a.id)
                    a.identity *= self.settings.encounter_doubt
                    b.identity *= self.settings.encounter_doubt
                    if a.appearance_n >= _LEARNT and b.appearance_n >= _LEARNT:
                        self._encounter(a, b)
                        self._encounter(b, a)
                    self.counters['close_encounters'] += 1
                elif apart > self.settings.swap_clear_m:
                    a.close_to.discard(b.id)
                    b.close_to.discard(a.id)

    def _assign_entries(self) -> None:
        if self.stamp_ns is None:
            return
        still = []
        for entry in self._entries:
            # Confirmed tracks only: a tentative one may be a false start (a second
            # detection of someone already tracked) that dies and takes the code along.
            for track in self._entrants(entry)[:entry.people - entry.given]:
                track.visit_code = entry.visit_code
                self._visitors.append(_Visitor(entry.visit_code, track, entry))
                entry.given += 1
                self.counters['visits_assigned'] += 1
            if entry.given >= entry.people:
                continue
            if self.stamp_ns > self._entry_window(entry)[1]:
                self.counters['entries_unfilled'] += 1
                continue
            still.append(entry)
        self._entries = still

    def _entry_window(self, entry: _Entry) -> tuple:
        """(first, last) birth stamp of a track that can be an entry's person."""
        s = self.settings
        return (entry.stamp_ns - int(s.entry_before_s * NS),
                entry.stamp_ns + int((s.entry_after_s + s.group_stagger_s * (entry.people - 1)) * NS))

    def _entrants(self, entry: _Entry) -> list:
        """The anonymous confirmed tracks that started at an entry's gate in its window,
        the nearest in time first; not one that looks like a visitor no track is
        following now (that visitor passing the gate again), nor one that started
        nearer the stamp of another entry at the gate still waiting for people (a
        group's window is long: the next shopper in is the next entry's)."""
        low, high = self._entry_window(entry)
        return sorted((t for t in self.tracks if not t.visit_code and t.confirmed and not t.lost
                       and t.exited_ns is None and t.gate_id == entry.gate_id
                       and low <= t.born_ns <= high and not self._looks_like_a_missing_visitor(t)
                       and not self._nearer_entry_waits(entry, t)),
                      key=lambda t: (abs(t.born_ns - entry.stamp_ns), t.id))

    def _nearer_entry_waits(self, entry: _Entry, track: _Track) -> bool:
        return any(other is not entry and other.gate_id == entry.gate_id and other.given < other.people
                   and abs(track.born_ns - other.stamp_ns) < abs(track.born_ns - entry.stamp_ns)
                   and self._entry_window(other)[0] <= track.born_ns <= self._entry_window(other)[1]
                   for other in self._entries)

    def _looks_like_a_missing_visitor(self, track: _Track) -> bool:
        return track.appearance is not None and any(
            v.n >= _LEARNT and (v.track is None or v.track.lost)
            and look.distance(v.appearance, track.appearance) <= self.settings.reid_accept
            for v in self._visitors)

    def _pass_on_entry_codes(self) -> None:
        """A visitor whose track was lost or ended before its colour was learnt cannot
        be found again by colour: that track was most likely a false start beside the
        person coming in. Its code goes to another track that started at the gate then
        and has none."""
        for visitor in self._visitors:
            if (visitor.track is not None and not visitor.track.lost) or visitor.n >= _LEARNT:
                continue
            entrants = self._entrants(visitor.entry)
            if entrants:
                if visitor.track is not None and visitor.track.visit_code == visitor.visit_code:
                    visitor.track.visit_code = ''
                visitor.track = entrants[0]
                visitor.track.visit_code = visitor.visit_code
                visitor.orphaned_ns = None
                self.counters['entry_codes_passed_on'] += 1

    def _reidentify(self) -> None:
        """Moves visit codes to the tracks that look like their visitors (Hungarian on
        colour distance) where the track holding a code was lost or looks unlike its
        visitor: what keeps a code on its shopper after tracks swapped or broke. A track
        that looks like its visitor and like no other visitor is sure again, as sure as
        it looks more like its visitor than like the next.

        A visitor whose track went out on an EXIT is forgotten, unless that was before
        their colour was learnt: nobody walks out a moment after coming in, so that
        track was somebody else at the gate (a leaver as a group came in) and the code
        passes on. One whose track ended otherwise (it vanished at the gate, or stayed
        lost) is kept keep_lost_s for a track that looks like them."""
        s = self.settings
        live = {id(t) for t in self.tracks}
        kept = []
        for visitor in self._visitors:
            if visitor.track is not None and id(visitor.track) not in live:
                if visitor.track.exited_ns is not None and visitor.n >= _LEARNT:
                    continue
                visitor.track, visitor.orphaned_ns = None, self.stamp_ns
            if visitor.track is None and self.stamp_ns - visitor.orphaned_ns > s.keep_lost_s * NS:
                continue
            kept.append(visitor)
        self._visitors = kept
        self._pass_on_entry_codes()
        known = [v for v in self._visitors if v.n >= _LEARNT]
        # A track whose visitor's colour is still being learnt is theirs: it came in as them.
        learning = {id(v.track) for v in self._visitors if v.n < _LEARNT and v.track is not None}
        tracks = [t for t in self.tracks if t.confirmed and not t.lost and t.exited_ns is None
                  and t.appearance_n >= _LEARNT and id(t) not in learning]
        if not known or not tracks:
            return
        unlike = look.distances([v.appearance for v in known], [t.appearance for t in tracks])
        cost = unlike - 0.05 * np.array([[v.track is t for t in tracks] for v in known])   # holders stay
        for r, c in zip(*linear_sum_assignment(cost)):
            visitor, track = known[r], tracks[c]
            held = visitor.track
            if cost[r, c] > s.reid_accept:
                continue
            if track is held:
                others = [unlike[other, c] for other in range(len(known))
                          if known[other].visit_code != visitor.visit_code]
                # Not while an encounter is unsettled: colours are learnt from lone
                # frames only, so the track still shows the colour of whoever it
                # followed before the close pass, and would vouch for a code that
                # went with the other shopper (corner_hard: 9 of the 18 wrong codes
                # at takes were held at 0.9 or more, none since).
                if all(d > s.reid_accept for d in others) and not track.encounters:
                    # Sure in proportion to how much less it looks like anybody else:
                    # look-alikes are where codes end up on the wrong shopper.
                    margin = min(others, default=math.inf) - unlike[r, c]
                    sure = s.reid_moved_identity if track.code_moved else s.reid_identity
                    track.identity = max(track.identity, sure * min(1.0, margin / s.reid_margin))
                continue
            if held is not None and not held.lost and held.appearance_n >= _LEARNT and \
                    look.distance(visitor.appearance, held.appearance) <= s.appearance_reject:
                continue   # the holder still looks like the visitor
            if held is not None and held.visit_code == visitor.visit_code and not any(
                    v is not visitor and v.track is held and v.visit_code == held.visit_code
                    for v in self._visitors):
                held.visit_code = ''
            for other in self._visitors:
                if other.track is track and other.visit_code != visitor.visit_code:
                    other.track, other.orphaned_ns = None, self.stamp_ns   # to be found again
            track.visit_code = visitor.visit_code
            track.identity *= 0.9
            track.code_moved = True
            visitor.track = track
            self.counters['codes_moved'] += 1

    def _gate_at(self, x: float, y: float) -> Optional[Gate]:
        for gate in self.gates:
            if math.hypot(x - gate.x, y - gate.y) <= gate.radius_m + self.settings.gate_margin_m:
                return gate
        return None

    # -- outputs -----------------------------------------------------------------------

    def published(self) -> list:
        """The confirmed tracks in sight or coasting, with their confidence."""
        out = []
        for track in self.tracks:
            if not track.confirmed or track.lost:
                continue
            missing_s = (self.stamp_ns - track.updated_ns) / NS
            presence = 1.0 - 0.5 * min(1.0, missing_s / self.settings.coast_publish_s)
            out.append(TrackOutput(track.id, track.visit_code, float(track.state[0]), float(track.state[1]),
                                   round(max(0.05, min(1.0, track.identity * presence)), 3)))
        return out

    def _hands(self, hands: list, published: list) -> list:
        """Each hand to the track nearest the feet of the shopper whose sleeve reaches
        it (within arm_owner_m; none there, nobody's), or else to the nearest track
        within arm's reach; a track that started away from a gate less than arm_track_s
        ago comes after the others (most likely the reaching arm itself, seen as a
        person beside its shopper)."""
        s = self.settings
        by_id = {t.id: t for t in self.tracks}
        given = []
        for hand in hands:
            arm = hand.arm or self._arm_seen_by_another_camera(hand, hands)
            x, y, within = (*arm, s.arm_owner_m) if arm else (hand.x, hand.y, s.arm_reach_m)
            ranked = sorted((self._may_be_an_arm(by_id[t.track_id]), math.hypot(t.x - x, t.y - y),
                             t.track_id) for t in published)
            ranked = [(d, track_id) for _, d, track_id in ranked if d <= within]
            if ranked:
                track = next(t for t in published if t.track_id == ranked[0][1])
                given.append(HandOutput(track.track_id, hand.x, hand.y, hand.score, hand.item, arm is not None))
                self.counters['hands'] += 1
            else:
                self.counters['hands_unassigned'] += 1
        return given

    def _arm_seen_by_another_camera(self, hand: FloorDetection, hands: list) -> Optional[tuple]:
        """The sleeve another camera saw reach this hand (its view of the hand within
        same_hand_m of this one's), where this camera saw none (its wearer out of view)."""
        seen = [(math.hypot(other.x - hand.x, other.y - hand.y), other.arm) for other in hands
                if other.arm and other.camera != hand.camera]
        nearest = min(seen, default=None)
        return nearest[1] if nearest and nearest[0] <= self.settings.same_hand_m else None

    def _may_be_an_arm(self, track: _Track) -> bool:
        return not track.gate_id and self.stamp_ns - track.born_ns < self.settings.arm_track_s * NS


def hand_per_track(given: list, same_hand_m: float) -> dict:
    """track id -> the one HandOutput a track's positions carry: its surest hand, holding
    what every camera's view of that hand (within same_hand_m of it) read. Views that
    read a product average their colours, and the holding is the views' mean: one view
    is a few pixels of packaging, several are a steadier reading."""
    by_track = {}
    for hand in given:
        by_track.setdefault(hand.track_id, []).append(hand)
    out = {}
    for track_id, hands in by_track.items():
        surest = max(hands, key=lambda h: h.score)
        same = [h for h in hands if math.hypot(h.x - surest.x, h.y - surest.y) <= same_hand_m]
        views = [h.item for h in same if h.item is not None]
        item = surest.item
        if len(views) > 1:
            holding = [v for v in views if v.holding >= 0.5] or views
            item = HeldItem(sum(v.holding for v in views) / len(views),
                            sum(v.blue for v in holding) / len(holding), sum(v.green for v in holding) / len(holding))
        out[track_id] = HandOutput(surest.track_id, surest.x, surest.y, surest.score, item,
                                   any(h.sleeve_seen for h in same))
    return out


class FrameBatcher:
    """Groups the frames of one time step across cameras, by stamp.

    ``add`` returns the batches completed by a frame: the pending batch is complete when
    every camera has a frame in it, or is closed early when a camera sends its next
    frame, or a frame stamped more than ``tolerance_ns`` after the batch's first. A frame
    stamped at or before the last closed batch is late and refused (None is returned
    instead of a list). ``flush`` closes the pending batch (the caller's time-out when a
    camera is silent). A batch is (stamp_ns, {camera: payload}), stamped with its newest
    frame; batch stamps strictly increase.
    """

    def __init__(self, cameras, tolerance_ns: int):
        self.cameras = set(cameras)
        self.tolerance_ns = tolerance_ns
        self._pending = {}
        self._closed_ns = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, camera: str, stamp_ns: int, payload) -> Optional[list]:
        if self._closed_ns is not None and stamp_ns <= self._closed_ns:
            return None
        ready = []
        if self._pending:
            first = min(s for s, _ in self._pending.values())
            if camera in self._pending or stamp_ns - first > self.tolerance_ns:
                ready.append(self.flush())
        self._pending[camera] = (stamp_ns, payload)
        if self.cameras <= set(self._pending):
            ready.append(self.flush())
        return ready

    def flush(self):
        if not self._pending:
            return None
        stamp = max(s for s, _ in self._pending.values())
        batch = (stamp, {camera: payload for camera, (_, payload) in self._pending.items()})
        self._pending = {}
        self._closed_ns = stamp
        return batch
