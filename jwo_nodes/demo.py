"""`jwo demo`: the whole edge stack on a simulated store, receipts against the truth.

Starts the store's node set with the launcher (real processes over DDS), plays the
scenario through the simulated sensors, and watches the graph from a monitor node:
each receipt is printed next to the ground truth as it is issued and written as JSON
under the run folder. Stops by itself once every party has its receipt.
"""
import json
import statistics
import sys
import time
from pathlib import Path

import rclpy
from jwo_msgs.msg import CartUpdate, GateEvent, Receipt, WeightChange
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.money import format_cents
from jwo_nodes.core.sim import NS, SimClock, Timeline, load_scenario
from jwo_nodes.graph import default_params_dir, store_graph
from jwo_nodes.launcher import Supervisor
from jwo_nodes.ros_common import EVENT_QOS, to_ns

MATCH, REVIEW, WRONG, MISSING = 'MATCH', 'REVIEW', 'WRONG', 'MISSING'


def add_arguments(parser) -> None:
    parser.add_argument('--store', default='config/stores/demo.yaml', help='store config YAML')
    parser.add_argument('--scenario', default='config/scenarios/demo.yaml', help='scenario YAML')
    parser.add_argument('--time-scale', type=float, default=2.0,
                        help='scenario seconds per wall second (default 2: the 1-minute demo takes 30 s)')
    parser.add_argument('--start-delay', type=float, default=5.0,
                        help='wall seconds between starting the nodes and scenario time 0')
    parser.add_argument('--runs-dir', default='runs', help='where the run folder is created')
    parser.add_argument('--no-cameras', action='store_true', help='do not start camera nodes')
    parser.add_argument('--grace', type=float, default=30.0,
                        help='wall seconds to wait for receipts after the scenario ends')


class DemoMonitor(Node):
    """Listens to the graph like any other node: gate events, weight changes, cart
    updates and receipts, with the wall time each arrived."""

    def __init__(self, store):
        super().__init__('demo_monitor', namespace='/jwo')
        self.entries = []          # (gate_id, stamp_ns, visit_code)
        self.exit_wall = {}        # visit code -> wall ns of its last EXIT event with a code
        self.change_wall = {}      # event id -> wall ns received
        self.cart_latency_ms = []  # change received -> cart update received
        self.receipts = []         # (wall ns, Receipt)
        for gate_id in store.gates:
            self.create_subscription(GateEvent, f'gates/{gate_id}/events', self._on_gate, EVENT_QOS)
        for shelf_id in store.shelves:
            self.create_subscription(WeightChange, f'shelves/{shelf_id}/weight/changes',
                                     self._on_change, EVENT_QOS)
        self.create_subscription(CartUpdate, 'cart/updates', self._on_cart, EVENT_QOS)
        self.create_subscription(Receipt, 'receipts', self._on_receipt, EVENT_QOS)

    def _on_gate(self, msg: GateEvent) -> None:
        if msg.direction == GateEvent.ENTRY:
            self.entries.append((msg.gate_id, to_ns(msg.header.stamp), msg.visit_code))

    def _on_change(self, msg: WeightChange) -> None:
        self.change_wall[msg.event_id] = time.time_ns()

    def _on_cart(self, msg: CartUpdate) -> None:
        received = self.change_wall.get(msg.cause_event_id)
        if received is not None:
            self.cart_latency_ms.append((time.time_ns() - received) / 1e6)

    def _on_receipt(self, msg: Receipt) -> None:
        self.receipts.append((time.time_ns(), msg))


