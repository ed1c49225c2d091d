"""The real-store layout (config/stores/corner.yaml, store.layout: gondola): its config and
the keys it adds, the simulator's shoppers at arm's length and side by side, the presets
and scenarios made for it -- and the demo store simulating exactly as before."""
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from jwo_nodes.core.config import ConfigError, load_store_config, parse_store_config
from jwo_nodes.core.render import CameraRenderer, RenderSettings, SceneFigures
from jwo_nodes.core.scenario_gen import PRESETS, generate
from jwo_nodes.core.sim import (GONDOLA_REACH_SIDE_M, GONDOLA_SPACING_M, GONDOLA_STAND_M, NS,
                                Timeline, load_scenario, parse_scenario)

REPO = Path(__file__).resolve().parent.parent
CORNER = 'config/stores/corner.yaml'
DEMO = 'config/stores/demo.yaml'
CORNER_SCENARIOS = REPO / 'test' / 'scenarios' / 'corner'


@pytest.fixture(scope='module')
def corner():
    return load_store_config(REPO / CORNER)


@pytest.fixture(scope='module')
def demo():
    return load_store_config(REPO / DEMO)


def quiet_timeline(path, store) -> Timeline:
    """A scenario's timeline without the tracker's sway, so standing people stand still."""
    document = yaml.safe_load(Path(path).read_text())
    document['noise']['tracker_sigma_m'] = 0.0
    return Timeline(parse_scenario(document, store, str(path)), store)


def depth_and_side(store, bin_id, x, y) -> tuple:
    """A floor point's distance in front of a bin's shelf edge, and to the side of its middle."""
    (cx, cy), (fx, fy) = store.face_point(bin_id), store.facing(bin_id)
    return (x - cx) * fx + (y - cy) * fy, (x - cx) * -fy + (y - cy) * fx


# -- the config -------------------------------------------------------------------------

def test_corner_store_is_a_small_format_store_of_gondolas(corner, demo):
    assert corner.store_id == 'corner' and corner.layout == 'gondola'
    assert 20 <= len(corner.shelves) <= 30
    sides = {(shelf.facing, round(corner.face_point(shelf.bins[0].id)[0] * shelf.facing[0]
                                  + corner.face_point(shelf.bins[0].id)[1] * shelf.facing[1], 2))
             for shelf in corner.shelves.values()}
    assert 4 <= len(sides) <= 12   # gondola sides: wall units and both sides of islands
    assert {shelf.facing for shelf in corner.shelves.values()} == {(0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0)}
    for shelf in corner.shelves.values():
        assert 3 <= len(shelf.bins) <= 5
        assert shelf.level is not None and 0.0 <= shelf.level <= 2.0
        for bin_ in shelf.bins:
            # one load cell per facing of 10-30 cm
            assert 0.05 - 1e-9 <= corner.facing_half_width(bin_.id) <= 0.15 + 1e-9
    grams = [p.unit_grams for p in corner.products.values()]
    assert 30.0 <= min(grams) and max(grams) <= 1600.0
    assert all(isinstance(p.price_cents, int) for p in corner.products.values())
    twins = [(a.sku, b.sku) for a, b in itertools.combinations(corner.products.values(), 2)
             if abs(a.unit_grams - b.unit_grams) <= 5.0]
    assert len(twins) >= 30
    assert len(corner.gates) >= 1
    assert corner.review == demo.review


def test_the_facings_beside_a_product_are_the_next_ones_along_its_shelf(corner, demo):
    """Where fusion expects a product put back beside its own facing (beside_prior):
    the nearest facing of another product on each side, on the same shelf only."""
    assert demo.beside_home('S3-B2', 'YOG-STRAW') and demo.beside_home('S3-B3', 'YOG-PLAIN')
    assert not demo.beside_home('S3-B3', 'YOG-STRAW')      # two facings along
    assert not demo.beside_home('S2-B1', 'JUICE-1L')       # the next shelf's end
    assert not demo.beside_home('S3-B1', 'YOG-STRAW')      # its own facing
    for shelf in corner.shelves.values():
        ids = [b.id for b in shelf.bins]
        for i, bin_ in enumerate(shelf.bins):
            beside = {b for b in corner.bins if corner.beside_home(b, bin_.sku)}
            assert beside == set(ids[max(0, i - 1):i] + ids[i + 1:i + 2]), bin_.id


