"""The health of a node from its counters (jwo_nodes.core.health): counts over the last
window, and OK / WARN / ERROR / STALE from bad inputs in it and from silent inputs."""
from jwo_nodes.core.health import ERROR, OK, STALE, WARN, Health

S = 1_000_000_000
START = 1_000 * S   # any stamp: only differences count


def run(health: Health, seconds, totals_at, bad=()):
    """Updates once a second over ``seconds``; totals_at(t) gives the totals at t s."""
    report = None
    for t in seconds:
        report = health.update(START + t * S, totals_at(t), set(bad))
    return report


def test_counts_over_the_window_and_totals_apart():
    health = Health(START, window_s=60)
    # 10 samples a second for two minutes; 5 malformed lines in the first ten seconds.
    report = run(health, range(1, 121), lambda t: {'samples': 10 * t, 'malformed': min(t, 5)},
                 bad=('malformed',))
    assert report.recent == {'samples': 600, 'malformed': 0}
    assert (report.level, report.message) == (OK, 'ok')
    # Early on, the window reaches back to the start, when every counter was 0.
    early = Health(START, window_s=60)
    report = run(early, range(1, 11), lambda t: {'samples': 10 * t, 'malformed': min(t, 5)},
                 bad=('malformed',))
    assert report.recent == {'samples': 100, 'malformed': 5}


def test_some_bad_inputs_warn_many_are_an_error_and_it_recovers():
    health = Health(START, window_s=60)
    assert health.error_count == 60   # one a second on average
    report = run(health, range(1, 31), lambda t: {'samples': 50 * t, 'bad_checksum': 2 if t > 20 else 0},
                 bad=('bad_checksum',))
    assert report.level == WARN
    assert report.message == '2 bad inputs in the last 60 s (bad_checksum 2)'
    # Two bad lines a second for a minute: the board or its cable is broken.
    report = run(health, range(31, 91), lambda t: {'samples': 50 * t, 'bad_checksum': 2 + 2 * (t - 30)},
                 bad=('bad_checksum',))
    assert report.level == ERROR and report.recent['bad_checksum'] == 120
    # A minute without: OK again, the total stays.
    final = 2 + 2 * 60
    report = run(health, range(91, 152), lambda t: {'samples': 50 * t, 'bad_checksum': final},
                 bad=('bad_checksum',))
    assert report.level == OK and report.recent['bad_checksum'] == 0


def test_counters_that_are_not_bad_inputs_never_warn():
    health = Health(START)
    report = run(health, range(1, 5), lambda t: {'frames': 10 * t, 'reconnects': t})
    assert report.level == OK


def test_a_silent_input_is_stale_until_it_comes_back():
    health = Health(START, window_s=60)
    health.expect('samples', within_s=5)
    samples = {'n': 0}

    def totals(t):
        if t <= 10 or t >= 30:   # silent from 10 s to 30 s
            samples['n'] += 50
        return {'samples': samples['n'], 'malformed': 0}

    assert run(health, range(1, 15), totals).level == OK     # silent for 4 s: not yet
    report = run(health, range(15, 16), totals)
    assert (report.level, report.message) == (STALE, 'no samples for 5 s')
    assert run(health, range(16, 30), totals).level == STALE
    assert run(health, range(30, 31), totals).level == OK


def test_never_heard_is_stale_from_the_start_and_stale_comes_first():
    health = Health(START, window_s=60)
    health.expect('frames', within_s=5)
    assert run(health, range(1, 5), lambda t: {'frames': 0}).level == OK
    # Nothing but garbage for a minute: stale (no good input), the garbage named too.
    report = run(health, range(5, 70), lambda t: {'frames': 0, 'grab_failed': 3 * t},
                 bad=('grab_failed',))
    assert report.level == STALE
    assert report.message == 'no frames for 69 s; 180 bad inputs in the last 60 s (grab_failed 180)'


def test_a_gauge_reports_its_change():
    health = Health(START, window_s=10)
    report = run(health, range(1, 21), lambda t: {'pending': 25 - t})
    assert report.recent == {'pending': -10}
