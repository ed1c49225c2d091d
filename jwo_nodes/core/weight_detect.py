"""Change detection on the load cells of one shelf: settled weight changes per bin.

No rclpy here. The weight sensor node feeds one sample per stamp (int ns) with the
grams of every bin, in the shelf's bin order, and publishes what comes back.

Algorithm, per bin (independent, so two bins changing at once give two changes):

1. STABLE: the bin sits on a known level (its baseline). A sample further than the
   trigger band ``max(trigger_min_g, trigger_k * sigma)`` from it makes the bin
   MOVING. Samples inside the band pull the baseline along with an exponential
   average (time constant ``drift_tau_s``): slow drift never becomes a change.
2. MOVING: the bin waits for a settled window: W = max(10, settle_s * rate_hz)
   samples, all taken since the departure, whose spread the noise explains (a
   variance pure noise exceeds with 0.5 % probability, ``settle_z``; no trend
   between the window's halves). A vibration spike (a run of up to three samples
   off the window median by more than the trigger band, its neighbours near the
   median) is left out. A new level less than 2.5 trigger bands away (a small item
   in heavy noise, where press and ramp hide in one window) must hold for 2 W.
   The window mean is the new level; ``end_ns`` is the stamp of its first sample.
   ``start_ns`` is where the excursion from the old level began: the first sample
   off it after the last real return to it (moved back a few samples when they
   were already on their way); a spike before a change does not start it.
3. New level minus baseline is the change. At least ``max(min_delta_g, delta_k *
   sigma)`` in size: a DetectedChange. Smaller (a spike, a hand pressing and
   letting go, a false trigger): nothing. The bin is STABLE again either way.
4. ``sigma`` (per bin) is a robust noise estimate, recomputed once a second from the
   sample-to-sample differences of the last ``noise_window_s`` (blind to level and
   drift), taken only between samples inside the trigger band (a hand on the shelf
   never inflates it): MAD for the scale, then the standard deviation of the
   differences within 3.5 sigma.
5. A bin MOVING longer than ``max_unsettled_s`` (a broken or wildly noisy cell) is
   settled by force on the median of its last window (``forced=True``), so
   ``processed_until_ns`` cannot stall forever.

``processed_until_ns``: the last sample's stamp while every bin is STABLE, else just
before the earliest departure of a MOVING bin. A change's ``end_ns`` is always after
every value announced before it came out (its ``start_ns`` may be earlier).

Limits, by design: a load that holds still (within the noise) for longer than W is a
level: a hand resting motionless on a bin that long and then lifted gives two
opposite changes (it cannot be told from an item put down and taken away again).
A change smaller than about the trigger band may be absorbed into the baseline
without an event. Changes on one bin closer together than W (2 W for small ones)
merge into one. A stream starts in INIT: once the noise is known (30 differences)
its first settled window is the baseline; whatever happened before is not reported.

Restarts: ``saved_levels()`` is what the node keeps of a detector (every bin's settled
level and the stamp it held at), and ``resume(saved, ...)`` seeds a fresh detector with
it before its first sample. A seeded bin starts in INIT as usual, but holds
``processed_until_ns`` just before that first sample until its first level settles,
and compares that level with its saved one: a change while the node was down comes out
as a change (``restart`` RESTART_SEEN), stamped when the node saw it: ``start_ns`` and
``end_ns`` are both the first sample of the first settled window after the restart
(when it happened while the node was down is unknown). Where the detector cannot tell
(the saved levels are older than the allowed age or of another set of bins, a bin had
no saved level, or a bin does not settle within ``max_unsettled_s`` of the restart and
is settled by force), the change is flagged RESTART_UNSURE (``delta_grams`` 0 where
there is no saved level to measure from).

Bad input raises BadSample (a ValueError) with a ``reason`` the node counts, and
leaves the detector exactly as it was.
"""
import math
from collections import deque
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

INIT = 0
STABLE = 1
MOVING = 2

# DetectedChange.restart; the same values as the constants of jwo/WeightChange.
RESTART_NONE = 0      # seen live
RESTART_SEEN = 1      # against the level saved before a restart of the node
RESTART_UNSURE = 2    # after a restart, where the detector cannot tell

# BadSample reasons.
WRONG_LENGTH = 'wrong_length'
NOT_A_NUMBER = 'not_a_number'
NOT_FINITE = 'not_finite'
OUT_OF_RANGE = 'out_of_range'
STAMP_ORDER = 'stamp_order'
BAD_STAMP = 'bad_stamp'

