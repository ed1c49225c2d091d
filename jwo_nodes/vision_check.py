"""`jwo vision-check`: how well the vision tracker keeps each visit's code on its
shopper, per scenario, without a ROS graph -- the quick loop for tuning the detector
thresholds and the tracker.

    jwo vision-check test/scenarios/medium-*.yaml [--fps 10] [--cache runs/vision-cache]

For every scenario it renders each camera's frames on a grid of scenario time (the
camera's fps, or --fps), JPEG-encodes them as camera_node does, runs the detector on
each time step's frames as one batch, projects to the floor and runs the tracker with
the gate events the gate logic makes of the scenario (as `jwo simbag` does). Then at
the middle of every true take and put-back it asks: the published track nearest to the
person who did it (within --near metres) -- does it carry that person's visit code?

    right      the code of the person's party
    wrong      another party's code: the item would go on somebody else's receipt
    uncoded    a track without a code: fusion has nobody to charge
    untracked  no track near the person

and whose the hands the tracker saw in the bin then were (within fusion's hand_zone_m
of its shelf point):

    right      all of them on tracks with the person's party's code
    wrong      one on a track with another code or none: fusion would weigh a
               neighbour's hand
    unseen     no hand in the bin at that moment

each hand there also counted by how the tracker gave it to a track: on the sleeve a
camera saw reach it, or to the nearest track (and how often each went to a track with
the person's party's code).

and, at each walk-out EXIT, whether a coded track was at the gate to leave.
Detections are cached per scenario, camera set and model (--cache), so a second run
with other tracker settings takes seconds.
"""
import hashlib
import inspect
import pickle
import sys
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np

from jwo_nodes.core.appearance import AppearanceSampler, AppearanceSettings
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.detector import Detector, DetectorSettings, default_model_path
from jwo_nodes.core.frame_source import JPEG_QUALITY, encode_jpeg
from jwo_nodes.core.fusion import FusionSettings
from jwo_nodes.core.gate_logic import ENTRY
from jwo_nodes.core.held_item import HeldItemReader, default_model_path as held_item_model
from jwo_nodes.core.perception import HandParallax, floor_detections
from jwo_nodes.core.render import CameraRenderer, RenderSettings, SceneFigures
from jwo_nodes.core.sim import NS, Timeline, load_scenario
from jwo_nodes.core.tracker import Tracker, TrackerSettings
from jwo_nodes.simbag import gate_events

OUTCOMES = ('right', 'wrong', 'uncoded', 'untracked')
HAND_OUTCOMES = ('right', 'wrong', 'unseen')
# A track the tracker is less sure of than this counts as doubted.
DOUBTED_BELOW = 0.75


def add_arguments(parser) -> None:
    parser.add_argument('scenarios', nargs='+', help='scenario YAML files')
    parser.add_argument('--store', default='config/stores/demo.yaml')
    parser.add_argument('--model', help='detector ONNX (default: the shipped models/detector.onnx)')
    parser.add_argument('--fps', type=float, default=0.0, help="frames per scenario second (0: each camera's fps)")
    parser.add_argument('--jpeg-quality', type=int, default=JPEG_QUALITY, help="cameras' JPEG quality")
    parser.add_argument('--near', type=float, default=0.6, help='a track this close to a person is theirs (m)')
    parser.add_argument('--cache', default='runs/vision-cache', help="detections cache folder ('' for none)")
    parser.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                        help='a TrackerSettings field, e.g. --set match_radius_m=0.8 (repeatable)')
    parser.add_argument('--verbose', action='store_true', help='print every event that is not right')


def tracker_settings(assignments: list) -> TrackerSettings:
    known = {f.name for f in fields(TrackerSettings)}
    values = {}
    for item in assignments:
        name, _, value = item.partition('=')
        if name not in known:
            raise ValueError(f'--set {item}: no tracker setting {name!r}; known: {", ".join(sorted(known))}')
        kind = type(getattr(TrackerSettings(), name))
        try:
            values[name] = kind(value)
        except ValueError:
            raise ValueError(f'--set {item}: expected {kind.__name__}')
    return TrackerSettings(**values)


