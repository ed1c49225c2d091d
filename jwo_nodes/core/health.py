"""A node's health from its counters: what they counted over a recent window and one
diagnostic level. Pure: the caller passes the stamps in (no clocks, no rclpy).

The level, the first of these that holds, over the recent window (WINDOW_S):

* STALE: an input the node expects (``expect``) has not grown for its ``within_s``
  (counted from the start while it never has): the device or source went silent;
* ERROR: at least ERROR_BAD_PER_S bad inputs a second on average over the window
  (60 in the last minute): the device or its link is broken, not having a bad moment;
* WARN: some bad inputs in the window;
* OK: none (bad inputs longer ago stay in the totals only, so a node recovers).
"""
from collections import deque
from dataclasses import dataclass

# The levels of diagnostic_msgs/DiagnosticStatus.
OK, WARN, ERROR, STALE = 0, 1, 2, 3

WINDOW_S = 60.0
ERROR_BAD_PER_S = 1.0

NS = 1_000_000_000


@dataclass(frozen=True)
class Report:
    level: int
    message: str
    # Counter name -> how much it grew over the window (for a gauge such as a queue
    # length: its change, which may be negative).
    recent: dict


class Health:
    """Counter totals sampled over time (``update``, about once a second), kept for
    one window; counters start at 0 at ``start_ns``."""

    def __init__(self, start_ns: int, window_s: float = WINDOW_S):
        self.window_ns = int(window_s * NS)
        self.error_count = max(1, round(window_s * ERROR_BAD_PER_S))
        self._start_ns = start_ns
        # (stamp, totals), oldest first; the first is the baseline: the newest sample at
        # least a window old.
        self._samples = deque([(start_ns, {})])
        self._expected = {}   # name -> within_ns
        self._grown_at = {}   # name -> stamp of its last growth (start_ns before any)

    def expect(self, name: str, within_s: float) -> None:
        """The counter ``name`` grows at least every ``within_s`` while the node's input
        is alive."""
        self._expected[name] = int(within_s * NS)
        self._grown_at.setdefault(name, self._start_ns)

    def update(self, now_ns: int, totals: dict, bad_inputs) -> Report:
        """Takes the counters' totals now; ``bad_inputs`` names the counters of bad input."""
        previous = self._samples[-1][1]
        for name in self._expected:
            if totals.get(name, 0) > previous.get(name, 0):
                self._grown_at[name] = now_ns
        self._samples.append((now_ns, dict(totals)))
        while len(self._samples) > 1 and self._samples[1][0] <= now_ns - self.window_ns:
            self._samples.popleft()
        baseline = self._samples[0][1]
        recent = {name: value - baseline.get(name, 0) for name, value in totals.items()}
        return self._report(now_ns, recent, bad_inputs)

    def _report(self, now_ns: int, recent: dict, bad_inputs) -> Report:
        silent = [f'no {name} for {(now_ns - self._grown_at[name]) // NS} s'
                  for name, within_ns in sorted(self._expected.items())
                  if now_ns - self._grown_at[name] >= within_ns]
        bad = {name: recent[name] for name in sorted(bad_inputs) if recent.get(name, 0) > 0}
        bad_total = sum(bad.values())
        parts = list(silent)
        if bad:
            listed = ', '.join(f'{name} {count}' for name, count in bad.items())
            parts.append(f'{bad_total} bad inputs in the last {self.window_ns / NS:g} s ({listed})')
        if silent:
            level = STALE
        elif bad_total >= self.error_count:
            level = ERROR
        elif bad_total:
            level = WARN
        else:
            level = OK
        return Report(level, '; '.join(parts) or 'ok', recent)
