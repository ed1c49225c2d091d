"""`jwo eval`: scenarios or bags through the real nodes, scored against the ground truth.

    jwo eval config/scenarios/demo.yaml test/scenarios/*.yaml
    jwo eval --preset medium --seeds 0-4
    jwo eval --suite test/scenarios --min-exact-not-flagged 0.99 --max-review-rate 0.3
    jwo eval runs/demo-bag [--time-scale 1 | --max]      # a bag from `jwo simbag`

For each scenario a fresh node set runs it (separate processes over DDS). A bag (a
directory from `jwo simbag`, or its .mcap file) is checked whole first (a truncated or
damaged bag, or one whose sensor stamps run backwards, is one error line naming the
file and record, exit status 1, before anything starts); then a fresh set of the
processing nodes (fusion and a weight detector per shelf, jwo_nodes.graph.
processing_graph) takes it as `jwo replay` plays it, at --time-scale times real time or
with --max as fast as they keep up, and it is scored against the ground truth in the
bag (its store config too, unless --store is given). Reported per
visit and overall: exact-receipt rate; line-item precision, recall and F1 (a hit needs
product, quantity and visit right); share of visits flagged for review (visits without
a receipt among them, also counted apart); exact-receipt rate among the visits not
flagged; wrong charges; FINAL receipts missing items; the calibration of the lines'
confidences (and its ECE); the FINAL receipts that were wrong against how many their
confidences expected; the run's cost from the store's `review` costs; weight-event
precision and recall; exit-to-receipt latency. Writes report.json and report.html (with
plots) in the run folder (each written to a temporary file and renamed, so a report
that is there is complete). A receipt that is of no party, or a second one for a party,
is an error line naming it and exit status 1. With thresholds, exits 1 when a threshold
is not met; exit status 2 for a bad scenario or store config (one line naming the file
and the key).
"""
import html
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import rclpy
import yaml

from jwo_nodes.bag.format import BagError
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.scenario_gen import PRESETS, generate
from jwo_nodes.core.scoring import (RunCost, calibration, final_reliability, percentiles, run_cost,
                                    score_visits, score_weight_events, threshold_sweep)
from jwo_nodes.core.sim import NS, Timeline, load_scenario
from jwo_nodes.launcher import START_LEAD_S, add_shelves_per_process
from jwo_nodes.runner import run_bag, run_scenario

DEFAULT_STORE = 'config/stores/demo.yaml'


def add_arguments(parser) -> None:
    add_shelves_per_process(parser)
    parser.add_argument('scenarios', nargs='*', metavar='SCENARIO_OR_BAG',
                        help='scenario YAML files, or bags from `jwo simbag` (directories or '
                             '.mcap files)')
    parser.add_argument('--suite', help='a folder of scenario YAML files (all *.yaml in it)')
    parser.add_argument('--preset', choices=sorted(PRESETS), help='generate scenarios with this preset')
    parser.add_argument('--seeds', default='0', help='seeds for --preset: "3", "0-4" or "1,5,9"')
    parser.add_argument('--store', help=f'store config YAML (default: {DEFAULT_STORE}; for a bag, '
                                         'the store config in its ground truth)')
    parser.add_argument('--time-scale', type=float, default=4.0,
                        help='scenario seconds per wall second (bags: the replay rate)')
    parser.add_argument('--max', action='store_true',
                        help='bags: replay as fast as the processing nodes keep up')
    parser.add_argument('--start-delay', type=float, default=START_LEAD_S,
                        help='wall seconds from the graph being ready (every node up, every '
                        f'publisher-subscriber pair matched) to scenario time 0 (default {START_LEAD_S:g})')
    parser.add_argument('--grace', type=float, default=20.0, help='wall seconds to wait for receipts after the end')
    parser.add_argument('--cameras', action='store_true', help='also run the camera nodes')
    parser.add_argument('--vision', action='store_true',
                        help='track shoppers on (rendered) camera frames with vision_tracker_node '
                             'instead of the simulator stand-in (runs the cameras)')
    parser.add_argument('--runs-dir', default='runs', help='where the run folder is created')
    parser.add_argument('--out', help='run folder (default: <runs-dir>/eval-<date>)')
    parser.add_argument('--min-exact-not-flagged', type=float, help='fail below this exact rate among not flagged')
    parser.add_argument('--max-review-rate', type=float, help='fail above this share of visits flagged')
    parser.add_argument('--max-wrong-charges', type=int, help='fail above this many wrongly charged items')