def test_corner_cameras_cover_the_whole_floor_with_overlap(corner):
    from jwo_nodes.core.frame_source import floor_to_pixels

    def seen_by(x, y):
        return [c.id for c in corner.cameras.values()
                if (lambda u, v: 0 <= u < c.width and 0 <= v < c.height)(*floor_to_pixels(c, [(x, y)])[0])]

    points = [(b.x, b.y) for b in corner.bins.values()]
    points += [corner.shelf_point(b) for b in corner.bins]
    points += [(g.x, g.y) for g in corner.gates.values()]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    grid = [(x, y) for x in np.arange(min(xs), max(xs), 0.25) for y in np.arange(min(ys), max(ys), 0.25)]
    assert all(seen_by(x, y) for x, y in points + grid)
    assert any(len(seen_by(x, y)) > 1 for x, y in grid)
    seen = {s for c in corner.cameras.values() for s in c.sees_shelves}
    assert seen == set(corner.shelves)


def test_shelf_point_follows_the_facing(corner, demo):
    # demo (no facing): towards the nearer long wall, as always
    assert demo.shelf_point('S1-B1') == pytest.approx((2.0, 0.6))
    assert demo.shelf_point('S3-B1') == pytest.approx((2.0, 7.4))
    assert demo.facing('S1-B1') == (0.0, 1.0) and demo.facing('S3-B1') == (0.0, -1.0)
    assert demo.layout == 'aisle' and all(s.facing is None and s.level is None for s in demo.shelves.values())
    for bin_id in corner.bins:
        bin_ = corner.bin(bin_id)
        hx, hy = corner.shelf_point(bin_id)
        fx, fy = corner.facing(bin_id)
        assert hx == pytest.approx(bin_.x - 0.6 * fx) and hy == pytest.approx(bin_.y - 0.6 * fy)
    # both sides of the island: back to back, facing away from each other
    assert corner.facing('F1-B1') == (0.0, -1.0) and corner.facing('B1-B1') == (0.0, 1.0)
    assert corner.shelf_point('F1-B1')[1] < corner.shelf_point('B1-B1')[1]


def test_facing_in_degrees():
    document = yaml.safe_load((REPO / DEMO).read_text())
    document['shelves'][0]['facing'] = 90
    document['shelves'][1]['facing'] = 45
    document['shelves'][2]['facing'] = '-y'
    store = parse_store_config(document)
    assert store.shelves['S1'].facing == (0.0, 1.0)
    assert store.shelves['S2'].facing == pytest.approx((math.sqrt(0.5), math.sqrt(0.5)))
    assert store.shelf_point('S1-B1') == pytest.approx((2.0, 0.6))
    assert store.shelf_point('S3-B1') == pytest.approx((2.0, 7.4))
    x, y = store.shelf_point('S2-B1')
    assert (x, y) == pytest.approx((6.0 - 0.6 * math.sqrt(0.5), 1.2 - 0.6 * math.sqrt(0.5)))