# A settled window may leave out runs of up to this many samples (a vibration spike
# is 1-3 samples) further than the trigger band from its median.
MAX_OUTLIERS = 3

# A settled window holds at least this many samples (at low rates settle_s is longer).
MIN_WINDOW = 10

# A change smaller than this many trigger bands must hold for two windows.
SMALL_CHANGE = 2.5

# A start may move back over this many samples before the departure.
BACKDATE = 4

# Departures remembered while a bin is MOVING (the latest ones).
MAX_DEPARTURES = 64

# Differences a noise estimate needs (the first level waits for them).
MIN_NOISE_SAMPLES = 30

# MAD of a normal sample, in sigmas; differences of two samples have sqrt(2) sigma.
_MAD_TO_SIGMA = 1.4826 / math.sqrt(2.0)


class BadSample(ValueError):
    """A sample the detector refused; its state is unchanged.

    ``reason`` is one of wrong_length, not_a_number, not_finite, out_of_range,
    stamp_order (stamp not after the previous accepted one) or bad_stamp.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f'{reason}: {message}')
        self.reason = reason


@dataclass(frozen=True)
class DetectorSettings:
    # A new level must hold this long (the settled window, W = settle_s * rate_hz samples).
    settle_s: float = 0.8
    # Trigger band: a sample this far from the baseline starts a change.
    trigger_k: float = 4.0
    trigger_min_g: float = 8.0
    # Smallest change reported: max(min_delta_g, delta_k * sigma).
    min_delta_g: float = 10.0
    delta_k: float = 2.5
    # Settled window of n samples: its variance is one pure noise exceeds with a
    # probability of a normal tail beyond settle_z (2.58: 0.5 %), i.e. std <= sigma *
    # sqrt(chi2_{n-1} quantile / n): 1.54 sigma for 10 samples, 1.22 for 64; and
    # |mean of 2nd half - mean of 1st half| <= trend_k * 2 sigma / sqrt(n).
    settle_z: float = 2.58
    trend_k: float = 3.0
    # Time constant of the baseline following slow drift.
    drift_tau_s: float = 60.0
    # Noise estimate: from the differences of the last noise_window_s, floored.
    noise_window_s: float = 30.0
    noise_floor_g: float = 0.5
    # A bin between levels longer than this is settled by force.
    max_unsettled_s: float = 30.0
    # A sample beyond +-max_abs_g is rejected (out_of_range).
    max_abs_g: float = 1_000_000.0

    def validate(self) -> None:
        """ValueError naming the first setting out of its range."""
        positive = ('settle_s', 'trigger_k', 'trigger_min_g', 'min_delta_g', 'settle_z',
                    'trend_k', 'drift_tau_s', 'noise_window_s', 'noise_floor_g',
                    'max_unsettled_s', 'max_abs_g')
        for name in positive + ('delta_k',):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (value == 0 and name in positive):
                raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
        if self.max_unsettled_s <= self.settle_s:
            raise ValueError(f'max_unsettled_s ({self.max_unsettled_s}) must exceed '
                             f'settle_s ({self.settle_s})')


@dataclass(frozen=True)
class DetectedChange:
    bin_id: str
    # New level minus old level: negative when weight left the shelf (a take).
    delta_grams: float
    # First sample that left the old level; first sample of the new settled level.
    start_ns: int
    end_ns: int
    # Noise estimate of the bin (1 sigma, grams) when the change settled.
    noise_grams: float
    # The new level, grams.
    level_grams: float = 0.0
    # Settled by force after max_unsettled_s (the level is a best guess).
    forced: bool = False
    # RESTART_NONE, or how the first level after a restart compared with the saved one.
    restart: int = RESTART_NONE


@dataclass(frozen=True)
class SavedLevels:
    """What a detector keeps across a restart of its node: the settled level of every
    bin (None: none known), as of the sample stamped ``stamp_ns``."""

    bin_ids: Tuple[str, ...]
    levels: Tuple[Optional[float], ...]
    stamp_ns: int

    def to_document(self) -> dict:
        return {'bin_ids': list(self.bin_ids), 'levels': list(self.levels),
                'stamp_ns': self.stamp_ns}

    @classmethod
    def from_document(cls, document: dict) -> 'SavedLevels':
        """From to_document()'s plain values; ValueError when they are malformed."""
        try:
            bin_ids, levels, stamp_ns = (document['bin_ids'], document['levels'],
                                         document['stamp_ns'])
        except (KeyError, TypeError) as error:
            raise ValueError(f'saved levels without {error}') from error
        if not (isinstance(bin_ids, list) and all(isinstance(b, str) for b in bin_ids)):
            raise ValueError('saved bin_ids must be a list of strings')
        if not (isinstance(levels, list) and len(levels) == len(bin_ids) and all(
                level is None or (isinstance(level, (int, float)) and not isinstance(level, bool)
                                  and math.isfinite(level)) for level in levels)):
            raise ValueError('saved levels must be a finite number or null per bin')
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, int) or stamp_ns < 0:
            raise ValueError('saved stamp_ns must be a whole number >= 0')
        return cls(tuple(bin_ids), tuple(None if level is None else float(level)
                                         for level in levels), stamp_ns)