def parse_seeds(text: str) -> list:
    seeds = []
    for part in text.split(','):
        if '-' in part:
            low, high = part.split('-', 1)
            seeds.extend(range(int(low), int(high) + 1))
        elif part.strip():
            seeds.append(int(part))
    return seeds


def is_bag(path: Path) -> bool:
    """A bag directory (rosbag2, or a folder with .mcap files) or an .mcap file."""
    return path.is_dir() or path.suffix == '.mcap' or path.name.endswith('.mcap.part')


def check_bag(path: Path, store_arg, folder: Path) -> dict:
    """Reads a bag whole before anything runs: structure, every chunk, the ground truth,
    and the stamps of the sensor streams (they must not go back). Returns what a run
    needs. BagError / ConfigError otherwise."""
    from jwo_nodes.bag.format import BagReader
    from jwo_nodes.simbag import GROUND_TRUTH_TOPIC, read_ground_truth, store_and_scenario
    with BagReader(path) as reader:
        reader.validate()
        truth = read_ground_truth(reader)
        inputs = [t for t in reader.topics if t != GROUND_TRUTH_TOPIC]
        reader.check_definitions(inputs)
        reader.check_stamp_order(inputs)
    if store_arg:
        store_path, store = store_arg, load_store_config(store_arg)
    else:
        store_path, store = store_and_scenario(truth, folder / 'stores' / truth.name)
    return {'truth': truth, 'store': store, 'store_path': str(store_path)}