def broken(tmp_path, source, edit):
    document = yaml.safe_load((REPO / source).read_text())
    edit(document)
    path = tmp_path / 'store.yaml'
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize('source, edit, key, problem', [
    (DEMO, lambda d: d['store'].update(layout='grid'), 'store.layout', 'expected one of aisle, gondola'),
    (DEMO, lambda d: d['store'].update(layout='gondola'), 'shelves[0].facing',
     'missing (required with store.layout: gondola)'),
    (DEMO, lambda d: d['shelves'][1].update(facing='up'), 'shelves[1].facing', 'expected +x, -x, +y, -y or degrees'),
    (DEMO, lambda d: d['shelves'][1].update(facing=True), 'shelves[1].facing', 'expected +x, -x, +y, -y or degrees'),
    (DEMO, lambda d: d['shelves'][2].update(level=-0.1), 'shelves[2].level', 'must be >= 0.0'),
    (DEMO, lambda d: d['shelves'][2].update(level=3.5), 'shelves[2].level', 'must be <= 3.0'),
    (DEMO, lambda d: d['shelves'][2].update(level='top'), 'shelves[2].level', 'expected a number'),
    (CORNER, lambda d: d['shelves'][4].pop('facing'), 'shelves[4].facing',
     'missing (required with store.layout: gondola)'),
    (CORNER, lambda d: d['shelves'][7].update(facing=float('nan')), 'shelves[7].facing', 'expected +x, -x, +y, -y'),
    (CORNER, lambda d: d.pop('review'), 'review', 'missing'),
])
def test_bad_layout_keys_name_file_key_and_problem(tmp_path, source, edit, key, problem):
    path = broken(tmp_path, source, edit)
    with pytest.raises(ConfigError) as raised:
        load_store_config(path)
    assert raised.value.key == key
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f'{path}: {key}: ')


def test_a_gondola_store_without_levels_loads(tmp_path):
    path = broken(tmp_path, CORNER, lambda d: [s.pop('level') for s in d['shelves']])
    store = load_store_config(path)
    assert all(s.level is None for s in store.shelves.values())


# -- the simulator ----------------------------------------------------------------------

@pytest.mark.parametrize('name', ['corner_hard-0', 'corner_hard-2', 'corner_medium-3'])
def test_gondola_shoppers_reach_from_arms_length_side_by_side(corner, name):
    timeline = quiet_timeline(CORNER_SCENARIOS / f'{name}.yaml', corner)
    events = timeline.weight_events
    assert events
    side_by_side = 0
    for event in events:
        t = (event.start_ns + event.end_ns) // 2
        where = {p.person_id: (p.x, p.y) for p in timeline.positions(t)}
        x, y = where[event.person_id]
        depth, side = depth_and_side(corner, event.bin_id, x, y)
        # at arm's length in front of the facing, not on the bin point
        assert GONDOLA_STAND_M[0] - 1e-6 <= depth <= GONDOLA_STAND_M[1] + 1e-6, (event, depth)
        assert abs(side) <= GONDOLA_REACH_SIDE_M + 1e-6, (event, side)
        for other in events:
            if other.person_id != event.person_id and other.start_ns <= t <= other.end_ns:
                distance = math.dist(where[event.person_id], where[other.person_id])
                assert distance >= GONDOLA_SPACING_M - 1e-6, (event, other, distance)
                if corner.facing(other.bin_id) == corner.facing(event.bin_id) and distance < 1.5:
                    side_by_side += 1
    assert side_by_side > 0   # several shoppers work one gondola at once


def test_gondola_shoppers_keep_apart_and_walk_around_gondolas(corner):
    from jwo_nodes.core.sim import _Floor
    floor = _Floor(corner)
    gates = [(g.x, g.y) for g in corner.gates.values()]
    timeline = quiet_timeline(CORNER_SCENARIOS / 'corner_hard-2.yaml', corner)
    step = NS // 4
    for t in range(0, timeline.duration_ns, step):
        now = {p.person_id: (p.x, p.y) for p in timeline.positions(t)}
        later = {p.person_id: (p.x, p.y) for p in timeline.positions(t + step)}
        assert not any(floor.blocked(point) for point in now.values())
        still = [now[k] for k in now if k in later and math.dist(now[k], later[k]) < 1e-9
                 and min(math.dist(now[k], g) for g in gates) > 1.0]   # standing, not passing a gate
        for a, b in itertools.combinations(still, 2):
            assert math.dist(a, b) >= GONDOLA_SPACING_M - 1e-6, (t / NS, a, b)