def detect_scenario(path: str, store, detector: Detector, fps: float, jpeg_quality: int) -> list:
    """[(t_ns, [FloorDetection shoppers], [FloorDetection hands])] per time step; hands
    with what they hold when the shipped held-item reader is there."""
    timeline = Timeline(load_scenario(path, store), store)
    figures = SceneFigures(timeline)
    noise = timeline.scenario.noise
    renderers = [CameraRenderer(store, camera, RenderSettings(seed=timeline.scenario.seed,
                                                              drop_rate=noise.dropped_messages))
                 for camera in store.cameras.values()]
    samplers = {camera.id: AppearanceSampler(camera) for camera in store.cameras.values()}
    parallaxes = {camera.id: HandParallax(store, camera, AppearanceSettings().torso_lean)
                  for camera in store.cameras.values()}
    rate = fps or min(camera.fps for camera in store.cameras.values())
    reader_model = held_item_model()
    reader = HeldItemReader(reader_model) if reader_model else None
    steps = []
    for k in range(int(timeline.duration_ns / NS * rate) + 1):
        t_ns = int(round(k * NS / rate))
        scene = figures.at(t_ns)
        cameras, frames = [], []
        for renderer in renderers:
            if renderer.dropped(k):
                continue
            image = renderer.render(scene, t_ns / NS, k).image
            jpeg = encode_jpeg(image, jpeg_quality)
            cameras.append(renderer.camera)
            frames.append(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))
        shoppers, hands = floor_detections(cameras, frames, detector.detect(frames), samplers, reader,
                                           parallaxes)
        steps.append((t_ns, shoppers, hands))
    return steps


def give_gate_events(tracker: Tracker, events: list, next_event: int, t_ns: int) -> int:
    """Gives the tracker the gate events from index next_event on stamped up to t_ns, as
    vision_tracker_node does; returns the index of the next one."""
    while next_event < len(events) and events[next_event].stamp_ns <= t_ns:
        event = events[next_event]
        if event.direction == ENTRY:
            tracker.add_entry(event.gate_id, event.stamp_ns, event.visit_code, event.group_size)
        else:
            tracker.add_exit(event.gate_id, event.stamp_ns, event.visit_code)
        next_event += 1
    return next_event