def write_atomically(path: Path, text: str) -> None:
    """Writes a file so that it is either absent or complete (temp file, then rename)."""
    tmp = path.with_name(f'.{path.name}.tmp')
    with open(tmp, 'w') as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def run(args) -> int:
    # A preset made for one store (corner_medium, corner_hard) runs there by default.
    default_store = (args.preset and PRESETS[args.preset].store_config) or DEFAULT_STORE
    try:
        store = load_store_config(args.store or default_store)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if not args.time_scale > 0:
        print(f'error: --time-scale must be positive, got {args.time_scale}', file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.runs_dir) / time.strftime('eval-%Y%m%d-%H%M%S')
    out.mkdir(parents=True, exist_ok=True)
    for name in ('report.json', 'report.html'):  # an earlier report must not pass for this one
        (out / name).unlink(missing_ok=True)
    paths = [Path(p) for p in args.scenarios]
    if args.suite:
        paths.extend(sorted(Path(args.suite).glob('*.yaml')))
    if args.preset:
        try:
            seeds = parse_seeds(args.seeds)
        except ValueError:
            print(f'error: --seeds {args.seeds!r}: expected "3", "0-4" or "1,5,9"', file=sys.stderr)
            return 2
        generated = out / 'scenarios'
        generated.mkdir(exist_ok=True)
        for seed in seeds:
            path = generated / f'{args.preset}-{seed}.yaml'
            try:
                document = generate(store, args.preset, seed)
            except ConfigError as error:
                print(f'error: --preset {args.preset}: {error}', file=sys.stderr)
                return 2
            path.write_text(yaml.safe_dump(document, sort_keys=False))
            paths.append(path)
    if not paths:
        print('error: no scenarios: give files, --suite or --preset', file=sys.stderr)
        return 2
    timelines, bags = {}, {}
    for path in paths:
        try:
            if is_bag(path):
                bags[path] = check_bag(path, args.store, out)
            else:
                timelines[path] = Timeline(load_scenario(path, store), store)
        except ConfigError as error:
            print(f'error: {error}', file=sys.stderr)
            return 2
        except BagError as error:
            print(f'error: {error}', file=sys.stderr)
            return 1
    prices = {sku: p.price_cents for sku, p in store.products.items()}
    for bag in bags.values():
        prices.update({sku: p.price_cents for sku, p in bag['store'].products.items()})
    results = []
    rclpy.init()
    try:
        for index, path in enumerate(paths, 1):
            if path in bags:
                results.append(_run_bag(args, index, len(paths), path, bags[path], out, prices))
                continue
            timeline = timelines[path]
            expected_wall = timeline.duration_ns / NS / args.time_scale + args.start_delay
            print(f'[{index}/{len(paths)}] {path.name}: {len(timeline.scenario.parties)} parties, '
                  f'{timeline.duration_ns / NS:.0f} s scenario (~{expected_wall:.0f} s wall) ...', flush=True)
            result = run_scenario(store, args.store or DEFAULT_STORE, str(path), timeline,
                                  time_scale=args.time_scale,
                                  start_delay_s=args.start_delay, with_cameras=args.cameras,
                                  vision=args.vision, state_dir=out / f'{path.stem}.state',
                                  log_path=out / f'{path.stem}.nodes.log', grace_s=args.grace,
                                  shelves_per_process=args.shelves_per_process)
            expected = timeline.expected_items()
            visits = score_visits(expected, result.receipts, prices)
            events = score_weight_events(
                [(e.bin_id, e.end_ns, e.delta_grams) for e in timeline.weight_events], result.changes)
            cost = run_cost(expected, result.receipts, prices, store.review)
            results.append(_entry(path, timeline.scenario.name, visits, events, expected, result, cost))
            _print_scores(path, visits, events, result, cost)
    except KeyboardInterrupt:
        print('interrupted: no report written', file=sys.stderr)
        return 130
    finally:
        rclpy.try_shutdown()
    report = build_report(results, store, prices)
    write_atomically(out / 'report.json', json.dumps(report, indent=2, default=str) + '\n')
    write_atomically(out / 'report.html', render_html(report))
    overall = report['overall']
    print()
    if len(report['groups']) > 1:
        for name, totals in report['groups'].items():
            print(f'{name} ({totals["visits"]} visits): ' + _summary(totals))
    print(f'overall ({overall["visits"]} visits in {len(results)} scenarios): ' + _summary(overall))
    latency = overall['exit_to_receipt_s']
    if latency['count']:
        print(f'exit -> receipt: p50 {latency["p50"]:.2f} s, p95 {latency["p95"]:.2f} s, p99 {latency["p99"]:.2f} s')
    print(f'report: {out / "report.json"}, {out / "report.html"}')
    failures = []
    if args.min_exact_not_flagged is not None and overall['exact_among_not_flagged'] < args.min_exact_not_flagged:
        failures.append(f'exact among not flagged {overall["exact_among_not_flagged"]:.3f} < {args.min_exact_not_flagged}')
    if args.max_review_rate is not None and overall['review_rate'] > args.max_review_rate:
        failures.append(f'review rate {overall["review_rate"]:.3f} > {args.max_review_rate}')
    if args.max_wrong_charges is not None and overall['wrong_charge_items'] > args.max_wrong_charges:
        failures.append(f'wrong charges {overall["wrong_charge_items"]} > {args.max_wrong_charges}')
    if any(r['failure'] for r in results):
        failures.append('a run failed: ' + '; '.join(r['failure'] for r in results if r['failure']))
    unmatched = [f'{Path(r["scenario"]).name}: {u["receipt_id"]}' for r in results for u in r['unmatched_receipts']]
    if unmatched:
        failures.append(f'{len(unmatched)} receipts of no party or a party\'s second: ' + ', '.join(unmatched))
    for failure in failures:
        print(f'THRESHOLD FAILED: {failure}')
    return 1 if failures else 0