class ChangeDetector:
    """Per-bin change detection of one shelf. See the module docstring."""

    def __init__(self, bin_ids: Sequence[str], rate_hz: float,
                 settings: DetectorSettings = DetectorSettings()):
        if not bin_ids:
            raise ValueError('a shelf needs at least one bin')
        if not (isinstance(rate_hz, (int, float)) and math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f'rate_hz must be > 0, got {rate_hz!r}')
        settings.validate()
        self.bin_ids = tuple(bin_ids)
        self.rate_hz = float(rate_hz)
        self.settings = s = settings
        n = len(self.bin_ids)
        self._n = n
        self._w = max(MIN_WINDOW, int(round(s.settle_s * rate_hz)))
        # The ring holds the longest window (W samples and the outliers it may skip)
        # and the few samples before it a start may be moved back to.
        self._wmax = self._w + MAX_OUTLIERS
        self._wlong = 2 * (self._w + MAX_OUTLIERS)
        self._r = self._wlong + BACKDATE
        self._alpha = min(1.0, 1.0 / (s.drift_tau_s * rate_hz))
        self._nd = max(20, int(round(s.noise_window_s * rate_hz)))
        self._noise_every = max(1, int(round(rate_hz)))
        self._max_unsettled_ns = int(s.max_unsettled_s * 1e9)
        # Ring buffers: the last W + MAX_OUTLIERS samples of every bin and their stamps,
        # and the last noise window of sample-to-sample differences.
        self._win = np.zeros((n, self._r))
        self._stamps = [0] * self._r
        # Per bin: differences are kept only between consecutive samples inside the
        # trigger band of the baseline (any sample before the first baseline), so a
        # hand on the shelf never inflates the noise estimate, while an estimate that
        # is too low still grows (the band grows with it).
        self._diffs = np.zeros((n, self._nd))
        self._dpos = [0] * n
        self._dcount = [0] * n
        self._prev_ok = [False] * n
        self._prev = [0.0] * n
        self._k = 0
        self._last_ns = None
        # Per bin.
        self._mode = [INIT] * n
        self._base = [0.0] * n
        self._sigma = [s.noise_floor_g] * n
        self._trigger = [0.0] * n
        self._since = [0] * n          # samples since departure (INIT: since start)
        # Departures from the old level since a bin started MOVING (after the first):
        # (stamp, mean of the in-band run before it).
        self._deps = [deque(maxlen=MAX_DEPARTURES) for _ in range(n)]
        self._in_run = [0] * n         # the current run of in-band samples while MOVING,
        self._in_sum = [0.0] * n       # their sum,
        self._out_run = [0] * n        # the current run of samples off the band,
        self._prev_out = [0] * n       # and the one before the current in-band run
        self._moving_since = [0] * n
        self._moving_k = [0] * n       # sample number of the departure
        self._stable_k = [0] * n       # sample number at which the bin settled
        self._since_stable = [0] * n   # stable samples before the departure
        self._processed_until_ns = 0
        self._changing = False
        self._spreads = {}
        self._level_revision = 0
        # After resume(): the bins whose first level is compared with a saved one, that
        # level (None: none known) and whether it may be trusted; the first stamp.
        self._resuming = [False] * n
        self._saved = [None] * n
        self._saved_trusted = False
        self._first_ns = 0

    # -- what the node reads -------------------------------------------------------

    @property
    def processed_until_ns(self) -> int:
        """Every change with end_ns <= this stamp has been returned by feed(); 0 before
        the first sample. A bin between levels holds it just before its departure, a
        resumed bin before its first level just before the first sample."""
        return self._processed_until_ns

    @property
    def changing(self) -> bool:
        """Some bin is between levels (or resumed and before its first level): a change
        may still come."""
        return self._changing

    @property
    def window_samples(self) -> int:
        return self._w

    @property
    def levels(self) -> List[float]:
        """Current baseline per bin (grams; 0 while a bin is in INIT)."""
        return list(self._base)

    @property
    def noise_grams(self) -> List[float]:
        return list(self._sigma)

    @property
    def level_revision(self) -> int:
        """Grows whenever a bin takes a new level: saved_levels() changed with it
        (besides slow drift)."""
        return self._level_revision

    def saved_levels(self) -> SavedLevels:
        """What to keep across a restart: each bin's settled level; a bin not settled
        since a resume keeps the level it was seeded with when that was trusted."""
        levels = []
        for i in range(self._n):
            if self._mode[i] != INIT:
                levels.append(self._base[i])
            elif self._resuming[i] and self._saved_trusted:
                levels.append(self._saved[i])
            else:
                levels.append(None)
        return SavedLevels(self.bin_ids, tuple(levels), self._last_ns or 0)

    def resume(self, saved: Optional[SavedLevels], first_ns: int, max_age_ns: int) -> str:
        """Seeds a detector that has not had a sample yet with the levels its node saved
        before a restart (None: there were some, but unreadable); ``first_ns``: the
        stamp of the first sample to come. Returns what it did, for the log.

        Saved at or after ``first_ns`` (a simulation or replay that starts over from
        its beginning, or a clock set back): nothing is seeded, a first start. Of
        other bins or unreadable: every bin's first level is RESTART_UNSURE. Older
        than ``max_age_ns``: a bin whose first level differs is RESTART_UNSURE.
        """
        if self._last_ns is not None:
            raise ValueError('resume() comes before the first sample')
        if saved is not None and saved.stamp_ns >= first_ns:
            return (f'saved levels are not older than the first sample '
                    f'({(saved.stamp_ns - first_ns) / 1e9:.3f} s newer): the stream starts '
                    'over; not used')
        self._resuming = [True] * self._n
        if saved is None or tuple(saved.bin_ids) != self.bin_ids:
            self._saved = [None] * self._n
            self._saved_trusted = False
            what = ('saved levels unreadable' if saved is None
                    else f'saved levels are of bins {list(saved.bin_ids)}')
            return f"{what}: every bin's first level is an unsure change"
        age_ns = first_ns - saved.stamp_ns
        self._saved = list(saved.levels)
        self._saved_trusted = age_ns <= max_age_ns
        note = '' if self._saved_trusted else \
            f' (older than {max_age_ns / 1e9:g} s: a difference is an unsure change)'
        return f'seeded with the levels saved {age_ns / 1e9:.1f} s before{note}'

    @property
    def modes(self) -> List[int]:
        return list(self._mode)

    # -- feeding -----------------------------------------------------------------------

    def feed(self, stamp_ns: int, grams: Sequence[float]) -> List[DetectedChange]:
        """Takes one sample (grams per bin, in bin order); returns the changes that
        settled with it (at most one per bin). BadSample on bad input, state kept."""
        values = self._validate(stamp_ns, grams)
        stamp_ns = int(stamp_ns)
        w = self._w
        pos = self._k % self._r
        self._win[:, pos] = values
        self._stamps[pos] = stamp_ns
        prev = self._prev
        self._prev = values
        if self._last_ns is None:
            self._first_ns = stamp_ns
        self._k += 1
        self._last_ns = stamp_ns
        if self._k % self._noise_every == 0:
            self._update_noise()

        changes = []
        processed = stamp_ns
        changing = False
        for i in range(self._n):
            mode = self._mode[i]
            x = values[i]
            if mode == STABLE:
                r = x - self._base[i]
                if -self._trigger[i] <= r <= self._trigger[i]:
                    self._base[i] += self._alpha * r
                    if self._prev_ok[i]:
                        self._record_diff(i, x - prev[i])
                    self._prev_ok[i] = True
                    continue
                self._prev_ok[i] = False
                self._mode[i] = MOVING
                self._deps[i].clear()
                self._in_run[i] = 0
                self._out_run[i] = 1
                self._moving_since[i] = stamp_ns
                self._moving_k[i] = self._k - 1
                self._since_stable[i] = self._k - 2 - self._stable_k[i]
                self._since[i] = 1
            else:
                self._since[i] += 1
                if mode == MOVING:
                    self._track_departures(i, x, stamp_ns, prev[i])
                else:
                    if self._prev_ok[i]:
                        self._record_diff(i, x - prev[i])
                    self._prev_ok[i] = True
            if self._since[i] >= w:
                change = self._try_settle(i, pos, stamp_ns)
                if change is not None:
                    changes.append(change)
            if self._mode[i] == MOVING:
                changing = True
                processed = min(processed, self._moving_since[i] - 1)
            elif self._resuming[i]:
                # Its first level may be a change that happened before this sample.
                changing = True
                processed = min(processed, self._first_ns - 1)
        self._processed_until_ns = processed
        self._changing = changing
        return changes

    def _validate(self, stamp_ns, grams) -> list:
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)):
            raise BadSample(BAD_STAMP, f'stamp must be integer ns, got {type(stamp_ns).__name__}')
        if self._last_ns is not None and stamp_ns <= self._last_ns:
            raise BadSample(STAMP_ORDER, f'stamp {int(stamp_ns)} is not after the previous '
                            f'sample ({self._last_ns})')
        try:
            count = len(grams)
        except TypeError:
            raise BadSample(WRONG_LENGTH, f'expected {self._n} values, got {type(grams).__name__}')
        if count != self._n:
            raise BadSample(WRONG_LENGTH, f'expected {self._n} values (one per bin), got {count}')
        try:
            values = [float(g) for g in grams]
        except (TypeError, ValueError):
            raise BadSample(NOT_A_NUMBER, 'a value is not a number')
        limit = self.settings.max_abs_g
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise BadSample(NOT_FINITE, f'{self.bin_ids[i]}: {v}')
            if not -limit <= v <= limit:
                raise BadSample(OUT_OF_RANGE, f'{self.bin_ids[i]}: {v:g} g beyond +-{limit:g} g')
        return values

    def _record_diff(self, i: int, diff: float) -> None:
        dpos = self._dpos[i]
        self._diffs[i, dpos] = diff
        self._dpos[i] = dpos + 1 if dpos + 1 < self._nd else 0
        self._dcount[i] += 1

    def _track_departures(self, i: int, x: float, stamp_ns: int, prev: float) -> None:
        """Remembers where the change that will settle may have begun: the first sample
        off the old level after a run of samples back inside its band, when that run
        was a real return (more than a spike's length) or followed only a spike; with
        the mean of that run, so the settled change can tell a return to the old level
        from noise around its new level."""
        if abs(x - self._base[i]) <= self._trigger[i]:
            if self._in_run[i] == 0:
                self._prev_out[i] = self._out_run[i]
                self._in_sum[i] = 0.0
            self._in_run[i] += 1
            self._in_sum[i] += x
            self._out_run[i] = 0
            if self._prev_ok[i]:
                self._record_diff(i, x - prev)
            self._prev_ok[i] = True
        else:
            self._prev_ok[i] = False
            run = self._in_run[i]
            if run and (run > MAX_OUTLIERS or self._prev_out[i] <= MAX_OUTLIERS):
                self._deps[i].append((stamp_ns, self._in_sum[i] / run))
            self._in_run[i] = 0
            self._out_run[i] += 1

    def _window(self, i: int, pos: int, n: int) -> np.ndarray:
        """The last n samples of bin i, oldest first."""
        row = self._win[i]
        start = pos - n + 1
        if start >= 0:
            return row[start:pos + 1]
        return np.concatenate((row[start:], row[:pos + 1]))

    def _try_settle(self, i: int, pos: int, stamp_ns: int):
        s = self.settings
        n = min(self._since[i], self._wmax)
        window = self._window(i, pos, n)
        if self._mode[i] == INIT:
            # The first level: once the noise is known from enough differences.
            count = min(self._dcount[i], self._nd)
            settled = None
            if count >= MIN_NOISE_SAMPLES:
                sigma = max(s.noise_floor_g, _robust_sigma(self._diffs[i, :count]))
                settled = self._settle(window, sigma)
            if settled is not None:
                level, first = settled
                self._sigma[i] = sigma
            elif self._resuming[i] and stamp_ns - self._first_ns > self._max_unsettled_ns:
                level, first = float(np.median(window)), 0
                self._sigma[i] = max(self._sigma[i], s.noise_floor_g, _mad_sigma(np.diff(window)))
            else:
                return None
            self._set_stable(i, level)
            if not self._resuming[i]:
                return None
            return self._restart_change(i, level, self._stamps[(pos - n + 1 + first) % self._r],
                                        forced=settled is None)
        forced = False
        settled = self._settle(window, self._sigma[i])
        if settled is not None:
            level, first = settled
        elif stamp_ns - self._moving_since[i] > self._max_unsettled_ns:
            level, first = float(np.median(window)), 0
            self._sigma[i] = max(self._sigma[i], s.noise_floor_g, _mad_sigma(np.diff(window)))
            forced = True
        else:
            return None
        base = self._base[i]
        delta = level - base
        if not forced and 0.5 * self._trigger[i] < abs(delta) < SMALL_CHANGE * self._trigger[i]:
            # A new level a few trigger bands off: the hand's press and the item's ramp
            # hide in the noise of one window; it must hold for two.
            if self._since[i] < 2 * self._w:
                return None
            n = min(self._since[i], self._wlong)
            settled = self._settle(self._window(i, pos, n), self._sigma[i], 2)
            if settled is None:
                return None
            level, first = settled
            delta = level - base
        end_ns = self._stamps[(pos - n + 1 + first) % self._r]
        if abs(delta) < max(s.min_delta_g, s.delta_k * self._sigma[i]):
            if forced:
                # No level to speak of: keep the old one, so that a change that
                # happened meanwhile is measured against it once the cell calms down.
                level = base
            elif abs(delta) <= 0.5 * self._trigger[i]:
                # Back on the old level (a spike, a press): the long-run baseline is
                # far better than one window's mean; weigh the two by their variance.
                level = base + delta * self._w / (self._w + 2.0 / self._alpha)
            self._set_stable(i, level)
            return None
        # The start: the last departure from the old level before the new level
        # began; an excursion that came back to the old level before does not count.
        # Back means: within half the trigger band of the old level, and nearer to it
        # than to the new one (noise around a new level near the band is not back).
        start_ns = None
        near = 0.5 * self._trigger[i]
        for departure, back_at in reversed(self._deps[i]):
            if departure <= end_ns and abs(back_at - base) <= near \
                    and abs(back_at - base) < abs(back_at - level):
                start_ns = departure
                break
        if start_ns is None or start_ns == self._moving_since[i]:
            start_ns = self._early_start(i, pos, delta)
        self._set_stable(i, level)
        return DetectedChange(bin_id=self.bin_ids[i], delta_grams=delta, start_ns=start_ns,
                              end_ns=max(end_ns, start_ns), noise_grams=self._sigma[i],
                              level_grams=level, forced=forced)

    def _restart_change(self, i: int, level: float, end_ns: int, forced: bool):
        """The first level of a resumed bin against its saved one: a change stamped at
        that level's first sample, or None when the two agree."""
        self._resuming[i] = False
        saved = self._saved[i]
        delta = 0.0 if saved is None else level - saved
        if saved is not None and not forced:
            s = self.settings
            if abs(delta) < max(s.min_delta_g, s.delta_k * self._sigma[i]):
                return None
            restart = RESTART_SEEN if self._saved_trusted else RESTART_UNSURE
        else:
            restart = RESTART_UNSURE
        return DetectedChange(bin_id=self.bin_ids[i], delta_grams=delta, start_ns=end_ns,
                              end_ns=end_ns, noise_grams=self._sigma[i], level_grams=level,
                              forced=forced, restart=restart)

    def _early_start(self, i: int, pos: int, delta: float) -> int:
        """The departure, moved back over the samples just before it that were
        already half a trigger band on their way (a small change crosses the band a
        little late). Only the start moves: processed_until is about ends."""
        back = self._k - 1 - self._moving_k[i]        # samples since the departure
        row = self._win[i]
        base = self._base[i]
        half = 0.5 * self._trigger[i]
        start_ns = self._moving_since[i]
        for j in range(1, min(BACKDATE, self._since_stable[i]) + 1):
            if back + j >= self._r:
                break
            at = (pos - back - j) % self._r
            if (row[at] - base) * delta <= half * abs(delta):
                break
            start_ns = self._stamps[at]
        return start_ns

    def _settle(self, window: np.ndarray, sigma: float, windows: int = 1):
        """(level, index of its first sample) when the window is settled, else None.
        Spikes are left out: up to ``windows`` runs of at most MAX_OUTLIERS samples
        further than the trigger band from the window median whose neighbours sit
        near it (a swaying hand's do not), as long as ``windows`` * W samples remain.
        Those must show no more spread than noise (std) and no trend (later half vs
        earlier half)."""
        s = self.settings
        sigma = max(sigma, s.noise_floor_g)
        cut = max(s.trigger_min_g, s.trigger_k * sigma)
        ordered = np.sort(window)
        n = ordered.size
        median = 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])
        if ordered[0] < median - cut or ordered[-1] > median + cut:
            outliers = np.abs(window - median) > cut
            count = int(outliers.sum())
            if n - count < windows * self._w:
                return None
            edges = np.flatnonzero(np.diff(outliers, prepend=False, append=False))
            starts, ends = edges[0::2], edges[1::2]
            if starts.size > windows or (ends - starts).max() > MAX_OUTLIERS:
                return None
            near = 0.5 * cut
            for a, b in zip(starts, ends):
                if (a > 0 and abs(window[a - 1] - median) > near) or \
                        (b < n and abs(window[b] - median) > near):
                    return None
            kept = np.flatnonzero(~outliers)
            first = int(kept[0])
            window = window[kept]
        else:
            first = 0
        n = window.size
        if window.std() > self._spread(n) * sigma:
            return None
        half = n // 2
        if abs(window[half:].mean() - window[:half].mean()) > \
                s.trend_k * 2.0 * sigma / math.sqrt(n):
            return None
        return float(window.mean()), first

    def _spread(self, n: int) -> float:
        """The largest std, in sigmas, of a settled window of n samples."""
        limit = self._spreads.get(n)
        if limit is None:
            limit = self._spreads[n] = math.sqrt(_chi2_quantile(n - 1, self.settings.settle_z) / n)
        return limit

    def _set_stable(self, i: int, level: float) -> None:
        self._level_revision += 1
        self._mode[i] = STABLE
        self._stable_k[i] = self._k - 1
        self._prev_ok[i] = False
        self._base[i] = level
        self._since[i] = 0
        self._trigger[i] = self._trigger_band(self._sigma[i])

    def _trigger_band(self, sigma: float) -> float:
        s = self.settings
        return max(s.trigger_min_g, s.trigger_k * sigma)

    def _update_noise(self) -> None:
        floor = self.settings.noise_floor_g
        for i in range(self._n):
            count = min(self._dcount[i], self._nd)
            if count < MIN_NOISE_SAMPLES:
                continue
            sigma = max(floor, _robust_sigma(self._diffs[i, :count]))
            self._sigma[i] = sigma
            if self._mode[i] != INIT:
                self._trigger[i] = self._trigger_band(sigma)


