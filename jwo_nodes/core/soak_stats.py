"""The arithmetic of `jwo soak` (jwo_nodes.soak): pure, no rclpy, no clocks.

* reading a process's resident memory and CPU ticks from the text of
  ``/proc/<pid>/status`` and ``/proc/<pid>/stat``;
* CPU % over an interval (100 % = one core busy);
* the least-squares slope of RSS over time, and the rule that says whether a node's
  memory levelled off;
* restarts (pid changes) and the growth of a counter that a restart resets;
* which diagnostics counters are watched (drops and bad input);
* how many parties fill a soak at a given load.

**Levelled off.** A node's memory levelled off when the least-squares slope of its RSS
over the second half of the run (only the samples of its last process, so that a
restart does not read as growth or shrinkage) is below

    max(LEVEL_ABS_MB_PER_H, LEVEL_REL_PER_H x its mean RSS over that window)

i.e. 5 MB per hour, or 1 % of its RSS per hour for a node above 500 MB. The first half
is left out: start-up (imports, DDS discovery, the allocator's arenas, histories filling
up to their depth) grows any process for a while. A slope from fewer than
MIN_SLOPE_SAMPLES samples is no verdict (None).
"""
import math
from typing import Iterable, Optional, Sequence

LEVEL_ABS_MB_PER_H = 5.0
LEVEL_REL_PER_H = 0.01
MIN_SLOPE_SAMPLES = 3

# A diagnostics counter whose name holds one of these counts drops or bad input.
WATCHED_WORDS = ('drop', 'lost', 'late', 'stale', 'malformed', 'failed', 'unassigned')


# ---------------------------------------------------------------- /proc

def parse_vmrss_kb(status_text: str) -> Optional[int]:
    """VmRSS of ``/proc/<pid>/status`` in kB (None when absent: a zombie, a kernel
    thread)."""
    for line in status_text.splitlines():
        if line.startswith('VmRSS:'):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def parse_stat_ticks(stat_text: str) -> Optional[int]:
    """utime + stime of ``/proc/<pid>/stat`` in clock ticks. The command name (field 2)
    is in parentheses and may itself hold spaces and parentheses: the fields are
    counted after its last ')'."""
    end = stat_text.rfind(')')
    if end < 0:
        return None
    fields = stat_text[end + 1:].split()
    # After the name: state is field 3, utime field 14, stime field 15 (1-based).
    if len(fields) < 13:
        return None
    try:
        return int(fields[11]) + int(fields[12])
    except ValueError:
        return None


def cpu_percent(ticks_before: Optional[int], ticks_after: Optional[int], wall_s: float,
                ticks_per_s: float) -> Optional[float]:
    """CPU % of one process over an interval (100 = one core busy all the time); None
    when either reading is missing, the interval is empty or the ticks went back (not
    the same process)."""
    if ticks_before is None or ticks_after is None or wall_s <= 0 or ticks_per_s <= 0:
        return None
    if ticks_after < ticks_before:
        return None
    return 100.0 * (ticks_after - ticks_before) / ticks_per_s / wall_s


# ---------------------------------------------------------------- memory

def least_squares_slope(ts: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """The slope of the least-squares line through (t, y); None with fewer than two
    distinct t."""
    n = len(ts)
    if n != len(ys):
        raise ValueError(f'{n} times but {len(ys)} values')
    if n < 2:
        return None
    mean_t = sum(ts) / n
    mean_y = sum(ys) / n
    sxx = sum((t - mean_t) ** 2 for t in ts)
    if sxx <= 0:
        return None
    return sum((t - mean_t) * (y - mean_y) for t, y in zip(ts, ys)) / sxx


def level_threshold_mb_per_h(rss_mb: float, abs_mb_per_h: float = LEVEL_ABS_MB_PER_H,
                             rel_per_h: float = LEVEL_REL_PER_H) -> float:
    """The slope under which memory counts as levelled off (see the module doc)."""
    return max(abs_mb_per_h, rel_per_h * max(0.0, rss_mb))


def restarts(pids: Iterable[Optional[int]]) -> int:
    """How many times the pid changed (None, a process between restarts, is skipped)."""
    seen, changes = None, 0
    for pid in pids:
        if pid is None:
            continue
        if seen is not None and pid != seen:
            changes += 1
        seen = pid
    return changes


def memory_summary(samples: Sequence[tuple], t_end: float,
                   abs_mb_per_h: float = LEVEL_ABS_MB_PER_H,
                   rel_per_h: float = LEVEL_REL_PER_H) -> dict:
    """One node's memory over a run from its samples (time_s, pid, rss_mb), time_s from
    the run's start (0) to ``t_end``; samples without an RSS are skipped. Returns RSS at
    start and end, restarts, and the slope (MB/h) over the second half of its last
    process's samples, its threshold and the verdict ``levelled`` (True, False, or None
    when there are too few samples for a slope)."""
    rows = [(t, pid, rss) for t, pid, rss in samples if rss is not None and 0 <= t <= t_end]
    summary = {'rss_start_mb': rows[0][2] if rows else None,
               'rss_end_mb': rows[-1][2] if rows else None,
               'rss_max_mb': max((r[2] for r in rows), default=None),
               'restarts': restarts(pid for _, pid, _ in samples),
               'slope_mb_per_h': None, 'slope_window_s': None, 'slope_samples': 0,
               'threshold_mb_per_h': None, 'levelled': None}
    if not rows:
        return summary
    last_pid = rows[-1][1]
    window = [(t, rss) for t, pid, rss in rows if t >= t_end / 2 and pid == last_pid]
    summary['slope_samples'] = len(window)
    if len(window) < MIN_SLOPE_SAMPLES:
        return summary
    slope = least_squares_slope([t for t, _ in window], [rss for _, rss in window])
    if slope is None:
        return summary
    mean_rss = sum(rss for _, rss in window) / len(window)
    threshold = level_threshold_mb_per_h(mean_rss, abs_mb_per_h, rel_per_h)
    summary.update(slope_mb_per_h=slope * 3600.0, slope_window_s=window[-1][0] - window[0][0],
                   threshold_mb_per_h=threshold, levelled=slope * 3600.0 < threshold)
    return summary


def mean(values: Iterable[Optional[float]]) -> Optional[float]:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


# ---------------------------------------------------------------- counters

def is_watched(counter: str, words: Sequence[str] = WATCHED_WORDS) -> bool:
    """A counter of drops or bad input (by its name; ``<name>_recent``, the last
    minute's count, is not a total and is not watched)."""
    name = counter.lower()
    return not name.endswith('_recent') and any(word in name for word in words)


def counter_growth(values: Sequence[float]) -> float:
    """How much a counter grew over consecutive readings; a reading below the one
    before is a restart of its node (the count began again at 0), so it all counts."""
    growth = 0.0
    for before, after in zip(values, values[1:]):
        growth += after - before if after >= before else after
    return growth


# ---------------------------------------------------------------- load

def parties_for(load: float, seconds: float, mean_gap_s: float) -> int:
    """Parties whose entries, ``mean_gap_s / load`` apart on average, span ``seconds``
    (at least 1)."""
    if load <= 0 or mean_gap_s <= 0:
        raise ValueError(f'load and mean gap must be positive, got {load!r} and {mean_gap_s!r}')
    return max(1, math.ceil(seconds * load / mean_gap_s) + 1)
