"""The pure arithmetic of `jwo soak` (jwo_nodes.core.soak_stats)."""
import pytest

from jwo_nodes.core import soak_stats as s


def test_vmrss_is_read_from_proc_status():
    text = 'Name:\tpython3\nVmPeak:\t  300000 kB\nVmRSS:\t   81234 kB\nThreads:\t9\n'
    assert s.parse_vmrss_kb(text) == 81234
    assert s.parse_vmrss_kb('Name:\tkthreadd\nThreads:\t1\n') is None


def test_ticks_are_read_after_the_last_parenthesis_of_the_name():
    # Fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime ...
    rest = 'S 1 2 3 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345'
    assert s.parse_stat_ticks(f'4242 (python3) {rest}') == 300
    assert s.parse_stat_ticks(f'4242 (a (weird) name) {rest}') == 300
    assert s.parse_stat_ticks('4242 (python3) S 1 2') is None
    assert s.parse_stat_ticks('garbage') is None


def test_cpu_percent_over_an_interval():
    assert s.cpu_percent(100, 150, 5.0, 100) == pytest.approx(10.0)     # 0.5 s of CPU in 5 s
    assert s.cpu_percent(0, 1000, 5.0, 100) == pytest.approx(200.0)     # two cores
    assert s.cpu_percent(None, 150, 5.0, 100) is None
    assert s.cpu_percent(200, 150, 5.0, 100) is None                   # not the same process
    assert s.cpu_percent(100, 150, 0.0, 100) is None


def test_least_squares_slope():
    assert s.least_squares_slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert s.least_squares_slope([0, 1, 2, 3], [5, 5, 5, 5]) == pytest.approx(0.0)
    # Noise around a line: the fit, not the end points.
    assert s.least_squares_slope([0, 1, 2, 3, 4], [0, 2, 1, 3, 2]) == pytest.approx(0.5)
    assert s.least_squares_slope([1], [1]) is None
    assert s.least_squares_slope([2, 2], [1, 5]) is None
    with pytest.raises(ValueError):
        s.least_squares_slope([0, 1], [1])


def test_threshold_is_5_mb_per_hour_or_1_percent_of_a_large_process():
    assert s.level_threshold_mb_per_h(80.0) == 5.0
    assert s.level_threshold_mb_per_h(2000.0) == pytest.approx(20.0)


def test_restarts_count_pid_changes():
    assert s.restarts([10, 10, None, 11, 11, 12]) == 2
    assert s.restarts([None, 10, 10]) == 0
    assert s.restarts([]) == 0


def _series(rss_of_t, t_end=3600.0, step=60.0, pid_of_t=lambda t: 7):
    t, rows = 0.0, []
    while t <= t_end:
        rows.append((t, pid_of_t(t), rss_of_t(t)))
        t += step
    return rows


def test_memory_that_grows_early_then_levels_off_is_levelled():
    # +40 MB in the first 10 minutes (start-up), then flat with 0.1 MB of wobble.
    rows = _series(lambda t: 60 + min(t, 600) / 15 + (0.1 if int(t / 60) % 2 else 0.0))
    summary = s.memory_summary(rows, 3600.0)
    assert summary['rss_start_mb'] == 60
    assert summary['rss_end_mb'] == pytest.approx(100.0, abs=0.2)
    assert abs(summary['slope_mb_per_h']) < 1.0
    assert summary['threshold_mb_per_h'] == 5.0
    assert summary['levelled'] is True
    assert summary['restarts'] == 0


def test_memory_that_keeps_growing_is_not_levelled():
    rows = _series(lambda t: 80 + 10 * t / 3600)                      # 10 MB/h
    summary = s.memory_summary(rows, 3600.0)
    assert summary['slope_mb_per_h'] == pytest.approx(10.0)
    assert summary['levelled'] is False
    # A 2 GB process may grow 1 %/h.
    big = s.memory_summary(_series(lambda t: 2000 + 10 * t / 3600), 3600.0)
    assert big['threshold_mb_per_h'] == pytest.approx(20.1, abs=0.1)
    assert big['levelled'] is True


def test_a_restart_is_counted_and_its_reset_is_not_read_as_a_slope():
    # The node restarts at 40 min: memory back to 60 MB, then flat again.
    rows = _series(lambda t: 150.0 if t < 2400 else 60.0, pid_of_t=lambda t: 7 if t < 2400 else 8)
    summary = s.memory_summary(rows, 3600.0)
    assert summary['restarts'] == 1
    assert summary['slope_mb_per_h'] == pytest.approx(0.0)
    assert summary['levelled'] is True
    assert summary['rss_max_mb'] == 150.0


def test_too_few_samples_give_no_verdict():
    summary = s.memory_summary([(0.0, 1, 50.0), (30.0, 1, 51.0), (60.0, 1, 52.0)], 60.0)
    assert summary['slope_samples'] == 2
    assert summary['levelled'] is None and summary['slope_mb_per_h'] is None
    empty = s.memory_summary([(-5.0, 1, None)], 60.0)
    assert empty['rss_start_mb'] is None and empty['levelled'] is None


def test_samples_before_the_start_are_left_out():
    rows = [(-10.0, 1, 20.0)] + _series(lambda t: 70.0, t_end=600, step=10)
    summary = s.memory_summary(rows, 600.0)
    assert summary['rss_start_mb'] == 70.0
    assert summary['slope_mb_per_h'] == pytest.approx(0.0)


def test_watched_counters():
    for name in ('frames_dropped', 'dropped_lines', 'late_frames', 'stale_acks', 'malformed',
                 'grab_failed', 'tracks_unassigned', 'messages_lost'):
        assert s.is_watched(name), name
    for name in ('frames', 'receipts', 'dropped_lines_recent', 'samples'):
        assert not s.is_watched(name), name


def test_counter_growth_survives_a_restart():
    assert s.counter_growth([3, 3, 5, 9]) == 6
    assert s.counter_growth([3, 7, 2, 4]) == 4 + 2 + 2     # reset to 0 after 7, then 2, 4
    assert s.counter_growth([5]) == 0
    assert s.counter_growth([]) == 0


def test_parties_fill_the_duration_at_the_load():
    # medium: one party every 7.5 s on average; load 2 -> one every 3.75 s.
    assert s.parties_for(2, 1800, 7.5) == 481
    assert s.parties_for(1, 60, 7.5) == 9
    with pytest.raises(ValueError):
        s.parties_for(0, 60, 7.5)
