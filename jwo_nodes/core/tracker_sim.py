"""The simulator's stand-in for the vision tracker: what shopper_sim_node publishes and
what `jwo simbag` writes into a bag, from one piece of code.

Pure: no rclpy, no clocks. ``TrackerSim`` turns a Timeline into tracker frames at
``rate_hz`` (scenario time): the people on the floor as anonymous tracks (``track-N``
in order of first appearance), frames lost and stamps jittered as the scenario's noise
knobs say (``dropped_messages``, ``clock_jitter_ms``; jitter clamped to 40 % of a
period so frames stay in order), seeded from the scenario seed. A track carries its
party's visit code from the moment the party's ENTRY gate event is handed to
``on_entry`` -- the same seam the camera-based tracker fills.

Frames must be asked for in order, k = 0, 1, 2, ...: the random draws of frame k
(lost? jitter?) follow those of frame k - 1.
"""
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from jwo_nodes.core.sim import NS, Timeline, stable_seed


@dataclass(frozen=True)
class TrackedShopper:
    track_id: str
    visit_code: str      # '' until the party has passed its entry gate
    x: float
    y: float
    confidence: float = 1.0


class TrackerSim:
    """Tracker frames of a timeline; visit codes assigned at the ENTRY events."""

    def __init__(self, timeline: Timeline, rate_hz: float):
        if not rate_hz > 0:
            raise ValueError(f'rate_hz must be > 0, got {rate_hz!r}')
        self.timeline = timeline
        self.rate_hz = float(rate_hz)
        self.period_ns = int(NS / self.rate_hz)
        self._noise = timeline.scenario.noise
        self._rng = np.random.default_rng(stable_seed('tracker', timeline.scenario.seed))
        self._next_k = 0
        self._visit_of_party = {}
        self._track_of_person = {}

    @property
    def frame_count(self) -> int:
        """Frames k = 0 .. frame_count - 1 cover the scenario (up to its duration)."""
        return int(self.timeline.duration_ns // self.period_ns) + 1

    def on_entry(self, gate_id: str, t_ns: int, visit_code: str) -> Optional[str]:
        """An ENTRY event at scenario time t_ns: the party that entered there and then
        gets the visit code (returned), or None when no simulated party did."""
        party = self.timeline.party_at_entry(gate_id, t_ns)
        if party is not None:
            self._visit_of_party[party] = visit_code
        return party

    def frame_time(self, k: int) -> Optional[int]:
        """Scenario time (ns) of frame k with its jitter, or None when the scenario
        loses this frame. Call for k = 0, 1, 2, ... in order."""
        if k != self._next_k:
            raise ValueError(f'frames are drawn in order: expected frame {self._next_k}, got {k}')
        self._next_k += 1
        dropped = self._rng.random() < self._noise.dropped_messages
        jitter = float(self._rng.normal(0.0, self._noise.clock_jitter_ms * 1e6))
        if dropped:
            return None
        limit = 0.4 * self.period_ns
        return k * self.period_ns + int(max(-limit, min(limit, jitter)))

    def shoppers(self, t_ns: int) -> List[TrackedShopper]:
        """The people on the floor at scenario time t_ns, as tracks."""
        tracked = []
        for person in self.timeline.positions(t_ns):
            track = self._track_of_person.setdefault(
                person.person_id, f'track-{len(self._track_of_person) + 1}')
            tracked.append(TrackedShopper(track_id=track,
                                          visit_code=self._visit_of_party.get(person.party_id, ''),
                                          x=person.x, y=person.y))
        return tracked