def _summary(totals: dict) -> str:
    cost, final = totals['cost'], totals['final_reliability']
    return (f'exact {totals["exact_receipt_rate"]:.1%}, line F1 {totals["line_f1"]:.3f}, '
            f'flagged {totals["review_rate"]:.1%} ({totals["reviews"]} reviews, '
            f'{totals["missing_receipts"]} missing receipts), exact among not flagged '
            f'{totals["exact_among_not_flagged"]:.1%}, wrong charges {totals["wrong_charge_items"]} items '
            f'({totals["wrong_charge_cents"]} cents), FINAL missing items '
            f'{totals["final_receipts_missing_items"]}, ECE {totals["calibration"]["ece"]:.3f} '
            f'({totals["calibration"]["lines"]} lines), FINAL {final["receipts"]} ({final["wrong"]} wrong, '
            f'{final["expected_wrong"]:.1f} expected), cost {cost["total_cents"]} cents '
            f'(over {cost["overcharged_cents"]}, under {cost["undercharged_cents"]}, '
            f'wrong lines {cost["wrong_final_lines"]}, reviews {cost["reviews"]}), '
            f'weight events P {totals["weight_precision"]:.3f} R {totals["weight_recall"]:.3f}')


def _print_scores(path: Path, visits: dict, events: dict, result, cost: RunCost) -> None:
    print(f'    exact {visits["exact_receipt_rate"]:.0%}, flagged {visits["review_rate"]:.0%}, '
          f'exact among not flagged {visits["exact_among_not_flagged"]:.0%}, '
          f'wrong charges {visits["wrong_charge_items"]}, missing {visits["missing_receipts"]}, '
          f'FINAL missing items {visits["final_receipts_missing_items"]}, cost {cost.total_cents} cents, '
          f'weight events P {events["precision"]:.2f} R {events["recall"]:.2f}, '
          f'{result.wall_s:.0f} s' + (f'  FAILURE: {result.failure}' if result.failure else ''),
          flush=True)
    # Never a silent "no receipt": the receipt was issued and nobody can say whose it is.
    for unmatched in result.unmatched:
        print(f'error: {path.name}: receipt {unmatched.receipt_id} (visit {unmatched.visit_code}): '
              f'{unmatched.problem}', file=sys.stderr, flush=True)


def _run_bag(args, index: int, total: int, path: Path, bag: dict, out: Path, prices: dict) -> dict:
    """One bag through the processing nodes, scored against its ground truth."""
    truth = bag['truth']
    rate = None if args.max else args.time_scale
    duration_s = truth.scenario['duration_ns'] / NS
    pace = 'as fast as the nodes keep up' if rate is None else f'~{duration_s / rate:.0f} s wall at {rate:g}x'
    print(f'[{index}/{total}] bag {path}: {truth.name}, {len(truth.parties)} parties, '
          f'{duration_s:.0f} s ({pace}) ...', flush=True)
    result, _ = run_bag(bag['store'], bag['store_path'], path, truth, rate=rate,
                     log_path=out / f'{path.name}.nodes.log', grace_s=args.grace,
                     shelves_per_process=args.shelves_per_process)
    expected = truth.expected_items()
    visits = score_visits(expected, result.receipts, prices)
    events = score_weight_events(
        [(e['bin_id'], e['end_ns'] - truth.epoch_ns, e['delta_grams']) for e in truth.weight_events],
        result.changes)
    cost = run_cost(expected, result.receipts, prices, bag['store'].review)
    _print_scores(path, visits, events, result, cost)
    return _entry(path, truth.name, visits, events, expected, result, cost, source='bag',
                  replay='max' if rate is None else rate)


def _entry(path, name: str, visits: dict, events: dict, expected: dict, result, cost: RunCost,
           **extra) -> dict:
    """One scenario's (or bag's) part of the report."""
    return {'scenario': str(path), 'name': name, **extra, 'visits': visits,
            'weight_events': events, 'cost': asdict(cost), 'receipts': result.receipts,
            'exit_to_receipt_s': result.exit_to_receipt_s,
            'expected': {p: dict(+c) for p, c in expected.items()},
            'cart_latency_ms': percentiles(result.cart_latency_ms),
            'wall_s': round(result.wall_s, 1), 'failure': result.failure,
            'unmatched_receipts': [asdict(u) for u in result.unmatched],
            'review_requests': len(result.review_requests)}