def run(args) -> int:
    try:
        store = load_store_config(args.store)
        timeline = Timeline(load_scenario(args.scenario, store), store)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    run_dir = Path(args.runs_dir) / time.strftime('demo-%Y%m%d-%H%M%S')
    (run_dir / 'receipts').mkdir(parents=True, exist_ok=True)
    clock = SimClock(time.time_ns() + int(args.start_delay * NS), args.time_scale)
    specs = store_graph(args.store, params_dir=default_params_dir(), scenario=args.scenario,
                        sim_start_ns=clock.start_ns, time_scale=args.time_scale,
                        with_cameras=not args.no_cameras)
    parties = [p.id for p in timeline.scenario.parties]
    expected = {party: timeline.expected_receipt(party) for party in parties}
    print(f'jwo demo: store {store.store_id}, scenario {timeline.scenario.name} '
          f'({len(parties)} parties, {timeline.duration_ns / NS:.0f} s at {args.time_scale:g}x), '
          f'{len(specs)} nodes; run folder {run_dir}')
    log_file = open(run_dir / 'nodes.log', 'w')

    def log(line: str) -> None:
        log_file.write(line + '\n')
        if 'error' in line.lower() or '[launch]' in line:
            print(line, flush=True)

    wall_start = time.monotonic()
    rclpy.init()
    monitor = DemoMonitor(store)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    results = {}
    supervisor = Supervisor(specs, log=log)
    supervisor.start()
    deadline = clock.start_ns + int(timeline.duration_ns / args.time_scale) + int(args.grace * NS)
    printed = 0
    try:
        while len(results) < len(parties) and time.time_ns() < deadline:
            if supervisor.poll() is not None:
                print(f'error: the node set stopped: {supervisor.failure}', file=sys.stderr)
                break
            executor.spin_once(timeout_sec=0.1)
            while printed < len(monitor.receipts):
                wall_ns, receipt = monitor.receipts[printed]
                printed += 1
                party = _party_of(receipt.visit_code, monitor.entries, timeline, clock)
                verdict = _verdict(receipt, expected.get(party))
                results[party or receipt.visit_code] = (verdict, receipt)
                exit_to_receipt_s = (wall_ns - _wall_of(to_ns(receipt.exit_stamp), clock)) / NS
                _print_receipt(receipt, party, expected.get(party), verdict, exit_to_receipt_s, store.currency)
                _write_receipt(run_dir, receipt, party, expected.get(party), verdict, exit_to_receipt_s)
    except KeyboardInterrupt:
        print('interrupted')
    finally:
        supervisor.stop()
        executor.remove_node(monitor)
        monitor.destroy_node()
        rclpy.try_shutdown()
        log_file.close()
    for party in parties:
        if party not in results:
            results[party] = (MISSING, None)
            print(f'\n  party {party}: no receipt  -> {MISSING}')
    summary = _summary(results, expected, monitor.cart_latency_ms, time.monotonic() - wall_start)
    (run_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    counts = summary['verdicts']
    latency = summary['change_to_cart_update_ms']
    print(f'\n{len(parties)} visits: {counts.get(MATCH, 0)} match the ground truth, '
          f'{counts.get(REVIEW, 0)} sent to review with reasons, {counts.get(WRONG, 0)} wrong, '
          f'{counts.get(MISSING, 0)} missing.')
    if latency['count']:
        print(f'weight change -> cart update: median {latency["p50"]:.1f} ms, p99 {latency["p99"]:.1f} ms '
              f'over {latency["count"]} changes; demo wall time {summary["wall_s"]:.1f} s')
    print(f'receipts and summary: {run_dir}')
    return 0 if counts.get(WRONG, 0) == 0 and counts.get(MISSING, 0) == 0 else 1


def _wall_of(stamp_ns: int, clock: SimClock) -> int:
    return clock.start_ns + int((stamp_ns - clock.start_ns) / clock.time_scale)


def _party_of(visit_code: str, entries: list, timeline: Timeline, clock: SimClock):
    for gate_id, stamp_ns, code in entries:
        if code == visit_code:
            return timeline.party_at_entry(gate_id, stamp_ns - clock.start_ns)
    return None


def _verdict(receipt: Receipt, expected) -> str:
    if receipt.status == Receipt.NEEDS_REVIEW and receipt.reasons:
        return REVIEW
    if expected is None:
        return WRONG
    got = sorted((line.sku, line.quantity) for line in receipt.lines)
    want = sorted((line['sku'], line['quantity']) for line in expected['lines'])
    return MATCH if got == want and receipt.total_cents == expected['total_cents'] else WRONG


def _print_receipt(receipt, party, expected, verdict, exit_to_receipt_s, currency) -> None:
    status = 'NEEDS_REVIEW' if receipt.status == Receipt.NEEDS_REVIEW else 'FINAL'
    print(f'\nreceipt {receipt.receipt_id}  party {party}  {status}  confidence {receipt.confidence:.2f}'
          f'  ({exit_to_receipt_s:.2f} s after exit)  -> {verdict}')
    got = [f'{line.quantity} x {line.sku:<10} {format_cents(line.line_total_cents, currency):>12}'
           for line in receipt.lines]
    want = [f'{line["quantity"]} x {line["sku"]:<10} {format_cents(line["line_total_cents"], currency):>12}'
            for line in (expected or {'lines': []})['lines']]
    print(f'    {"issued":<32} | ground truth')
    for i in range(max(len(got), len(want))):
        left = got[i] if i < len(got) else ''
        right = want[i] if i < len(want) else ''
        print(f'    {left:<32} | {right}')
    total_expected = format_cents(expected['total_cents'], currency) if expected else '?'
    print(f'    {"total " + format_cents(receipt.total_cents, currency):<32} | total {total_expected}')
    for reason in receipt.reasons:
        print(f'    review: {reason.code} {reason.event_id} {reason.detail}')


def _receipt_json(receipt: Receipt) -> dict:
    return {
        'receipt_id': receipt.receipt_id, 'store_id': receipt.store_id,
        'visit_code': receipt.visit_code,
        'entry_stamp_ns': to_ns(receipt.entry_stamp), 'exit_stamp_ns': to_ns(receipt.exit_stamp),
        'status': 'NEEDS_REVIEW' if receipt.status == Receipt.NEEDS_REVIEW else 'FINAL',
        'confidence': round(receipt.confidence, 3),
        'lines': [{'sku': line.sku, 'name': line.name, 'quantity': line.quantity,
                   'unit_price_cents': line.unit_price_cents,
                   'line_total_cents': line.line_total_cents,
                   'confidence': round(line.confidence, 3)} for line in receipt.lines],
        'subtotal_cents': receipt.subtotal_cents, 'tax_cents': receipt.tax_cents,
        'total_cents': receipt.total_cents,
        'reasons': [{'code': r.code, 'event_id': r.event_id, 'detail': r.detail} for r in receipt.reasons],
    }


def _write_receipt(run_dir, receipt, party, expected, verdict, exit_to_receipt_s) -> None:
    document = {'receipt': _receipt_json(receipt), 'party': party, 'ground_truth': expected,
                'verdict': verdict, 'exit_to_receipt_s': round(exit_to_receipt_s, 3)}
    path = run_dir / 'receipts' / f'{receipt.receipt_id}.json'
    path.write_text(json.dumps(document, indent=2) + '\n')


def _percentiles(values: list) -> dict:
    if not values:
        return {'count': 0}
    ordered = sorted(values)
    return {'count': len(values), 'p50': statistics.median(ordered),
            'p99': ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))],
            'max': ordered[-1]}


def _summary(results: dict, expected: dict, cart_latency_ms: list, wall_s: float) -> dict:
    verdicts = {}
    for verdict, _ in results.values():
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
    return {
        'verdicts': verdicts,
        'visits': {party: {'verdict': verdict,
                           'receipt': _receipt_json(receipt) if receipt else None,
                           'ground_truth': expected.get(party)}
                   for party, (verdict, receipt) in results.items()},
        'change_to_cart_update_ms': _percentiles(cart_latency_ms),
        'wall_s': round(wall_s, 2),
    }