def test_a_shopper_waits_when_nobody_can_stand_in_reach(corner):
    """Two shoppers for one facing at once: the second waits a step back, then reaches."""
    scenario = {'name': 'one-facing', 'seed': 5, 'noise': {'tracker_sigma_m': 0.0}, 'parties': [
        {'id': f'p{i}', 'gate': 'G1', 'enter_at_s': 1.0 + i, 'credential': {'kind': 'qr', 'token': f't{i}'},
         'script': [{'walk_to': 'C3-B3'}, {'wait_until': {'s': 15}}, {'take': {'bin': 'C3-B3'}}, 'leave']}
        for i in range(2)]}
    timeline = Timeline(parse_scenario(scenario, corner), corner)
    first, second = sorted(timeline.weight_events, key=lambda e: e.start_ns)
    assert second.start_ns > first.end_ns
    mid = (first.start_ns + first.end_ns) // 2
    where = {p.person_id: (p.x, p.y) for p in timeline.positions(mid)}
    assert math.dist(where['p0'], where['p1']) >= GONDOLA_SPACING_M
    depth, _ = depth_and_side(corner, 'C3-B3', *where[second.person_id])
    assert depth > GONDOLA_STAND_M[1]   # waiting back in the aisle


def test_neighbouring_facings_are_worked_side_by_side(corner):
    """Three shoppers at facings 0.4 m apart on one shelf reach at the same moment,
    standing at least 0.5 m apart (a step to the side where they must)."""
    bins = ['D4-B1', 'D4-B3', 'D4-B5']
    scenario = {'name': 'side-by-side', 'seed': 2, 'noise': {'tracker_sigma_m': 0.0}, 'parties': [
        {'id': f'p{i}', 'gate': 'G2', 'enter_at_s': 1.0 + i, 'credential': {'kind': 'qr', 'token': f't{i}'},
         'script': [{'walk_to': b}, {'wait_until': {'s': 15}}, {'take': {'bin': b}}, 'leave']}
        for i, b in enumerate(bins)]}
    timeline = Timeline(parse_scenario(scenario, corner), corner)
    events = timeline.weight_events
    assert len(events) == 3 and len({e.start_ns for e in events}) == 1
    where = {p.person_id: (p.x, p.y) for p in timeline.positions(events[0].start_ns)}
    for a, b in itertools.combinations(where.values(), 2):
        assert math.dist(a, b) >= GONDOLA_SPACING_M - 1e-9


def test_the_renderer_reaches_into_the_facings(corner):
    timeline = Timeline(load_scenario(CORNER_SCENARIOS / 'corner_hard-0.yaml', corner), corner)
    figures = SceneFigures(timeline)
    renderers = [CameraRenderer(corner, camera, RenderSettings(seed=1)) for camera in corner.cameras.values()]
    drawn = 0
    for event in timeline.weight_events[:12]:
        t = (event.start_ns + event.end_ns) // 2
        figure = next(f for f in figures.at(t) if f.person_id == event.person_id)
        assert figure.hand is not None and figure.hand_height_m is not None
        hx, hy = corner.shelf_point(event.bin_id)
        (fx, fy), half = corner.facing(event.bin_id), corner.facing_half_width(event.bin_id)
        assert abs((figure.hand[0] - hx) * fx + (figure.hand[1] - hy) * fy) < 1e-9   # in the shelf
        assert abs((figure.hand[0] - hx) * -fy + (figure.hand[1] - hy) * fx) <= half   # in the facing
        for renderer in renderers:
            frame = renderer.render(figures.at(t), t / NS)
            drawn += any(pid == event.person_id for pid, _, _ in frame.hands)
    assert drawn >= 12


# -- presets and scenarios ----------------------------------------------------------------