def build_report(results: list, store, prices: dict = None) -> dict:
    """Totals over all visits of all scenarios (each visit counts once), overall and per
    group: the scenario names' first word (``medium-3`` is in ``medium``)."""
    prices = prices or {sku: p.price_cents for sku, p in store.products.items()}
    overall, expected, receipts = _totals(results, prices)
    groups = {}
    for r in results:
        groups.setdefault(r['name'].split('-')[0], []).append(r)
    return {'overall': overall, 'groups': {name: _totals(members, prices)[0] for name, members in groups.items()},
            'sweep': threshold_sweep(expected, receipts),
            'latencies_s': [s for r in results for s in r['exit_to_receipt_s'].values()], 'scenarios': results}


def _totals(results: list, prices: dict) -> tuple:
    expected, receipts, latencies = {}, {}, []
    weight = Counter()
    cost = RunCost()   # each run priced with its own store's review costs, then added
    for r in results:
        for party, items in r['expected'].items():
            key = f'{r["name"]}/{party}'
            expected[key] = Counter(items)
            if party in r['receipts']:
                receipts[key] = r['receipts'][party]
        latencies.extend(r['exit_to_receipt_s'].values())
        for k in ('true', 'detected', 'matched'):
            weight[k] += r['weight_events'][k]
        cost = cost.plus(RunCost(**r['cost']))
    totals = score_visits(expected, receipts, prices)
    totals.pop('per_visit')
    totals['unmatched_receipts'] = sum(len(r['unmatched_receipts']) for r in results)
    totals['calibration'] = asdict(calibration(expected, receipts))
    totals['final_reliability'] = asdict(final_reliability(expected, receipts))
    totals['cost'] = asdict(cost)
    totals['exit_to_receipt_s'] = percentiles(latencies)
    totals['weight_precision'] = weight['matched'] / weight['detected'] if weight['detected'] else 1.0
    totals['weight_recall'] = weight['matched'] / weight['true'] if weight['true'] else 1.0
    return totals, expected, receipts


def _row(name: str, visits: dict, weight: str, cost: dict, failure: str = '') -> str:
    return (f'<tr><td>{html.escape(name)}</td><td>{visits["visits"]}</td>'
            f'<td>{visits["exact_receipt_rate"]:.0%}</td><td>{visits["review_rate"]:.0%}</td>'
            f'<td>{visits["missing_receipts"]}</td>'
            f'<td>{visits["exact_among_not_flagged"]:.0%}</td><td>{visits["wrong_charge_items"]}</td>'
            f'<td>{visits["final_receipts_missing_items"]}</td><td>{cost["total_cents"]}</td>'
            f'<td>{weight}</td><td>{html.escape(failure)}</td></tr>')


def _failure_text(r: dict) -> str:
    problems = [r['failure']] if r['failure'] else []
    problems += [f'receipt {u["receipt_id"]}: {u["problem"]}' for u in r['unmatched_receipts']]
    return '; '.join(problems)


def _calibration_table(report: dict) -> str:
    """Per confidence bin: mean confidence / observed share right (lines), overall and per group."""
    columns = {'overall': report['overall'], **{f'all {n}': t for n, t in report['groups'].items()}}
    head = ''.join(f'<th>{html.escape(name)}</th>' for name in columns)
    rows = ''
    for i, first in enumerate(report['overall']['calibration']['bins']):
        cells = ''
        for totals in columns.values():
            b = totals['calibration']['bins'][i]
            cells += (f'<td>{b["mean_confidence"]:.2f} / {b["observed"]:.2f} ({b["lines"]})</td>'
                      if b['lines'] else '<td>–</td>')
        rows += f'<tr><td>{first["low"]:.1f}–{first["high"]:.1f}</td>{cells}</tr>'
    rows += '<tr><th>ECE</th>' + ''.join(f'<th>{t["calibration"]["ece"]:.3f}</th>' for t in columns.values()) + '</tr>'
    return (f'<table><tr><th>line confidence</th>{head}</tr>{rows}</table>'
            '<p>Each cell: mean confidence / share of lines right (product, quantity and visit) (lines).</p>')


