"""One simulated store run through the real nodes: what `jwo demo` and `jwo eval` share.

Starts the store's node set with the Supervisor (separate processes over DDS) playing
a scenario, and watches the graph from a monitor node like any other subscriber:
gate events, weight changes, cart updates and receipts, each with the wall time it
arrived. Receipts are matched to the scenario's parties through the entry events
(gate and stamp), the way a scorer outside the system would.
"""
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import rclpy
from jwo_msgs.msg import CartUpdate, GateEvent, Receipt, WeightChange
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from jwo_nodes.core.sim import NS, SimClock, Timeline
from jwo_nodes.graph import default_params_dir, store_graph
from jwo_nodes.launcher import Supervisor
from jwo_nodes.ros_common import EVENT_QOS, to_ns


def receipt_to_dict(receipt: Receipt) -> dict:
    return {
        'receipt_id': receipt.receipt_id, 'store_id': receipt.store_id,
        'visit_code': receipt.visit_code,
        'entry_stamp_ns': to_ns(receipt.entry_stamp), 'exit_stamp_ns': to_ns(receipt.exit_stamp),
        'status': 'NEEDS_REVIEW' if receipt.status == Receipt.NEEDS_REVIEW else 'FINAL',
        'confidence': round(float(receipt.confidence), 3),
        'lines': [{'sku': line.sku, 'name': line.name, 'quantity': line.quantity,
                   'unit_price_cents': line.unit_price_cents,
                   'line_total_cents': line.line_total_cents,
                   'confidence': round(float(line.confidence), 3)} for line in receipt.lines],
        'subtotal_cents': receipt.subtotal_cents, 'tax_cents': receipt.tax_cents,
        'total_cents': receipt.total_cents,
        'reasons': [{'code': r.code, 'event_id': r.event_id, 'detail': r.detail} for r in receipt.reasons],
    }


class RunMonitor(Node):
    """Listens to the store graph and keeps what it saw, with arrival wall times."""

    def __init__(self, store):
        super().__init__('run_monitor', namespace='/jwo')
        self.entries = []          # (gate_id, stamp_ns, visit_code)
        self.changes = []          # (bin_id, start_ns, end_ns, delta_grams) per bin
        self.change_wall = {}      # event id -> wall ns received
        self.cart_latency_ms = []  # weight change received -> cart update received
        self.receipts = []         # (wall ns received, Receipt)
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
        for bin_id, delta in zip(msg.bin_ids, msg.delta_grams):
            self.changes.append((bin_id, to_ns(msg.start_stamp), to_ns(msg.end_stamp), delta))

    def _on_cart(self, msg: CartUpdate) -> None:
        received = self.change_wall.get(msg.cause_event_id)
        if received is not None:
            self.cart_latency_ms.append((time.time_ns() - received) / 1e6)

    def _on_receipt(self, msg: Receipt) -> None:
        self.receipts.append((time.time_ns(), msg))


@dataclass
class RunResult:
    receipts: dict = field(default_factory=dict)      # party -> receipt dict
    exit_to_receipt_s: dict = field(default_factory=dict)  # party -> seconds
    unmatched: list = field(default_factory=list)     # receipts of no known party
    changes: list = field(default_factory=list)       # (bin_id, end_ns, delta) in scenario time
    cart_latency_ms: list = field(default_factory=list)
    wall_s: float = 0.0
    failure: Optional[str] = None


def run_scenario(store, store_path, scenario_path, timeline: Timeline, *, time_scale: float,
                 start_delay_s: float, with_cameras: bool, log_path: Path, grace_s: float,
                 on_receipt: Callable = None, overrides: dict = None,
                 with_uplink: bool = False, before_stop: Callable = None) -> RunResult:
    """Runs the scenario through a fresh node set; returns when every party has its
    receipt, when the grace period after the scenario's end is over, or on failure.
    ``before_stop(result)`` runs while the nodes are still up (e.g. to let the uplink
    deliver)."""
    clock = SimClock(time.time_ns() + int(start_delay_s * NS), time_scale)
    specs = store_graph(store_path, params_dir=default_params_dir(), scenario=scenario_path,
                        sim_start_ns=clock.start_ns, time_scale=time_scale, with_cameras=with_cameras,
                        with_uplink=with_uplink)
    for spec in specs:
        spec.parameters.update((overrides or {}).get(spec.executable, {}))
    parties = {p.id for p in timeline.scenario.parties}
    result = RunResult()
    wall_start = time.monotonic()
    log_file = open(log_path, 'w')

    def log(line: str) -> None:
        log_file.write(line + '\n')

    if not rclpy.ok():
        rclpy.init()
    monitor = RunMonitor(store)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    supervisor = Supervisor(specs, log=log)
    deadline = clock.start_ns + int(timeline.duration_ns / time_scale) + int(grace_s * NS)
    handled = 0
    try:
        supervisor.start()
        while set(result.receipts) < parties and time.time_ns() < deadline:
            if supervisor.poll() is not None:
                result.failure = f'the node set stopped: {supervisor.failure}'
                break
            executor.spin_once(timeout_sec=0.05)
            while handled < len(monitor.receipts):
                wall_ns, msg = monitor.receipts[handled]
                handled += 1
                receipt = receipt_to_dict(msg)
                party = _party_of(msg.visit_code, monitor.entries, timeline, clock)
                exit_wall = clock.start_ns + (to_ns(msg.exit_stamp) - clock.start_ns) / time_scale
                if party is None or party in result.receipts:
                    result.unmatched.append(receipt)
                    continue
                result.receipts[party] = receipt
                result.exit_to_receipt_s[party] = (wall_ns - exit_wall) / NS
                if on_receipt:
                    on_receipt(party, receipt, result.exit_to_receipt_s[party])
        if before_stop and not result.failure:
            before_stop(result)
    finally:
        supervisor.stop()
        executor.remove_node(monitor)
        monitor.destroy_node()
        log_file.close()
    result.changes = [(b, end - clock.start_ns, delta) for b, _, end, delta in monitor.changes]
    result.cart_latency_ms = monitor.cart_latency_ms
    result.wall_s = time.monotonic() - wall_start
    return result


def _party_of(visit_code: str, entries: list, timeline: Timeline, clock: SimClock):
    for gate_id, stamp_ns, code in entries:
        if code == visit_code:
            return timeline.party_at_entry(gate_id, stamp_ns - clock.start_ns)
    return None
