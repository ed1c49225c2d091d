"""Change detection on shelf load cells (jwo_nodes/core/weight_detect.py) and the
load-cell simulator (jwo_nodes/core/loadcell_sim.py).

Every claim is checked on seeded signals with known truth: true grams per bin on the
sample grid, through the simulated load cells (noise, spikes, drift), into the
detector; then each true change must be found exactly once and nothing else.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from jwo_nodes.core.loadcell_sim import LoadCellNoise, LoadCellSim, shelf_seed
from jwo_nodes.core.weight_detect import (MOVING, RESTART_NONE, RESTART_SEEN, RESTART_UNSURE,
                                          STABLE, BadSample, ChangeDetector, DetectorSettings,
                                          SavedLevels)

NS = 1_000_000_000
BINS = ('B0', 'B1', 'B2')


# -- signals with known truth ----------------------------------------------------------

@dataclass
class TrueChange:
    bin: int
    start_s: float   # the hand touches the bin
    end_s: float     # the new level is reached
    delta: float


@dataclass
class Shelf:
    rate: int
    grams: np.ndarray                    # (bins, samples): true grams on the sample grid
    changes: list = field(default_factory=list)
    transients: int = 0

    @property
    def t(self) -> np.ndarray:
        return np.arange(self.grams.shape[1]) / self.rate

    @property
    def samples(self) -> int:
        return self.grams.shape[1]

    def true_fn(self):
        grams, rate, last = self.grams, self.rate, self.grams.shape[1] - 1
        return lambda t_ns: grams[:, min(last, max(0, int(round(t_ns * rate / NS))))]


def flat_shelf(rate, seconds, levels=(5000.0, 3000.0, 8000.0)) -> Shelf:
    samples = int(seconds * rate) + 1
    return Shelf(rate, np.repeat(np.array(levels, float)[:, None], samples, axis=1))


def add_change(shelf, b, start_s, delta, press_g=30.0, press_s=0.25, ramp_s=0.45):
    """A reach: the hand presses press_g for press_s, then the item moves over ramp_s
    (the simulator's model of a take or a put-back, with its timing varied)."""
    t, g = shelf.t, shelf.grams[b]
    ramp0 = start_s + press_s
    end = ramp0 + ramp_s
    g[(t >= start_s) & (t < ramp0)] += press_g
    moving = (t >= ramp0) & (t < end)
    g[moving] += delta * (t[moving] - ramp0) / ramp_s
    g[t >= end] += delta
    shelf.changes.append(TrueChange(b, start_s, end, delta))


def add_press(shelf, b, start_s, force, up_s, hold_s, down_s, rng, lean=False):
    """A hand pressing (flat hold) or leaning (swaying, trembling) on a bin, then
    letting go: the level afterwards is the level before."""
    t, g = shelf.t, shelf.grams[b]
    length = up_s + hold_s + down_s
    inside = (t >= start_s) & (t < start_s + length)
    tt = t[inside] - start_s
    profile = np.clip(np.minimum(tt / up_s, (length - tt) / down_s), 0.0, 1.0)
    push = force * profile
    if lean:
        # A leaning hand is never still: it sways (1-3 Hz, 15 % of the force, at least
        # 10 g) and trembles.
        sway = max(10.0, 0.15 * force)
        push += profile * (sway * np.sin(2 * math.pi * rng.uniform(1.0, 3.0) * tt
                                         + rng.uniform(0, 2 * math.pi))
                           + rng.normal(0.0, max(3.0, 0.05 * force), size=tt.size))
    g[inside] += push
    shelf.transients += 1


def random_shelf(seed, seconds=150.0, rate=None, presses=True) -> Shelf:
    """Takes and put-backs of 30..1100 g (a press of 0..60 g for 0..0.4 s before the
    item moves over 0.2..1 s), presses (up to 2 kg, held up to 0.5 s) and leans
    (1..4 s) that let go again; per bin at random, so bins overlap in time."""
    rng = np.random.default_rng(seed)
    rate = rate or int(rng.choice([10, 20, 40, 60, 80]))
    shelf = flat_shelf(rate, seconds, [float(rng.uniform(2000, 12000)) for _ in BINS])
    for b in range(len(BINS)):
        t = rng.uniform(5.0, 8.0)
        while True:
            if presses and rng.random() < 0.3:
                lean = rng.random() < 0.4
                up, down = rng.uniform(0.05, 0.3, size=2)
                hold = rng.uniform(1.0, 4.0) if lean else rng.uniform(0.0, 0.5)
                if t + up + hold + down + 3 > seconds:
                    break
                add_press(shelf, b, t, float(rng.uniform(20, 2000)), up, hold, down, rng, lean)
                t += up + hold + down
            else:
                delta = float(rng.uniform(30, 1100)) * (1 if rng.random() < 0.4 else -1)
                press_s, ramp_s = rng.uniform(0.0, 0.4), rng.uniform(0.2, 1.0)
                if t + press_s + ramp_s + 3 > seconds:
                    break
                add_change(shelf, b, t, delta, press_g=float(rng.uniform(0, 60)),
                           press_s=max(press_s, 1e-4), ramp_s=ramp_s)
                t += press_s + ramp_s
            t += rng.uniform(2.5, 10.0)
    return shelf


@dataclass
class Run:
    changes: list
    detector: ChangeDetector
    # processed_until after each sample, and the changes that came with the sample.
    trace: list


def run(shelf, noise, seed=0, settings=DetectorSettings()) -> Run:
    detector = ChangeDetector(BINS[:shelf.grams.shape[0]], shelf.rate, settings)
    cells = LoadCellSim('S', shelf.grams.shape[0], shelf.rate, shelf.true_fn(), seed, noise)
    changes, trace = [], []
    for _ in range(shelf.samples):
        sample = cells.next()
        if sample.grams is None:
            continue
        before = detector.processed_until_ns
        found = detector.feed(sample.t_ns, sample.grams)
        changes += found
        trace.append((before, detector.processed_until_ns, found))
    return Run(changes, detector, trace)


def match(shelf, found, sigma):
    """(missed, invented, errors): a detected change matches a true change of its bin
    that it overlaps in time (a small change may cross the trigger band only as it
    ends; a spike just before may start it early), with the delta within 2 sigma + 1 g."""
    left = list(found)
    missed, errors = [], []
    for c in shelf.changes:
        hit = next((d for d in left if d.bin_id == BINS[c.bin]
                    and c.start_s - 1.0 <= d.start_ns / NS <= c.end_s + 0.25
                    and c.start_s <= d.end_ns / NS <= c.end_s + 2.5
                    and abs(d.delta_grams - c.delta) <= 2.0 * sigma + 1.0), None)
        if hit is None:
            missed.append(c)
            continue
        left.remove(hit)
        errors.append(hit.delta_grams - c.delta)
    return missed, left, errors


def assert_processed_until_holds(trace):
    """processed_until never goes back, and no change comes out that ended at or
    before a processed_until already announced."""
    last = 0
    for before, after, found in trace:
        assert after >= before >= last
        for change in found:
            assert change.end_ns > before, (change, before)
            assert change.start_ns <= change.end_ns
        last = after


# -- noise, spikes, drift: no events ------------------------------------------------------

@pytest.mark.parametrize('rate', [10, 80])
def test_drift_and_noise_over_16_minutes_make_no_events(rate):
    shelf = flat_shelf(rate, 16 * 60)
    noise = LoadCellNoise(sigma_g=5.0, spike_rate_hz=0.05, spike_g=40.0, drift_g_per_15min=5.0)
    result = run(shelf, noise, seed=rate)
    assert result.changes == []
    assert_processed_until_holds(result.trace)
    detector = result.detector
    assert not detector.changing
    # The baseline followed the drift: the level now is the true level plus the drift.
    cells = LoadCellSim('S', 3, rate, shelf.true_fn(), rate, noise)
    drift_now = [g * 16 * 60 for g in cells._drift_g_per_s]
    assert all(abs(d) >= 2.5 * 16 / 15 for d in drift_now)   # it did drift
    for level, true, drift in zip(detector.levels, shelf.grams[:, -1], drift_now):
        assert abs(level - (true + drift)) < 1.5
    # The noise estimate (30 s of differences: +-5 % at 10 Hz, +-2 % at 80 Hz).
    for sigma in detector.noise_grams:
        assert 4.25 < sigma < 5.75


@pytest.mark.parametrize('rate, sigma', [(10, 1.0), (10, 5.0), (40, 3.0), (80, 1.0), (80, 5.0)])
def test_vibration_spikes_make_no_events(rate, sigma):
    # A spike a second on every bin: 1-3 samples of +-20..80 g.
    shelf = flat_shelf(rate, 240)
    noise = LoadCellNoise(sigma_g=sigma, spike_rate_hz=1.0, spike_g=40.0)
    result = run(shelf, noise, seed=int(rate * sigma))
    assert result.changes == []
    assert_processed_until_holds(result.trace)


@pytest.mark.parametrize('rate, sigma', [(10, 1.0), (10, 5.0), (80, 1.0), (80, 5.0)])
def test_presses_and_leans_that_let_go_make_no_events(rate, sigma):
    rng = np.random.default_rng(rate + int(sigma))
    shelf = flat_shelf(rate, 300)
    for b in range(3):
        t = 5.0 + b
        while t < 290:
            lean = rng.random() < 0.4
            up, down = rng.uniform(0.05, 0.3, size=2)
            hold = rng.uniform(1.0, 4.0) if lean else rng.uniform(0.0, 0.5)
            add_press(shelf, b, t, float(rng.uniform(20, 2000)), up, hold, down, rng, lean)
            t += up + hold + down + rng.uniform(1.0, 4.0)
    assert shelf.transients > 180
    noise = LoadCellNoise(sigma_g=sigma, spike_rate_hz=0.1, spike_g=40.0)
    result = run(shelf, noise, seed=rate)
    assert result.changes == []
    assert_processed_until_holds(result.trace)


def test_a_hand_held_still_longer_than_settle_s_is_two_changes():
    """The documented limit: a load that holds still is a level."""
    shelf = flat_shelf(50, 20)
    add_press(shelf, 0, 5.0, 300.0, 0.1, 3.0, 0.1, np.random.default_rng(0))
    result = run(shelf, LoadCellNoise(sigma_g=2.0), seed=1)
    assert [round(c.delta_grams / 10) * 10 for c in result.changes] == [300, -300]


# -- changes: found once, with the right size ---------------------------------------------

@pytest.mark.parametrize('rate', [10, 80])
def test_two_bins_changing_at_the_same_time_are_two_changes(rate):
    shelf = flat_shelf(rate, 30)
    add_change(shelf, 0, 10.0, -350.0)
    add_change(shelf, 1, 10.0, +520.0)
    add_change(shelf, 1, 20.0, -1080.0)
    add_change(shelf, 2, 20.0, -32.0)
    result = run(shelf, LoadCellNoise(sigma_g=3.0, spike_rate_hz=0.1), seed=rate)
    missed, invented, _ = match(shelf, result.changes, 3.0)
    assert (missed, invented) == ([], [])
    first = sorted(result.changes, key=lambda c: c.bin_id)[:2]
    assert abs(first[0].end_ns - first[1].end_ns) <= 2 * NS // rate


@pytest.mark.parametrize('rate', [10, 80])
@pytest.mark.parametrize('grams', [30.0, 1100.0])
def test_small_and_large_items_at_the_most_noise(rate, grams):
    """Takes and put-backs of a 30 g and an 1100 g item, 5 g noise and spikes."""
    rng = np.random.default_rng(int(grams) + rate)
    shelf = flat_shelf(rate, 200, levels=(2000.0, 4000.0, 30000.0))
    for b in range(3):
        t, sign = 5.0 + b, -1.0
        while t < 195:
            add_change(shelf, b, t, sign * grams, press_g=float(rng.uniform(0, 60)),
                       press_s=float(rng.uniform(0.05, 0.4)), ramp_s=float(rng.uniform(0.2, 0.8)))
            t += rng.uniform(3.0, 6.0)
            sign = -sign
    noise = LoadCellNoise(sigma_g=5.0, spike_rate_hz=0.1, spike_g=40.0, drift_g_per_15min=5.0)
    result = run(shelf, noise, seed=rate)
    missed, invented, errors = match(shelf, result.changes, 5.0)
    assert len(shelf.changes) > 100
    assert (missed, invented) == ([], [])
    assert max(abs(e) for e in errors) <= 2.0 * 5.0 + 1.0
    assert_processed_until_holds(result.trace)


def test_random_shelves_no_invented_and_no_lost_changes():
    """14 seeded shelves (10-80 Hz, 1-5 g noise, spikes, drift, lost samples,
    presses and leans): every take and put-back found once, nothing else."""
    total, worst, end_errors = 0, 0.0, []
    for seed in range(14):
        sigma = float(np.random.default_rng(1000 + seed).uniform(1.0, 5.0))
        shelf = random_shelf(seed)
        noise = LoadCellNoise(sigma_g=sigma, spike_rate_hz=0.1, spike_g=40.0,
                              drift_g_per_15min=5.0, dropped=0.01)
        result = run(shelf, noise, seed=seed)
        missed, invented, errors = match(shelf, result.changes, sigma)
        assert (missed, invented) == ([], []), f'seed {seed}'
        assert_processed_until_holds(result.trace)
        total += len(errors)
        worst = max(worst, max(abs(e) / sigma for e in errors))
        for c in shelf.changes:
            found = [d for d in result.changes if d.bin_id == BINS[c.bin]
                     and c.start_s - 1.0 <= d.start_ns / NS <= c.end_s + 0.25]
            end_errors.append(found[0].end_ns / NS - c.end_s)
    assert total > 300
    assert worst <= 2.0
    # Most changes end where the truth does (within 0.15 s).
    assert np.percentile(np.abs(end_errors), 90) < 0.15


def test_the_store_simulator_timeline():
    """The lead's simulator (jwo_nodes/core/sim.py) on the demo scenario: every true
    weight event of every shelf found, at 10 and 60 Hz, at the scenario's noise and
    at three times it."""
    sim = pytest.importorskip('jwo_nodes.core.sim')
    from jwo_nodes.core.config import load_store_config
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    store = load_store_config(repo / 'config/stores/demo.yaml')
    scenario = sim.load_scenario(repo / 'config/scenarios/demo.yaml', store)
    timeline = sim.Timeline(scenario, store)
    base = LoadCellNoise.from_scenario(scenario.noise)
    for rate in (10, 60):
        for factor in (1.0, 3.0):
            noise = LoadCellNoise(sigma_g=base.sigma_g * factor,
                                  spike_rate_hz=base.spike_rate_hz * factor,
                                  spike_g=base.spike_g, drift_g_per_15min=base.drift_g_per_15min)
            for shelf_id, shelf in store.shelves.items():
                bins = [b.id for b in shelf.bins]
                cells = LoadCellSim(shelf_id, len(bins), rate,
                                    lambda t, s=shelf_id: timeline.bin_grams(s, t),
                                    scenario.seed, noise)
                detector = ChangeDetector(bins, rate)
                found = []
                while True:
                    sample = cells.next()
                    if sample.t_ns > timeline.duration_ns + 3 * NS:
                        break
                    found += detector.feed(sample.t_ns, sample.grams)
                for event in [e for e in timeline.weight_events if e.shelf_id == shelf_id]:
                    hit = next(d for d in found if d.bin_id == event.bin_id
                               and event.start_ns - NS // 2 <= d.start_ns <= event.end_ns
                               and event.ramp_start_ns <= d.end_ns <= event.end_ns + 2 * NS)
                    assert abs(hit.delta_grams - event.delta_grams) <= 2 * noise.sigma_g + 1
                    found.remove(hit)
                assert found == [], (rate, factor, shelf_id)


# -- processed_until, forced settling ------------------------------------------------------

def test_processed_until_holds_before_a_pending_change():
    shelf = flat_shelf(50, 12)
    add_change(shelf, 1, 5.0, -200.0, press_s=0.2, ramp_s=0.4)
    detector = ChangeDetector(BINS, 50)
    cells = LoadCellSim('S', 3, 50, shelf.true_fn(), 3, LoadCellNoise(sigma_g=1.0))
    departure = None
    for _ in range(shelf.samples):
        sample = cells.next()
        found = detector.feed(sample.t_ns, sample.grams)
        if detector.changing and departure is None:
            departure = sample.t_ns
            assert 5.0 <= departure / NS <= 5.05
        if detector.changing:
            assert detector.processed_until_ns == departure - 1
            assert detector.modes[1] == MOVING
        elif departure is None:
            assert detector.processed_until_ns == sample.t_ns
        if found:
            (change,) = found
            assert change.end_ns > departure - 1
            assert abs(change.delta_grams + 200.0) < 3.0
            assert not detector.changing
            assert detector.processed_until_ns == sample.t_ns
    assert detector.modes == [STABLE] * 3


def test_a_bin_that_never_settles_is_settled_by_force():
    """A cell gone wild (300 g noise for 25 s) holds processed_until back for at most
    max_unsettled_s at a time and invents nothing; a bin that keeps swinging around a
    new level gets that level as a forced change."""
    rate = 20
    detector = ChangeDetector(BINS, rate, DetectorSettings(max_unsettled_s=10.0))
    rng = np.random.default_rng(4)
    found, held, since = [], [], None
    for k in range(rate * 80):
        t = k * NS // rate
        wild = 500.0 + (rng.normal(0, 300.0) if 5 * rate <= k < 30 * rate else rng.normal(0, 1.0))
        # Bin 2: +2 kg at 40 s, then swinging +-60 g at 1.3 Hz for 20 s.
        swing = 2000.0 + 60.0 * math.sin(2 * math.pi * 1.3 * t / NS) if 40 * rate <= k < 60 * rate \
            else (2000.0 if k >= 60 * rate else 0.0)
        found += detector.feed(t, [1000.0 + rng.normal(0, 1.0), wild,
                                   3000.0 + swing + rng.normal(0, 1.0)])
        if detector.changing and since is None:
            since = t
        elif not detector.changing and since is not None:
            held.append((t - since) / NS)
            since = None
    assert max(held) <= 10.0 + 2 * 13 / rate
    assert [(c.bin_id, c.forced) for c in found] == [('B2', True)]
    assert abs(found[0].delta_grams - 2000.0) < 60.0
    assert detector.modes == [STABLE] * 3 and not detector.changing
    assert detector.processed_until_ns == (rate * 80 - 1) * NS // rate


# -- bad input ------------------------------------------------------------------------------

BAD = [
    ('not_finite', lambda t: (t, [float('nan'), 1.0, 2.0])),
    ('not_finite', lambda t: (t, [1.0, float('inf'), 2.0])),
    ('not_finite', lambda t: (t, [1.0, 2.0, -float('inf')])),
    ('wrong_length', lambda t: (t, [1.0, 2.0])),
    ('wrong_length', lambda t: (t, [1.0, 2.0, 3.0, 4.0])),
    ('wrong_length', lambda t: (t, None)),
    ('not_a_number', lambda t: (t, ['x', 1.0, 2.0])),
    ('not_a_number', lambda t: (t, [None, 1.0, 2.0])),
    ('out_of_range', lambda t: (t, [1e12, 1.0, 2.0])),
    ('stamp_order', lambda t: (t - NS // 50, [1.0, 2.0, 3.0])),   # the previous stamp again
    ('stamp_order', lambda t: (t - NS, [1.0, 2.0, 3.0])),
    ('bad_stamp', lambda t: (float(t), [1.0, 2.0, 3.0])),
    ('bad_stamp', lambda t: (True, [1.0, 2.0, 3.0])),
]


def test_bad_input_is_refused_and_leaves_no_trace():
    shelf = random_shelf(7, seconds=60, rate=50)
    noise = LoadCellNoise(sigma_g=2.0, spike_rate_hz=0.1)
    clean = ChangeDetector(BINS, 50)
    dirty = ChangeDetector(BINS, 50)
    cells = LoadCellSim('S', 3, 50, shelf.true_fn(), 7, noise)
    rng = np.random.default_rng(0)
    reasons = set()
    found_clean, found_dirty = [], []
    for _ in range(shelf.samples):
        sample = cells.next()
        if rng.random() < 0.1:
            expected, make = BAD[int(rng.integers(len(BAD)))]
            stamp, grams = make(sample.t_ns)
            with pytest.raises(BadSample) as caught:
                dirty.feed(stamp, grams)
            assert caught.value.reason == expected
            reasons.add(expected)
        found_clean += clean.feed(sample.t_ns, sample.grams)
        found_dirty += dirty.feed(sample.t_ns, sample.grams)
        assert dirty.processed_until_ns == clean.processed_until_ns
        assert dirty.levels == clean.levels
    assert found_dirty == found_clean and len(found_clean) >= 10
    assert reasons == {reason for reason, _ in BAD}
    # numpy numbers are fine.
    dirty.feed(np.int64(sample.t_ns + 1), np.array([1.0, 2.0, 3.0]))


def test_settings_are_validated():
    for bad in (dict(settle_s=0), dict(trigger_k=-1), dict(noise_window_s=math.nan),
                dict(max_unsettled_s=0.5, settle_s=1.0), dict(delta_k=-0.1)):
        with pytest.raises(ValueError):
            ChangeDetector(BINS, 50, DetectorSettings(**bad))
    for rate in (0, -5, math.inf):
        with pytest.raises(ValueError):
            ChangeDetector(BINS, rate)
    with pytest.raises(ValueError):
        ChangeDetector([], 50)


# -- restarts: levels saved before, compared after ---------------------------------------------

RESTART_AT = 1000 * NS      # stamp of the first sample after the restart
MAX_AGE = 300 * NS


def resumed(shelf, saved, seed=5, settings=DetectorSettings(), sigma=2.0) -> Run:
    """The shelf through a fresh detector resumed from ``saved``, its samples stamped
    from RESTART_AT."""
    detector = ChangeDetector(BINS, shelf.rate, settings)
    cells = LoadCellSim('S', 3, shelf.rate, shelf.true_fn(), seed, LoadCellNoise(sigma_g=sigma))
    changes, trace = [], []
    for k in range(shelf.samples):
        sample = cells.next()
        stamp = RESTART_AT + sample.t_ns
        if k == 0:
            detector.resume(saved, stamp, MAX_AGE)
        before = detector.processed_until_ns
        found = detector.feed(stamp, sample.grams)
        changes += found
        trace.append((before, detector.processed_until_ns, found))
    return Run(changes, detector, trace)


def saved_at(age_s, levels=(5000.0, 3000.0, 8000.0), bins=BINS) -> SavedLevels:
    return SavedLevels(tuple(bins), tuple(levels), RESTART_AT - int(age_s * NS))


def test_a_take_while_the_node_was_down_is_a_change_at_the_first_settled_level():
    shelf = flat_shelf(50, 20, levels=(5000.0, 2650.0, 8000.0))   # B1: 350 g gone
    add_change(shelf, 2, 10.0, -120.0)                            # B2: live, after
    result = resumed(shelf, saved_at(20))
    down, live = result.changes
    assert (down.bin_id, down.restart, down.forced) == ('B1', RESTART_SEEN, False)
    assert abs(down.delta_grams + 350.0) < 2.0 and abs(down.level_grams - 2650.0) < 2.0
    # Stamped when the node saw it: both stamps are the first sample of the first
    # settled level after the restart.
    assert down.start_ns == down.end_ns and RESTART_AT <= down.end_ns < RESTART_AT + 2 * NS
    assert (live.bin_id, live.restart) == ('B2', RESTART_NONE)
    assert abs(live.delta_grams + 120.0) < 3.0
    assert_processed_until_holds(result.trace)
    # Until every resumed bin has its first level nothing after the restart is final.
    assert result.trace[0][1] == RESTART_AT - 1 and result.detector.modes == [STABLE] * 3


def test_resumed_bins_that_agree_with_their_saved_levels_say_nothing():
    result = resumed(flat_shelf(50, 10), saved_at(20, levels=(5003.0, 2998.0, 8000.0)))
    assert result.changes == []
    assert not result.detector.changing
    assert result.detector.processed_until_ns == RESTART_AT + 10 * NS


@pytest.mark.parametrize('saved, flagged', [
    # Older than the allowed age: a difference is unsure, an agreement is not reported.
    (saved_at(MAX_AGE / NS + 1), [('B1', -350.0)]),
    # Of other bins: every bin's first level is unsure, no difference to measure.
    (saved_at(20, bins=('B0', 'B1', 'B9')), [('B0', 0.0), ('B1', 0.0), ('B2', 0.0)]),
    # Unreadable.
    (None, [('B0', 0.0), ('B1', 0.0), ('B2', 0.0)]),
    # A bin with no level saved.
    (saved_at(20, levels=(5000.0, None, 8000.0)), [('B1', 0.0)]),
])
def test_after_a_restart_what_cannot_be_told_is_flagged_unsure(saved, flagged):
    result = resumed(flat_shelf(50, 10, levels=(5000.0, 2650.0, 8000.0)), saved)
    assert [(c.bin_id, c.restart) for c in result.changes] == \
        [(b, RESTART_UNSURE) for b, _ in flagged]
    for change, (_, delta) in zip(result.changes, flagged):
        assert abs(change.delta_grams - delta) < 2.0
    assert_processed_until_holds(result.trace)


def test_a_stream_that_starts_over_does_not_use_the_saved_levels():
    """A simulation or replay restarted from its beginning: its stamps are not after
    the saved ones; the detector starts as on a first start."""
    shelf = flat_shelf(50, 10, levels=(5000.0, 2650.0, 8000.0))
    result = resumed(shelf, saved_at(-5))
    fresh = resumed(shelf, None)
    assert result.changes == [] and len(fresh.changes) == 3
    assert result.trace[0][1] == RESTART_AT


def test_a_resumed_bin_that_does_not_settle_is_unsure_after_max_unsettled_s():
    shelf = flat_shelf(20, 30)
    shelf.grams[1] += 60.0 * np.sin(2 * np.pi * 1.3 * shelf.t)   # a bin that keeps swinging
    result = resumed(shelf, saved_at(20), settings=DetectorSettings(max_unsettled_s=10.0))
    (change,) = result.changes
    assert (change.bin_id, change.restart, change.forced) == ('B1', RESTART_UNSURE, True)
    # Settled by force on the sample after max_unsettled_s; its window began before.
    decided = next(k for k, (_, _, found) in enumerate(result.trace) if found)
    assert decided == 10 * shelf.rate + 1
    assert RESTART_AT + 9 * NS < change.end_ns < RESTART_AT + 10 * NS
    assert_processed_until_holds(result.trace)


def test_saved_levels_round_trip_and_what_a_restarted_detector_keeps():
    detector = ChangeDetector(BINS, 50)
    assert detector.saved_levels() == SavedLevels(BINS, (None, None, None), 0)
    detector.resume(saved_at(20, levels=(5000.0, None, 8000.0)), RESTART_AT, MAX_AGE)
    detector.feed(RESTART_AT, [5000.0, 3000.0, 9000.0])
    # Not settled yet: a trusted saved level is kept as it was, a missing one stays so.
    kept = detector.saved_levels()
    assert kept == SavedLevels(BINS, (5000.0, None, 8000.0), RESTART_AT)
    assert SavedLevels.from_document(kept.to_document()) == kept
    with pytest.raises(ValueError):
        detector.resume(kept, RESTART_AT + NS, MAX_AGE)       # after the first sample
    old = ChangeDetector(BINS, 50)
    old.resume(saved_at(MAX_AGE / NS + 1), RESTART_AT, MAX_AGE)
    old.feed(RESTART_AT, [5000.0, 3000.0, 8000.0])
    assert old.saved_levels().levels == (None, None, None)    # untrusted: not passed on
    for bad in ({}, {'bin_ids': ['B0'], 'levels': [], 'stamp_ns': 1},
                {'bin_ids': ['B0'], 'levels': [float('nan')], 'stamp_ns': 1},
                {'bin_ids': ['B0'], 'levels': [True], 'stamp_ns': 1},
                {'bin_ids': [0], 'levels': [1.0], 'stamp_ns': 1},
                {'bin_ids': ['B0'], 'levels': [1.0], 'stamp_ns': -1}, []):
        with pytest.raises(ValueError):
            SavedLevels.from_document(bad)


def test_level_revision_grows_with_every_new_level():
    shelf = flat_shelf(50, 12)
    add_change(shelf, 0, 6.0, -200.0)
    detector = ChangeDetector(BINS, 50)
    cells = LoadCellSim('S', 3, 50, shelf.true_fn(), 1, LoadCellNoise(sigma_g=1.0))
    revisions = []
    for _ in range(shelf.samples):
        sample = cells.next()
        if detector.feed(sample.t_ns, sample.grams):
            revisions.append(detector.level_revision)
    assert revisions == [4]           # three first levels, then the change
    assert detector.level_revision == 4


# -- the load-cell simulator ------------------------------------------------------------------

def samples_of(cells, n):
    return [cells.next() for _ in range(n)]


def test_simulator_is_reproducible_per_seed_and_shelf():
    truth = lambda t: [1000.0, 2000.0]                       # noqa: E731
    noise = LoadCellNoise(sigma_g=2.0, spike_rate_hz=0.5, drift_g_per_15min=3.0,
                          dropped=0.05, jitter_ms=1.0)
    a = samples_of(LoadCellSim('S1', 2, 40, truth, 7, noise), 2000)
    b = samples_of(LoadCellSim('S1', 2, 40, truth, 7, noise), 2000)
    c = samples_of(LoadCellSim('S2', 2, 40, truth, 7, noise), 2000)
    d = samples_of(LoadCellSim('S1', 2, 40, truth, 8, noise), 2000)
    assert a == b
    assert a != c and a != d
    assert shelf_seed(7, 'S1') == shelf_seed(7, 'S1') != shelf_seed(7, 'S2')


def test_simulator_noise_spikes_drift_and_losses():
    rate, seconds = 50, 900
    truth = lambda t: [1000.0, 2000.0, 500.0]               # noqa: E731
    noise = LoadCellNoise(sigma_g=3.0, spike_rate_hz=0.2, spike_g=40.0,
                          drift_g_per_15min=6.0, dropped=0.02, jitter_ms=2.0)
    cells = LoadCellSim('S', 3, rate, truth, 1, noise)
    samples = samples_of(cells, rate * seconds)
    kept = [s for s in samples if s.grams is not None]
    assert 0.015 < 1 - len(kept) / len(samples) < 0.025
    stamps = [s.t_ns for s in samples]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert max(abs(s.t_ns - s.k * NS // rate) for s in samples) < 0.02 * NS
    grams = np.array([s.grams for s in kept]) - np.array([1000.0, 2000.0, 500.0])
    t = np.array([s.t_ns for s in kept]) / NS
    drift = np.array(cells._drift_g_per_s)
    assert np.all((np.abs(drift) * 900 >= 3.0) & (np.abs(drift) * 900 <= 6.0))
    residual = grams - t[:, None] * drift
    spikes = np.abs(residual) > 6 * 3.0
    inliers = residual[~spikes.any(axis=1)]
    assert np.allclose(inliers.std(axis=0), 3.0, rtol=0.05)
    # Spikes hit all bins at once, 20..80 g, about spike_rate_hz times 2 samples each.
    on = spikes.all(axis=1)
    starts = np.count_nonzero(on[1:] & ~on[:-1])
    assert 0.6 * 0.2 * seconds < starts < 1.4 * 0.2 * seconds
    assert np.abs(residual[on]).max() < 80 + 6 * 3.0
    assert np.abs(residual[on]).min() > 20 - 6 * 3.0