def _robust_sigma(diffs: np.ndarray) -> float:
    """Sigma of the samples from their first differences: the MAD finds the scale
    (blind to the few large differences of a spike or a step), then the standard
    deviation of the differences within 3.5 of those sigmas refines it (the MAD alone
    scatters +-20 % over 100 differences)."""
    absolute = np.abs(diffs - np.median(diffs))
    mad_sigma = float(np.median(absolute)) * 1.4826
    if mad_sigma <= 0.0:
        return 0.0
    inliers = diffs[absolute <= 3.5 * mad_sigma]
    # A normal distribution cut at +-3.5 sigma keeps 99.4 % of its variance.
    return float(np.sqrt(np.mean((inliers - inliers.mean()) ** 2) / 0.9939)) / math.sqrt(2.0)


def _chi2_quantile(dof: int, z: float) -> float:
    """The chi-square quantile with the upper tail of a normal beyond z
    (Wilson-Hilferty; within 1 % for 5 or more degrees of freedom)."""
    h = 2.0 / (9.0 * dof)
    return dof * (1.0 - h + z * math.sqrt(h)) ** 3


def _mad_sigma(diffs: np.ndarray) -> float:
    """Robust sigma of the samples from their first differences."""
    if diffs.size == 0:
        return 0.0
    return float(np.median(np.abs(diffs - np.median(diffs)))) * _MAD_TO_SIGMA