def check(timeline: Timeline, steps: list, settings: TrackerSettings, near_m: float,
          review_below: float = DOUBTED_BELOW) -> dict:
    """Runs the tracker over detected steps with the scenario's gate events; scores it.
    An event on a track less sure than ``review_below`` is counted as doubted."""
    tracker = Tracker(list(timeline.store.gates.values()), settings)
    events, _ = gate_events(timeline, epoch_ns=0)
    code_of_party = {}
    for event in events:
        if event.direction == ENTRY:
            party = timeline.party_at_entry(event.gate_id, event.stamp_ns)
            if party:
                code_of_party[party] = event.visit_code
    moments = sorted((((e.ramp_start_ns + e.end_ns) // 2, e) for e in timeline.weight_events), key=lambda m: m[0])
    outcomes, doubted, hand_outcomes, hands_given, misses = Counter(), Counter(), Counter(), Counter(), []
    hand_zone_m = FusionSettings().hand_zone_m
    next_event = next_moment = 0
    for t_ns, shoppers, hands in steps:
        next_event = give_gate_events(tracker, events, next_event, t_ns)
        published, given = tracker.step(t_ns, shoppers, hands)
        code_of_track = {t.track_id: t.visit_code for t in published}
        while next_moment < len(moments) and moments[next_moment][0] <= t_ns:
            weight_event = moments[next_moment][1]
            next_moment += 1
            person = next((p for p in timeline.positions(t_ns) if p.person_id == weight_event.person_id), None)
            ranked = sorted((np.hypot(t.x - person.x, t.y - person.y), t.track_id, t) for t in published) if person else []
            if not ranked or ranked[0][0] > near_m:
                outcome, seen, sure = 'untracked', '', False
            else:
                seen, sure = ranked[0][2].visit_code, ranked[0][2].confidence >= review_below
                want = code_of_party.get(weight_event.party_id, '?')
                outcome = 'right' if seen == want else 'uncoded' if not seen else 'wrong'
            outcomes[outcome] += 1
            sx, sy = timeline.store.shelf_point(weight_event.bin_id)
            in_zone = [h for h in given if np.hypot(h.x - sx, h.y - sy) <= hand_zone_m]
            want = code_of_party.get(weight_event.party_id, '?')
            in_bin = {code_of_track[h.track_id] for h in in_zone}
            hand_outcomes['unseen' if not in_bin else 'right' if in_bin == {want} else 'wrong'] += 1
            for h in in_zone:
                hands_given[('sleeve' if h.sleeve_seen else 'nearest', code_of_track[h.track_id] == want)] += 1
            if not sure:
                doubted[outcome] += 1
            if outcome != 'right':
                misses.append(f'{t_ns / NS:7.2f}s {weight_event.person_id} ({weight_event.party_id}) '
                              f'{weight_event.bin_id}: {outcome} {seen}{"" if sure else " (doubted)"}')
    exits = sum(1 for e in events if e.direction != ENTRY)
    return {'outcomes': outcomes, 'doubted': doubted, 'hands': hand_outcomes, 'hands_given': hands_given,
            'misses': misses, 'exits': exits,
            'exits_matched': tracker.counters['exits_matched'], 'counters': dict(tracker.counters)}


def _cache_key(path: str, store_path: str, model: str, fps: float, jpeg_quality: int) -> str:
    digest = hashlib.sha256()
    # Everything the detections follow from: the scenario and store, the models, and the
    # code that moves the shoppers, renders the frames and detects on them (not the
    # scoring here, which reruns on cached detections).
    core = Path(__file__).with_name('core')
    reader = held_item_model()
    for part in (Path(path).read_bytes(), Path(store_path).read_bytes(), Path(model).read_bytes(),
                 Path(reader).read_bytes() if reader else b'', inspect.getsource(detect_scenario).encode(),
                 *(core.joinpath(name).read_bytes() for name in ('sim.py', 'render.py', 'perception.py',
                                                                 'appearance.py', 'detector.py',
                                                                 'held_item.py')),
                 repr((fps, jpeg_quality)).encode()):
        digest.update(part)
    return digest.hexdigest()[:16]


def run(args) -> int:
    problems = [f'--{name} {value}: {why}' for name, value, why in (
        ('fps', args.fps, 'expected frames per second >= 0'), ('near', args.near, 'expected metres > 0'),
        ('jpeg-quality', args.jpeg_quality, 'expected 1 to 100'))
        if not {'fps': args.fps >= 0, 'near': args.near > 0, 'jpeg-quality': 1 <= args.jpeg_quality <= 100}[name]]
    if problems:
        print('error: ' + '; '.join(problems), file=sys.stderr)
        return 2
    try:
        settings = tracker_settings(args.set)
        store = load_store_config(args.store)
        model = args.model or default_model_path()
        if not model:
            raise ValueError('no models/detector.onnx found; give --model')
        detector = Detector(DetectorSettings(model_path=model))
    except (ValueError, ConfigError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    cache = Path(args.cache) if args.cache else None
    total, doubted, hands, hands_given = Counter(), Counter(), Counter(), Counter()
    exits = exits_matched = 0
    for index, path in enumerate(args.scenarios, 1):
        started = time.perf_counter()
        try:
            timeline = Timeline(load_scenario(path, store), store)
        except ConfigError as error:
            print(f'error: {error}', file=sys.stderr)
            return 2
        key = cache / f'{Path(path).stem}-{_cache_key(path, args.store, model, args.fps, args.jpeg_quality)}.pkl' \
            if cache else None
        if key and key.is_file():
            steps = pickle.loads(key.read_bytes())
        else:
            steps = detect_scenario(path, store, detector, args.fps, args.jpeg_quality)
            if key:
                key.parent.mkdir(parents=True, exist_ok=True)
                key.write_bytes(pickle.dumps(steps))
        result = check(timeline, steps, settings, args.near)
        outcomes = result['outcomes']
        total.update(outcomes)
        doubted.update(result['doubted'])
        hands.update(result['hands'])
        hands_given.update(result['hands_given'])
        exits += result['exits']
        exits_matched += result['exits_matched']
        print(f'[{index}/{len(args.scenarios)}] {Path(path).name}: '
              + ' '.join(f'{name} {outcomes[name]}' for name in OUTCOMES)
              + f'; doubted {sum(result["doubted"].values())}'
              + '; hands in the bin ' + ' '.join(f'{name} {result["hands"][name]}' for name in HAND_OUTCOMES)
              + f'; exits matched {result["exits_matched"]}/{result["exits"]}'
              + f' ({len(steps)} steps, {time.perf_counter() - started:.1f} s)', flush=True)
        if args.verbose:
            for line in result['misses']:
                print('    ' + line)
    n = sum(total.values()) or 1
    print('all: ' + ' '.join(f'{name} {total[name]} ({100 * total[name] / n:.1f} %)' for name in OUTCOMES)
          + f'; exits matched {exits_matched}/{exits}')
    print('hands in the bin: ' + ' '.join(f'{name} {hands[name]} ({100 * hands[name] / n:.1f} %)'
                                          for name in HAND_OUTCOMES))
    print('hands in the bin given ' + '; '.join(_given(hands_given, way) for way in ('sleeve', 'nearest')))
    print('doubted (track less sure than review threshold): '
          + ' '.join(f'{name} {doubted[name]}' for name in OUTCOMES)
          + f'; wrong and not doubted: {total["wrong"] - doubted["wrong"]}')
    return 0


def _given(hands_given: Counter, way: str) -> str:
    """'on a sleeve seen 812 (97.5 % on the right code)': the hands in the bin given
    one way ('sleeve' or 'nearest')."""
    right, wrong = hands_given[(way, True)], hands_given[(way, False)]
    share = f'{100 * right / (right + wrong):.1f} %' if right + wrong else '-'
    return f'{"on a sleeve seen" if way == "sleeve" else "to the nearest track"} {right + wrong} ({share} on the right code)'
