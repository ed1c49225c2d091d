"""`jwo fusion-check`: scenarios through the change detector, the tracker and fusion
as pure code, without a ROS graph -- the quick loop for tuning fusion (seconds per
scenario with the stand-in tracker; with --vision the detections `jwo vision-check`
cached are tracked, and computed first where there are none).

    jwo fusion-check test/scenarios/*.yaml [--vision] [--verbose]

Inputs reach fusion in stamp order as the nodes would send them: the gate events the
gate logic makes of the scenario, each shelf's load-cell samples through the change
detector (a change when it is decided, a heartbeat every 0.2 s of samples), and the
tracker's frames. Scored as `jwo eval` scores (jwo_nodes.core.scoring), per scenario
and per scenario group. `jwo eval` stays the yardstick: it runs the real nodes.
"""
import json
import pickle
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.frame_source import JPEG_QUALITY
from jwo_nodes.core.fusion import (SENSOR_STALE, UNIDENTIFIED_ITEM, UNMATCHED_PUT_BACK,
                                   UNRESOLVED_EXIT, ChangeInput, FusionCore, GateInput,
                                   TrackInput)
from jwo_nodes.core.gate_logic import ENTRY
from jwo_nodes.core.loadcell_sim import LoadCellNoise, LoadCellSim
from jwo_nodes.core.scoring import FinalReliability, RunCost, calibration, final_reliability, run_cost, score_visits
from jwo_nodes.core.sim import NS, Timeline, load_scenario
from jwo_nodes.core.tracker_sim import TrackerSim
from jwo_nodes.core.weight_detect import ChangeDetector, DetectorSettings
from jwo_nodes.simbag import configured_rate, gate_events

STATUS_NS = NS // 5
# Reasons that send a visit to review whatever it costs.
ALWAYS_REVIEWED = (SENSOR_STALE, UNIDENTIFIED_ITEM, UNMATCHED_PUT_BACK, UNRESOLVED_EXIT)
# Review costs (cents) the sweep tries.
SWEEP_CENTS = (30, 60, 100, 150, 250, 400)
# Scenario seconds fed after the end, so walk-outs nobody was seen at resolve.
TAIL_S = 30


def add_arguments(parser) -> None:
    parser.add_argument('scenarios', nargs='+', help='scenario YAML files')
    add_run_arguments(parser)
    parser.add_argument('--verbose', action='store_true', help='print every visit not exact or flagged')
    parser.add_argument('--report', help='also write the totals per scenario group to this JSON file')


def add_run_arguments(parser) -> None:
    """How scenarios run (scenario_jobs reads them): the store, the tracker, processes."""
    parser.add_argument('--store', default='config/stores/demo.yaml')
    parser.add_argument('--vision', action='store_true',
                        help='track on detections from rendered frames (cached by jwo vision-check)')
    parser.add_argument('--cache', default='runs/vision-cache', help='detections cache folder')
    parser.add_argument('--jobs', type=int, default=1, metavar='N',
                        help='scenarios run at once, each in a process of its own')


def change_inputs(timeline: Timeline) -> list:
    """(stamp, order, kind, item) of every shelf's changes (at the sample that decided
    them) and heartbeats, from the simulated load cells through the change detector."""
    store, noise = timeline.store, LoadCellNoise.from_scenario(timeline.scenario.noise)
    rate = configured_rate('weight_sensor_node', 'rate_hz', 50)
    inputs = []
    for shelf_id, shelf in sorted(store.shelves.items()):
        cells = LoadCellSim(shelf_id, len(shelf.bins), rate, lambda t, s=shelf_id: timeline.bin_grams(s, t),
                            seed=timeline.scenario.seed, noise=noise)
        detector = ChangeDetector([b.id for b in shelf.bins], rate, DetectorSettings())
        count, next_status = 0, 0
        while True:
            sample = cells.next()
            if sample.t_ns > timeline.duration_ns + TAIL_S * NS:
                break
            if sample.grams is None:
                continue
            for change in detector.feed(sample.t_ns, sample.grams):
                count += 1
                inputs.append((sample.t_ns, 0, 'change', ChangeInput(
                    f'{shelf_id}/{count}', shelf_id, (change.bin_id,), (float(change.delta_grams),),
                    change.start_ns, change.end_ns, float(change.noise_grams))))
            if sample.t_ns >= next_status:
                inputs.append((sample.t_ns, 1, 'status', (shelf_id, detector.processed_until_ns)))
                next_status = sample.t_ns + STATUS_NS
    return inputs


