"""Simulated load cells of one shelf: true grams in, noisy samples out.

No rclpy, no clocks. ``LoadCellSim`` samples a true-weight function (in the store
simulator ``lambda t: timeline.bin_grams(shelf_id, t)``) at ``rate_hz`` and adds what
real load cells add:

- Gaussian noise, ``sigma_g`` per sample and bin;
- vibration spikes (a door, a cart bumping the shelf): ``spike_rate_hz`` per shelf,
  each 1-3 samples long on every bin of the shelf, U(0.5, 2) x ``spike_g`` high with a
  random sign per bin;
- slow drift: per bin a constant rate of U(0.5, 1) x ``drift_g_per_15min`` grams per
  15 minutes, random sign;
- lost samples (``dropped``: probability per sample) and stamp jitter (``jitter_ms``,
  1 sigma; stamps stay strictly increasing).

Seeded from the scenario seed and a CRC-32 of the shelf id (never Python's hash()),
so every run of a scenario gives the same samples. ``SimulatedBoard`` turns samples
into HX711 protocol lines (jwo_nodes.core.hx711), as a real board would send them.
"""
import zlib
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from jwo_nodes.core import hx711

NS = 1_000_000_000
_BLOCK = 256  # random numbers are drawn in blocks of this many samples


@dataclass(frozen=True)
class LoadCellNoise:
    sigma_g: float = 1.0
    spike_rate_hz: float = 0.0
    spike_g: float = 40.0
    drift_g_per_15min: float = 0.0
    dropped: float = 0.0
    jitter_ms: float = 0.0

    @classmethod
    def from_scenario(cls, noise) -> 'LoadCellNoise':
        """From jwo_nodes.core.sim.Noise (scenario ``noise:``)."""
        return cls(sigma_g=float(noise.loadcell_sigma_g),
                   spike_rate_hz=float(noise.spike_rate_hz),
                   spike_g=float(noise.spike_g),
                   drift_g_per_15min=float(noise.drift_g_per_15min),
                   dropped=min(0.9, float(getattr(noise, 'dropped_messages', 0.0))),
                   jitter_ms=float(getattr(noise, 'clock_jitter_ms', 0.0)))


@dataclass(frozen=True)
class SimSample:
    k: int                         # sample index: scenario time k / rate_hz
    t_ns: int                      # scenario time of the sample, with jitter
    grams: Optional[List[float]]   # None: this sample was lost


def shelf_seed(seed: int, shelf_id: str) -> list:
    return [int(seed) & 0xFFFFFFFF, zlib.crc32(shelf_id.encode('utf-8'))]


class LoadCellSim:
    """The load cells of one shelf. ``next()`` returns samples k = 0, 1, 2, ..."""

    def __init__(self, shelf_id: str, n_bins: int, rate_hz: float,
                 true_grams: Callable[[int], Sequence[float]], seed: int = 0,
                 noise: LoadCellNoise = LoadCellNoise()):
        if n_bins < 1 or rate_hz <= 0:
            raise ValueError('need at least one bin and a rate > 0')
        self.shelf_id = shelf_id
        self.n_bins = n_bins
        self.rate_hz = float(rate_hz)
        self.noise = noise
        self._true = true_grams
        self._rng = np.random.default_rng(shelf_seed(seed, shelf_id))
        rng = self._rng
        drift = noise.drift_g_per_15min / 900.0   # grams per second
        self._drift_g_per_s = [float(drift * rng.uniform(0.5, 1.0) * rng.choice((-1.0, 1.0)))
                               for _ in range(n_bins)]
        self._spike_p = min(1.0, noise.spike_rate_hz / self.rate_hz)
        self._k = 0
        self._last_t = -1
        self._block_at = 0
        self._spike = None          # (samples left, [grams per bin])
        self._draw_block()

    def _draw_block(self) -> None:
        rng = self._rng
        self._normal = rng.normal(0.0, self.noise.sigma_g, size=(_BLOCK, self.n_bins))
        self._events = rng.random(size=(_BLOCK, 2))      # spike?, dropped?
        self._jitter = rng.normal(0.0, self.noise.jitter_ms * 1e6, size=_BLOCK)
        self._block_at = 0

    def nominal_ns(self, k: int) -> int:
        """Scenario time of sample k without jitter."""
        return k * NS // int(self.rate_hz) if float(self.rate_hz).is_integer() \
            else int(round(k * NS / self.rate_hz))

    def next(self) -> SimSample:
        if self._block_at == _BLOCK:
            self._draw_block()
        j = self._block_at
        self._block_at += 1
        k = self._k
        self._k += 1
        t = self.nominal_ns(k)
        if self.noise.jitter_ms > 0:
            t = int(t + self._jitter[j])
        t = max(t, self._last_t + 1, 0)
        self._last_t = t
        spike_draw, drop_draw = self._events[j]
        if self._spike is None and spike_draw < self._spike_p:
            length = int(self._rng.integers(1, 4))
            heights = [float(self._rng.uniform(0.5, 2.0) * self.noise.spike_g
                             * self._rng.choice((-1.0, 1.0))) for _ in range(self.n_bins)]
            self._spike = [length, heights]
        true = self._true(t)
        t_s = t / NS
        grams = [float(true[i]) + float(self._normal[j, i]) + self._drift_g_per_s[i] * t_s
                 for i in range(self.n_bins)]
        if self._spike is not None:
            for i in range(self.n_bins):
                grams[i] += self._spike[1][i]
            self._spike[0] -= 1
            if self._spike[0] == 0:
                self._spike = None
        if drop_draw < self.noise.dropped:
            return SimSample(k, t, None)
        return SimSample(k, t, grams)


class SimulatedBoard:
    """An HX711 board on a shelf: grams to calibrated raw counts to protocol lines.
    Lost samples still use up a sequence number, so the receiver sees a gap."""

    def __init__(self, n_bins: int, offsets: Sequence[float] = (0.0,),
                 scales: Sequence[float] = (1.0,), first_seq: int = 0):
        self.calibration = hx711.Calibration.per_bin(n_bins, offsets, scales)
        self._seq = first_seq % hx711.SEQ_MODULO

    def line(self, grams: Optional[Sequence[float]]) -> Optional[bytes]:
        """The line of one sample, or None for a lost one (its number is skipped)."""
        seq = self._seq
        self._seq = (seq + 1) % hx711.SEQ_MODULO
        if grams is None:
            return None
        return hx711.encode(seq, self.calibration.to_raw(grams))