def _cost_table(report: dict) -> str:
    columns = {'overall': report['overall'], **{f'all {n}': t for n, t in report['groups'].items()}}
    rows = ''.join(
        f'<tr><td>{html.escape(name)}</td><td>{c["overcharged_cents"]}</td><td>{c["undercharged_cents"]}</td>'
        f'<td>{c["wrong_final_lines"]}</td><td>{c["reviews"]}</td><td><b>{c["total_cents"]}</b></td></tr>'
        for name, c in ((name, totals['cost']) for name, totals in columns.items()))
    return ('<table><tr><th></th><th>overcharged (cents, FINAL)</th><th>undercharged (cents)</th>'
            f'<th>wrong FINAL lines</th><th>reviews</th><th>total cost (cents)</th></tr>{rows}</table>')


def render_html(report: dict) -> str:
    overall = report['overall']
    rows = ''.join(_row(f'all {name}', totals, f'{totals["weight_precision"]:.2f} / {totals["weight_recall"]:.2f}',
                        totals['cost'])
                   for name, totals in report['groups'].items())
    rows += ''.join(_row(r['name'], r['visits'], f'{r["weight_events"]["precision"]:.2f} / '
                         f'{r["weight_events"]["recall"]:.2f}', r['cost'], _failure_text(r))
                    for r in report['scenarios'])
    figures = [('exact receipt rate', overall['exact_receipt_rate']),
               ('line F1', overall['line_f1']), ('flagged for review', overall['review_rate']),
               ('exact among not flagged', overall['exact_among_not_flagged'])]
    cards = ''.join(f'<div class="card"><b>{v:.1%}</b><br>{k}</div>' for k, v in figures)
    cards += f'<div class="card"><b>{overall["wrong_charge_items"]}</b><br>wrong charges (items)</div>'
    cards += f'<div class="card"><b>{overall["missing_receipts"]}</b><br>visits without a receipt</div>'
    cards += f'<div class="card"><b>{overall["cost"]["total_cents"]}</b><br>cost (cents)</div>'
    cards += f'<div class="card"><b>{overall["calibration"]["ece"]:.3f}</b><br>line calibration error (ECE)</div>'
    latency = overall['exit_to_receipt_s']
    if latency['count']:
        cards += f'<div class="card"><b>{latency["p50"]:.2f} s / {latency["p99"]:.2f} s</b><br>exit to receipt p50 / p99</div>'
    return f'''<!doctype html><html><head><meta charset="utf-8"><title>jwo eval</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}} .card{{display:inline-block;border:1px solid #ccc;
border-radius:6px;padding:.8em 1.2em;margin:.3em;text-align:center}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:.3em .6em}} svg{{border:1px solid #eee;margin:1em 1em 0 0}}</style></head>
<body><h1>jwo eval</h1><p>{overall["visits"]} visits in {len(report["scenarios"])} scenarios.</p>{cards}
<div>{_sweep_svg(report["sweep"])}{_histogram_svg(report["latencies_s"])}{_calibration_svg(overall["calibration"])}</div>
<h2>Scenarios</h2><table><tr><th>scenario</th><th>visits</th><th>exact</th><th>flagged</th><th>no receipt</th>
<th>exact among not flagged</th><th>wrong charges</th><th>FINAL missing items</th><th>cost (cents)</th>
<th>weight events P / R</th><th>failure</th></tr>{rows}</table>
<h2>Cost</h2>{_cost_table(report)}
<h2>Calibration of line confidence</h2>{_calibration_table(report)}
</body></html>
'''


_PAD = 45