def standin_positions(timeline: Timeline, events: list) -> list:
    frames = TrackerSim(timeline, configured_rate('shopper_sim_node', 'rate_hz', 10.0))
    entries = [e for e in events if e.direction == ENTRY]
    inputs, applied = [], 0
    for k in range(frames.frame_count + TAIL_S * int(frames.rate_hz)):
        t = frames.frame_time(k) if k < frames.frame_count else k * frames.period_ns
        if t is None:
            continue
        while applied < len(entries) and entries[applied].stamp_ns <= t:
            frames.on_entry(entries[applied].gate_id, entries[applied].stamp_ns, entries[applied].visit_code)
            applied += 1
        tracks = [TrackInput(s.track_id, s.visit_code, s.x, s.y, None, s.confidence)
                  for s in frames.shoppers(t)] if k < frames.frame_count else []
        inputs.append((t, 2, 'positions', tracks))
    return inputs


def vision_positions(timeline: Timeline, events: list, steps: list) -> list:
    from jwo_nodes.core.tracker import Tracker, hand_per_track
    from jwo_nodes.vision_check import give_gate_events
    tracker = Tracker(list(timeline.store.gates.values()))
    inputs, next_event = [], 0
    for t_ns, shoppers, hands in steps:
        next_event = give_gate_events(tracker, events, next_event, t_ns)
        tracks, given = tracker.step(t_ns, shoppers, hands)
        hand_of = hand_per_track(given, tracker.settings.same_hand_m)
        inputs.append((t_ns, 2, 'positions', [_track_input(t, hand_of.get(t.track_id)) for t in tracks]))
    last = steps[-1][0] if steps else 0
    inputs += [(last + k * NS // 10, 2, 'positions', []) for k in range(1, TAIL_S * 10)]
    return inputs


def _track_input(track, hand) -> TrackInput:
    """Fusion's input of a published track and its hand (a HandOutput, or None)."""
    if hand is None:
        return TrackInput(track.track_id, track.visit_code, track.x, track.y, None, track.confidence)
    return TrackInput(track.track_id, track.visit_code, track.x, track.y, (hand.x, hand.y), track.confidence,
                      hand.item)


def run_scenario(timeline: Timeline, positions, weighed: list = None) -> dict:
    """The receipts of one scenario, by party (``weighed``: see FusionCore)."""
    events, _ = gate_events(timeline, epoch_ns=0)
    party_of_visit = visit_parties(timeline, events)
    inputs = [(e.stamp_ns, 1, 'gate', GateInput(e.event_id, e.gate_id, e.stamp_ns, e.direction == ENTRY,
                                                e.visit_code, e.group_size)) for e in events]
    inputs += change_inputs(timeline) + positions(timeline, events)
    inputs.sort(key=lambda item: (item[0], item[1]))
    core = FusionCore(timeline.store, weighed=weighed)
    receipts = {}
    for stamp, _, kind, item in inputs:
        if kind == 'gate':
            out = core.on_gate_event(item, stamp)
        elif kind == 'change':
            out = core.on_weight_change(item, stamp)
        elif kind == 'status':
            out = core.on_shelf_status(item[0], item[1], stamp)
        else:
            out = core.on_positions(stamp, item, stamp)
        for receipt in out.receipts:
            receipts[party_of_visit.get(receipt.visit_code)] = receipt
    return receipts


def visit_parties(timeline: Timeline, events: list) -> dict:
    """visit code -> the party that entered on it, from a scenario's gate events."""
    return {e.visit_code: timeline.party_at_entry(e.gate_id, e.stamp_ns) for e in events if e.direction == ENTRY}


def as_scored(receipt) -> dict:
    return {'status': receipt.status, 'confidence': receipt.confidence,
            'lines': [{'sku': line.sku, 'quantity': line.quantity, 'confidence': line.confidence}
                      for line in receipt.lines],
            'reasons': [{'code': r.code} for r in receipt.reasons]}


def _detections(path: str, store, cache: str) -> list:
    """[(t_ns, shoppers, hands)] of a scenario's rendered frames, from the cache or
    rendered and detected now (and cached)."""
    from jwo_nodes.core.detector import Detector, DetectorSettings as VisionSettings, default_model_path
    from jwo_nodes.vision_check import _cache_key, detect_scenario
    model = default_model_path()
    key = Path(cache) / f'{Path(path).stem}-{_cache_key(path, store.path, model, 0.0, JPEG_QUALITY)}.pkl'
    if key.is_file():
        return pickle.loads(key.read_bytes())
    steps = detect_scenario(path, store, Detector(VisionSettings(model_path=model)), 0.0, JPEG_QUALITY)
    key.parent.mkdir(parents=True, exist_ok=True)
    partial = key.with_suffix('.part')
    partial.write_bytes(pickle.dumps(steps))
    partial.replace(key)
    return steps


def tracked(path: str, store, vision: bool, cache: str):
    """(timeline, positions for run_scenario) of a scenario: the stand-in tracker's, or
    the vision tracker's on its cached detections."""
    timeline = Timeline(load_scenario(path, store), store)
    if not vision:
        return timeline, standin_positions
    steps = _detections(path, store, cache)
    return timeline, lambda tl, ev: vision_positions(tl, ev, steps)


def _scenario(job: tuple) -> tuple:
    """(receipts by party, expected items, seconds) of one scenario (path, store path,
    vision, cache): in this process or in a worker of --jobs."""
    path, store_path, vision, cache = job
    started = time.perf_counter()
    timeline, positions = tracked(path, load_store_config(store_path), vision, cache)
    receipts = run_scenario(timeline, positions)
    return receipts, timeline.expected_items(), time.perf_counter() - started


def in_processes(function, jobs: list, processes: int):
    """function(job) of each job, in order, as each is done: in this process, or in up
    to ``processes`` spawned ones (``function`` a module-level function)."""
    if processes == 1 or len(jobs) == 1:
        yield from map(function, jobs)
        return
    import multiprocessing
    with multiprocessing.get_context('spawn').Pool(min(processes, len(jobs))) as pool:
        yield from pool.imap(function, jobs)


def scenario_jobs(args) -> Optional[list]:
    """(path, store path, vision, cache) of each scenario of the command line, or None
    after printing why the store, a scenario or --jobs will not do."""
    try:
        store = load_store_config(args.store)
        for path in args.scenarios:
            load_scenario(path, store)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return None
    if args.jobs < 1:
        print(f'error: --jobs {args.jobs}: expected at least 1', file=sys.stderr)
        return None
    return [(path, args.store, args.vision, args.cache) for path in args.scenarios]


def run(args) -> int:
    jobs = scenario_jobs(args)
    if jobs is None:
        return 2
    store = load_store_config(args.store)
    results = in_processes(_scenario, jobs, args.jobs)
    prices = {sku: p.price_cents for sku, p in store.products.items()}
    groups = defaultdict(dict)       # group -> scenario/party -> scored row
    lines = defaultdict(lambda: ({}, {}))   # group -> (expected items, receipts), by scenario/party
    decided = defaultdict(list)     # group -> (expected cost or None if always reviewed, exact)
    costs = defaultdict(RunCost)    # group -> what its receipts cost the store
    finals = defaultdict(FinalReliability)   # group -> its FINAL receipts against their confidence
    for index, (path, (receipts, expected, seconds)) in enumerate(zip(args.scenarios, results), 1):
        scored = {party: as_scored(r) for party, r in receipts.items() if party}
        score = score_visits(expected, scored, prices)
        name = Path(path).stem.split('-')[0]
        costs[name] = costs[name].plus(run_cost(expected, scored, prices, store.review))
        finals[name] = finals[name].plus(final_reliability(expected, scored))
        wanted, issued = lines[name]
        for party, row in score['per_visit'].items():
            key = f'{Path(path).stem}/{party}'
            groups[name][key] = row
            wanted[key] = expected[party]
            if party in scored:
                issued[key] = scored[party]
            receipt = receipts.get(party)
            always = receipt is None or any(r.code in ALWAYS_REVIEWED for r in receipt.reasons)
            decided[name].append((None if always else receipt.expected_cost_cents, row['exact']))
        print(f'[{index}/{len(jobs)}] {Path(path).name}: ' + _summary(score)
              + f' ({seconds:.1f} s)', flush=True)
        if args.verbose:
            for party, row in score['per_visit'].items():
                if row['exact'] and not row['flagged']:
                    continue
                receipt = receipts.get(party)
                got = {line.sku: line.quantity for line in receipt.lines} if receipt else None
                print(f'    {party}: {"exact" if row["exact"] else "WRONG"} '
                      f'{"flagged" if row["flagged"] else "FINAL"} got {got} want {dict(+expected[party])}'
                      + (f' cost {receipt.expected_cost_cents} conf {receipt.confidence}' if receipt else ''))
                for reason in (receipt.reasons if receipt else ()):
                    print(f'        {reason.code} {reason.event_id}: {reason.detail}')
    totals = {name: _total(rows) for name, rows in sorted(groups.items())}
    for name, total in totals.items():
        print(f'{name}: ' + _summary(total))
    everything = {k: v for rows in groups.values() for k, v in rows.items()}
    print('all: ' + _summary(_total(everything)))
    # The store's own measure of a run (config `review`): a change that flags fewer
    # visits but lets wrong receipts through can cost more than the reviews it saves.
    print(f'run cost (store: review {store.review.cost_cents} c, overcharge x{store.review.overcharge_weight:g}, '
          f'wrong line {store.review.wrong_line_cents} c): ' + '; '.join(
              f'{name} {c.total_cents} c ({c.reviews} reviews, {c.overcharged_cents} c over, '
              f'{c.undercharged_cents} c under, {c.wrong_final_lines} wrong FINAL lines)'
              for name, c in sorted(costs.items())))
    # Flagging by expected cost trusts the confidences: this says whether it may.
    print('FINAL receipts against their confidence: ' + '; '.join(
        f'{name} {f.receipts} ({f.wrong} wrong, {f.expected_wrong:.1f} expected)'
        for name, f in sorted(finals.items())))
    print(f'review cost sweep (store: {store.review.cost_cents} cents): flagged / exact among not flagged')
    for name, rows in sorted(decided.items()):
        print(f'  {name}: ' + '; '.join(_sweep_point(rows, cents) for cents in SWEEP_CENTS))
    calibrations = {name: calibration(*lines[name]) for name in sorted(lines)}
    calibrations['all'] = calibration(*({k: v for wanted, _ in lines.values() for k, v in wanted.items()},
                                        {k: v for _, issued in lines.values() for k, v in issued.items()}))
    print('line calibration error (ECE): ' + '; '.join(f'{name} {c.ece:.3f} ({c.lines} lines)'
                                                      for name, c in calibrations.items()))
    if args.report:
        Path(args.report).write_text(json.dumps(
            {'groups': totals, 'calibration': {name: asdict(c) for name, c in calibrations.items()},
             'cost': {name: asdict(c) for name, c in sorted(costs.items())},
             'final_reliability': {name: asdict(f) for name, f in sorted(finals.items())}}, indent=1))
    return 0


def _sweep_point(rows: list, cents: int) -> str:
    """Flagged share and exact share among the rest had the review cost been ``cents``."""
    kept = [exact for cost, exact in rows if cost is not None and cost <= cents]
    return (f'{cents} c: {100 * (1 - len(kept) / len(rows)):.0f} % / '
            f'{100 * sum(kept) / len(kept) if kept else 100:.1f} %')


def _total(rows: dict) -> dict:
    visits = len(rows) or 1
    not_flagged = [r for r in rows.values() if not r['flagged']]
    return {'visits': len(rows), 'exact_receipt_rate': sum(r['exact'] for r in rows.values()) / visits,
            'review_rate': sum(r['flagged'] for r in rows.values()) / visits,
            'exact_among_not_flagged': sum(r['exact'] for r in not_flagged) / len(not_flagged) if not_flagged else 1.0,
            'wrong_charge_items': sum(sum(r['overcharged'].values()) for r in not_flagged),
            'missing_receipts': sum(r['missing'] for r in rows.values()),
            'line_f1': _f1(rows.values())}


def _f1(rows) -> float:
    rows = list(rows)
    hits = sum(r['line_hits'] for r in rows)
    predicted, truth = sum(r['lines_issued'] for r in rows), sum(r['lines_true'] for r in rows)
    precision, recall = hits / predicted if predicted else 1.0, hits / truth if truth else 1.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _summary(score: dict) -> str:
    f1 = score.get('line_f1', 0.0)
    return (f'{score["visits"]} visits, exact {100 * score["exact_receipt_rate"]:.1f} %, flagged '
            f'{100 * score["review_rate"]:.1f} %, exact among not flagged '
            f'{100 * score["exact_among_not_flagged"]:.1f} %, wrong items {score["wrong_charge_items"]}, '
            f'no receipt {score["missing_receipts"]}, line F1 {f1:.3f}')