def test_corner_scenarios_are_the_presets_and_load_only_with_their_store(corner, demo):
    files = sorted(CORNER_SCENARIOS.glob('*.yaml'))
    assert [f.stem for f in files] == [f'{p}-{s}' for p in ('corner_hard', 'corner_medium') for s in range(10)]
    for path in files:
        preset, seed = path.stem.rsplit('-', 1)
        assert yaml.safe_load(path.read_text()) == generate(corner, preset, int(seed))
        assert load_scenario(path, corner).name == path.stem
    with pytest.raises(ConfigError) as raised:
        load_scenario(files[0], demo)
    assert raised.value.key == 'store' and "for store 'corner', not 'demo'" in raised.value.problem
    with pytest.raises(ConfigError, match="preset corner_medium is made for store 'corner'"):
        generate(demo, 'corner_medium', 0)


def test_corner_presets_make_harder_cases(corner):
    """Wrong-facing put-backs, hand-offs, groups and meetings at one gondola across the
    generated scenarios."""
    counts = dict(wrong_facing=0, handoffs=0, groups=0, meetings=0)
    for path in sorted(CORNER_SCENARIOS.glob('*.yaml')):
        document = yaml.safe_load(path.read_text())
        for party in document['parties']:
            scripts = party.get('scripts') or [party['script']]
            counts['groups'] += len(scripts) > 1
            for step in (s for script in scripts for s in script if isinstance(s, dict)):
                counts['handoffs'] += 'hand_to' in step
                counts['meetings'] += 'wait_until' in step
                if 'put_back' in step:
                    counts['wrong_facing'] += corner.bin(step['put_back']['bin']).sku != step['put_back']['sku']
    assert all(n >= 3 for n in counts.values()), counts
    assert PRESETS['corner_hard'].meet_share > PRESETS['hard'].meet_share


# -- the suite's store is the yardstick: it simulates exactly as before ----------------

def test_suite_timelines_are_pinned():
    suite = load_store_config(REPO / 'test' / 'stores' / 'suite.yaml')
    scenarios = REPO / 'test' / 'scenarios'
    timeline = Timeline(load_scenario(scenarios / 'hard-adjacent-same-moment.yaml', suite), suite)
    assert timeline.duration_ns == 24812016177
    assert [(e.bin_id, e.person_id, e.start_ns, e.end_ns) for e in timeline.weight_events] == [
        ('S2-B1', 'left', 14600000000, 15300000000), ('S2-B2', 'right', 14600000000, 15300000000),
        ('S2-B3', 'third', 14600000000, 15300000000)]
    assert [e.delta_grams for e in timeline.weight_events] == pytest.approx(
        [-166.990543, -216.539531, -212.123591], abs=1e-6)
    assert [e.press_grams for e in timeline.weight_events] == pytest.approx(
        [34.899365, 59.109638, 21.654618], abs=1e-6)
    positions = [(p.person_id, p.x, p.y) for p in timeline.positions(5 * NS)]
    assert [p[0] for p in positions] == ['left', 'right', 'third']
    assert [v for p in positions for v in p[1:]] == pytest.approx(
        [4.151018, 2.158731, 2.432315, 3.198362, 0.6, 4.0], abs=1e-6)
    assert [v for p in timeline.positions(17 * NS + NS // 4) for v in (p.x, p.y)] == pytest.approx(
        [4.801531, 1.821428, 5.763188, 1.741105, 6.737364, 1.677754], abs=1e-6)
    assert timeline.gate_lines('G1')[-1] == (23812016177, 'EXIT')

    timeline = Timeline(load_scenario(scenarios / 'medium-0.yaml', suite), suite)
    assert (len(timeline.weight_events), timeline.duration_ns) == (52, 128764003631)
    event = timeline.weight_events[7]
    assert (event.bin_id, event.person_id, event.start_ns, event.end_ns) == (
        'S4-B1', 'p01#3', 22382762530, 23082762530)
    assert event.delta_grams == pytest.approx(193.906582, abs=1e-6)
    assert [(p.person_id, round(p.x, 6), round(p.y, 6)) for p in timeline.positions(40 * NS)] == [
        ('p02', 7.513128, 1.2), ('p04#1', 7.000238, 6.801359), ('p04#2', 5.006155, 6.284673),
        ('p05', 5.926907, 2.848236)]