def _unit_plot(width: int, height: int, title: str, x_label: str, y_label: str, body: str) -> str:
    """An SVG of a unit square plot: title, axes with ticks at quarters, labels, and
    ``body`` (drawn in the coordinates of _unit_xy)."""
    pad = _PAD
    ticks = ''.join(
        f'<text x="{pad + v * (width - 2 * pad):.0f}" y="{height - pad + 15}" text-anchor="middle" font-size="11">{v:g}</text>'
        f'<text x="{pad - 6}" y="{height - pad - v * (height - 2 * pad) + 4:.0f}" text-anchor="end" font-size="11">{v:g}</text>'
        for v in (0, 0.25, 0.5, 0.75, 1))
    return (f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'<text x="{width / 2}" y="18" text-anchor="middle">{title}</text>'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>'
            f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">{x_label} (0 to 1)</text>'
            f'<text x="12" y="{height / 2}" transform="rotate(-90 12 {height / 2})" text-anchor="middle">'
            f'{y_label} (0 to 1)</text>{ticks}{body}</svg>')


def _unit_xy(x: float, y: float, width: int, height: int) -> tuple:
    return _PAD + x * (width - 2 * _PAD), height - _PAD - y * (height - 2 * _PAD)


def _sweep_svg(points: list, width: int = 420, height: int = 300) -> str:
    """Exact among not flagged (y) against review rate (x) as the threshold sweeps."""
    xys = [_unit_xy(p['review_rate'], p['exact_among_not_flagged'], width, height) for p in points]
    path = ' '.join(f'{x:.1f},{y:.1f}' for x, y in xys)
    dots = ''.join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>threshold {p["threshold"]}: '
                   f'review {p["review_rate"]:.1%}, exact {p["exact_among_not_flagged"]:.1%}</title></circle>'
                   for p, (x, y) in zip(points, xys))
    return _unit_plot(width, height, 'exact among not flagged vs review rate', 'review rate', 'exact',
                      f'<polyline points="{path}" fill="none" stroke="#36c"/>{dots}')


def _calibration_svg(calib: dict, width: int = 420, height: int = 300) -> str:
    """Share of lines right (y) against mean confidence (x) per bin; on the diagonal the
    confidence means what it says."""
    filled = [b for b in calib['bins'] if b['lines']]
    xys = [_unit_xy(b['mean_confidence'], b['observed'], width, height) for b in filled]
    path = ' '.join(f'{x:.1f},{y:.1f}' for x, y in xys)
    dots = ''.join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{b["low"]:.1f}-{b["high"]:.1f}: '
                   f'{b["lines"]} lines, confidence {b["mean_confidence"]:.2f}, right {b["observed"]:.1%}'
                   f'</title></circle>' for b, (x, y) in zip(filled, xys))
    (x0, y0), (x1, y1) = _unit_xy(0, 0, width, height), _unit_xy(1, 1, width, height)
    return _unit_plot(width, height, f'line calibration (n={calib["lines"]}, ECE {calib["ece"]:.3f})',
                      'confidence', 'share right',
                      f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#bbb" stroke-dasharray="4 3"/>'
                      f'<polyline points="{path}" fill="none" stroke="#c63"/>{dots}')


def _histogram_svg(values: list, width: int = 420, height: int = 300, bins: int = 20) -> str:
    pad = 45
    if not values:
        return ''
    top = max(values) or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int(v / top * bins))] += 1
    peak = max(counts)
    bar = (width - 2 * pad) / bins
    bars = ''.join(
        f'<rect x="{pad + i * bar:.1f}" y="{height - pad - c / peak * (height - 2 * pad):.1f}" '
        f'width="{bar - 1:.1f}" height="{c / peak * (height - 2 * pad):.1f}" fill="#6a4"/>'
        for i, c in enumerate(counts))
    return (f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'<text x="{width / 2}" y="18" text-anchor="middle">exit to receipt latency (n={len(values)})</text>'
            f'{bars}<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
            f'<text x="{pad}" y="{height - 25}">0 s</text>'
            f'<text x="{width - pad}" y="{height - 25}" text-anchor="end">{top:.2f} s</text></svg>')
