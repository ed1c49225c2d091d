"""A store run through the real nodes: what `jwo demo`, `jwo eval` and `jwo bench` share.

Two kinds of run, one way of watching them:

* ``run_scenario``: the store's node set (store_graph) plays a scenario through the
  simulated sensors;
* ``run_bag``: the processing nodes (processing_graph: fusion and the weight detectors)
  take a bag written by `jwo simbag` (or recorded) as `jwo replay` plays it, at a rate
  or as fast as they keep up.

Either way the Supervisor runs the nodes as separate processes over DDS, and a monitor
node watches the graph like any other subscriber: gate events, weight changes, cart
updates, receipts and review requests, each with the wall time it arrived (the durable
topics with the durable QoS their publishers offer, so nothing is lost to a late
start). Receipts are matched to the parties from what the receipt carries, the way a
scorer outside the system would: its entry gate and entry stamp -> the party that
entered there then, from the ground truth (core.scoring.PartyMatcher). A receipt of no
party, or a second one for a party, is kept in RunResult.unmatched: the run is wrong.
"""
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import rclpy
from jwo.msg import CartUpdate, GateEvent, Receipt, ReviewRequest, WeightChange, WeightReading
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from jwo_nodes.core.scoring import GateEntry, PartyMatcher
from jwo_nodes.core.sim import NS, Timeline
from jwo_nodes.graph import SHELVES_PER_CONTAINER, compose, default_params_dir, processing_graph, store_graph
from jwo_nodes.launcher import START_LEAD_S, Supervisor
from jwo_nodes.bag.format import cdr_header_stamp_ns
from jwo_nodes.readiness_watch import ReadinessWatch
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, EVENT_QOS, REPLAY_INPUT_QOS, StateReporter,
                                  to_ns)

# A graph not ready this long after its start has a problem: the run fails naming it.
READY_TIMEOUT_S = 120.0
# ... plus this much per node: DDS discovery among N processes grows faster than N on
# two cores (2026-12-02: 13 nodes were ready in 5 s, 44 in 94 s).
READY_TIMEOUT_PER_NODE_S = 4.0


def ready_timeout_s(nodes: int) -> float:
    return READY_TIMEOUT_S + READY_TIMEOUT_PER_NODE_S * nodes


class RunMonitor(Node):
    """Listens to the store graph and keeps what it saw, with arrival wall times.

    With ``watch_shelves`` it also takes those shelves' ``weight/raw`` (raw bytes, only
    the header stamp is read) and measures, per cart update, the time from the arrival
    of the sample on which its weight change was decided (``decided_stamp``) to the
    arrival of the update: the sensor-to-cart latency, both ends seen here."""

    # Samples remembered per shelf for that (a few seconds at the fastest board rate).
    SAMPLES_KEPT = 2048

    FQN = '/jwo/run_monitor'

    def __init__(self, store, watch_shelves: frozenset = frozenset()):
        super().__init__('run_monitor', namespace='/jwo')
        self.entries = []          # GateEntry of every ENTRY event
        self.exit_wall = {}        # (gate_id, stamp_ns) of an EXIT event -> wall ns received
        self.changes = []          # (bin_id, start_ns, end_ns, delta_grams) per bin
        # Latencies from when the middleware received each message in this process
        # (MessageInfo received_timestamp), so this loop's own delays do not count.
        self.change_wall = {}      # event id -> wall ns received
        self.cart_latency_ms = []  # weight change received -> cart update received
        self.sensor_to_cart_ms = []  # deciding sample received -> cart update received
        self.receipts = []         # (wall ns received, Receipt)
        self.review_requests = []  # receipt ids of the review requests, in arrival order
        self._decided = {}         # event id -> (shelf id, decided stamp)
        self._sample_wall = {}     # shelf id -> {stamp: wall ns received}
        for gate_id in store.gates:
            self.create_subscription(GateEvent, f'gates/{gate_id}/events', self._on_gate,
                                     DURABLE_EVENT_QOS)
        for shelf_id in store.shelves:
            self.create_subscription(WeightChange, f'shelves/{shelf_id}/weight/changes',
                                     self._on_change, EVENT_QOS)
        for shelf_id in store.shelves:
            if shelf_id in watch_shelves:
                self._sample_wall[shelf_id] = {}
                self.create_subscription(WeightReading, f'shelves/{shelf_id}/weight/raw',
                                         lambda data, info, s=shelf_id: self._on_sample(s, data, info),
                                         REPLAY_INPUT_QOS, raw=True)
        self.create_subscription(CartUpdate, 'cart/updates', self._on_cart, EVENT_QOS)
        self.create_subscription(Receipt, 'receipts', self._on_receipt, DURABLE_EVENT_QOS)
        self.create_subscription(ReviewRequest, 'review/requests',
                                 lambda msg: self.review_requests.append(msg.receipt_id),
                                 DURABLE_EVENT_QOS)
        # The monitor is a node of the graph too: a run starts once it listens.
        self._reporter = StateReporter(self)

    def _on_gate(self, msg: GateEvent) -> None:
        if msg.direction == GateEvent.ENTRY:
            self.entries.append(GateEntry(msg.gate_id, to_ns(msg.header.stamp), msg.visit_code))
        else:
            self.exit_wall.setdefault((msg.gate_id, to_ns(msg.header.stamp)), time.time_ns())

    def _on_sample(self, shelf_id: str, data: bytes, info) -> None:
        seen = self._sample_wall[shelf_id]
        seen[cdr_header_stamp_ns(data)] = info['received_timestamp']
        if len(seen) > self.SAMPLES_KEPT:  # stamps arrive in order: drop the older half
            self._sample_wall[shelf_id] = dict(list(seen.items())[self.SAMPLES_KEPT // 2:])

    def _on_change(self, msg: WeightChange, info) -> None:
        self.change_wall[msg.event_id] = info['received_timestamp']
        self._decided[msg.event_id] = (msg.shelf_id, to_ns(msg.decided_stamp))
        for bin_id, delta in zip(msg.bin_ids, msg.delta_grams):
            self.changes.append((bin_id, to_ns(msg.start_stamp), to_ns(msg.end_stamp), delta))

    def _on_cart(self, msg: CartUpdate, info) -> None:
        # Timed to the first update a change caused (its first look, when the shopper
        # sees it); the joint solve's update that follows is not a second latency.
        now = info['received_timestamp']
        received = self.change_wall.pop(msg.cause_event_id, None)
        if received is not None:
            self.cart_latency_ms.append((now - received) / 1e6)
        shelf_id, decided = self._decided.pop(msg.cause_event_id, (None, None))
        sample = self._sample_wall.get(shelf_id, {}).get(decided)
        if sample is not None:
            self.sensor_to_cart_ms.append((now - sample) / 1e6)

    def _on_receipt(self, msg: Receipt) -> None:
        self.receipts.append((time.time_ns(), msg))


@dataclass
class RunResult:
    receipts: dict = field(default_factory=dict)      # party -> receipt dict
    exit_to_receipt_s: dict = field(default_factory=dict)  # party -> seconds
    unmatched: list = field(default_factory=list)     # UnmatchedReceipt: of no party, or a second one
    review_requests: list = field(default_factory=list)  # receipt ids with a review request
    changes: list = field(default_factory=list)       # (bin_id, end_ns, delta) in scenario time
    cart_latency_ms: list = field(default_factory=list)
    sensor_to_cart_ms: list = field(default_factory=list)
    last_receipt_wall_ns: Optional[int] = None
    wall_s: float = 0.0
    failure: Optional[str] = None


class _Driver:
    """What plays the inputs besides the node set (a replay process); nothing by default."""

    failure: Optional[str] = None

    def poll(self, monitor: RunMonitor, graph: ReadinessWatch) -> None:
        """Called every loop turn while the nodes run."""

    def finished_ns(self) -> Optional[int]:
        """Wall ns when the inputs were all played, None while they are not."""
        return None

    def stop(self) -> None:
        pass


class ScenarioStart(_Driver):
    """Starts scenario time once the graph is ready (ReadinessWatch: every node up, every
    publisher-subscriber pair of the graph matched, the monitor's included): scenario
    time 0 is ``lead_s`` later, signalled to the simulated sensors. Fails naming what
    is missing when the graph is not ready in ready_timeout_s."""

    def __init__(self, lead_s: float = START_LEAD_S):
        self.lead_ns = int(lead_s * NS)
        self.start_ns: Optional[int] = None
        self.log: Callable[[str], None] = lambda line: None

    def poll(self, monitor: RunMonitor, graph: ReadinessWatch) -> None:
        if self.start_ns is not None:
            return
        state = graph.state()
        if state.ready:
            self.start_ns = time.time_ns() + self.lead_ns
            graph.signal_start(self.start_ns)
            self.log(f'[launch] graph ready in {graph.ready_after_s():.1f} s: {len(graph.nodes)} nodes up, '
                     f'every publisher-subscriber pair matched; scenario time 0 in {self.lead_ns / NS:g} s')
        elif graph.ready_after_s() > ready_timeout_s(len(graph.nodes)):
            self.failure = f'the graph was not ready after {graph.ready_after_s():.0f} s: {state.summary()}'


def _watch(specs, store, *, parties: set, matcher: PartyMatcher, time_origin: Callable[[], int],
           log_path: Path, deadline: Callable[[], int], exit_wall: Callable,
           on_receipt: Callable = None, before_stop: Callable = None,
           driver: Optional[_Driver] = None, watch_shelves: frozenset = frozenset(),
           on_turn: Callable = None, supervisor_options: dict = None,
           shelves_per_process: int = SHELVES_PER_CONTAINER) -> RunResult:
    """Runs the node set and watches it until every party has its receipt, the
    deadline (wall ns, asked every turn) passes, or something fails. ``on_turn``
    (supervisor) is called every turn (a chaos test kills nodes from it)."""
    driver = driver or _Driver()
    result = RunResult()
    wall_start = time.monotonic()
    log_file = open(log_path, 'w')
    log_lock = threading.Lock()

    def log(line: str) -> None:
        with log_lock:
            log_file.write(line + '\n')

    driver.log = log
    if not rclpy.ok():
        rclpy.init()
    monitor = RunMonitor(store, watch_shelves=watch_shelves)
    graph = ReadinessWatch([spec.fqn for spec in specs], also=(RunMonitor.FQN,))
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    executor.add_node(graph)
    supervisor = Supervisor(compose(specs, shelves_per_process), log=log, **(supervisor_options or {}))
    handled = 0
    try:
        supervisor.start()
        while set(result.receipts) < parties and time.time_ns() < deadline():
            if supervisor.poll() is not None:
                result.failure = f'the node set stopped: {supervisor.failure}'
                break
            driver.poll(monitor, graph)
            if on_turn:
                on_turn(supervisor)
            if driver.failure:
                result.failure = driver.failure
                break
            executor.spin_once(timeout_sec=0.05)
            while handled < len(monitor.receipts):
                wall_ns, msg = monitor.receipts[handled]
                handled += 1
                receipt = receipt_to_dict(msg)
                party = matcher.match(receipt, monitor.entries)
                if party is None:
                    unmatched = matcher.unmatched[-1]
                    result.unmatched.append(unmatched)
                    log(f'error: receipt {unmatched.receipt_id}: {unmatched.problem}')
                    continue
                result.receipts[party] = receipt
                result.last_receipt_wall_ns = wall_ns
                exited = exit_wall(msg, monitor)
                result.exit_to_receipt_s[party] = (wall_ns - exited) / NS if exited else None
                if on_receipt:
                    on_receipt(party, receipt, result.exit_to_receipt_s[party])
        if before_stop and not result.failure:
            before_stop(result)
    finally:
        driver.stop()
        supervisor.stop()
        for node in (monitor, graph):
            executor.remove_node(node)
            node.destroy_node()
        with log_lock:
            log_file.close()
    result.exit_to_receipt_s = {p: s for p, s in result.exit_to_receipt_s.items() if s is not None}
    result.changes = [(b, end - time_origin(), delta) for b, _, end, delta in monitor.changes]
    result.cart_latency_ms = monitor.cart_latency_ms
    result.review_requests = list(monitor.review_requests)
    result.sensor_to_cart_ms = monitor.sensor_to_cart_ms
    result.wall_s = time.monotonic() - wall_start
    return result


def run_scenario(store, store_path, scenario_path, timeline: Timeline, *, time_scale: float,
                 start_delay_s: float, with_cameras: bool, log_path: Path, grace_s: float,
                 on_receipt: Callable = None, overrides: dict = None,
                 with_uplink: bool = False, before_stop: Callable = None,
                 vision: bool = False, state_dir=None,
                 on_turn: Callable[[Supervisor, Optional[int]], None] = None,
                 supervisor_options: dict = None,
                 shelves_per_process: int = SHELVES_PER_CONTAINER, live_cart_handoff=None,
                 staff_pin_file=None) -> RunResult:
    """Runs the scenario through a fresh node set, started once the graph is ready
    (``start_delay_s`` after: ScenarioStart); returns when every party has its
    receipt, when the grace period after the scenario's end is over, or on failure.
    ``before_stop(result)`` runs while the nodes are still up (e.g. to let the uplink
    deliver); ``on_turn(supervisor, scenario start wall ns or None)`` every turn;
    ``supervisor_options``: keyword arguments of the Supervisor (e.g. ``resolve``);
    ``shelves_per_process``: see graph.compose.
    ``state_dir``: where the nodes keep what survives their restarts (see store_graph);
    ``live_cart_handoff``: with a folder, the live cart runs; ``staff_pin_file``: with
    a file, the staff view (see store_graph)."""
    # sim_start_ns 0: the simulated sensors wait for the start signal.
    specs = store_graph(store_path, params_dir=default_params_dir(), scenario=scenario_path,
                        sim_start_ns=0, time_scale=time_scale, with_cameras=with_cameras,
                        with_uplink=with_uplink, vision=vision, state_dir=state_dir,
                        live_cart_handoff=live_cart_handoff, staff_pin_file=staff_pin_file)
    for spec in specs:
        spec.parameters.update((overrides or {}).get(spec.executable, {}))
    start = ScenarioStart(lead_s=start_delay_s)

    def deadline() -> int:
        if start.start_ns is None:
            return time.time_ns() + NS    # ScenarioStart fails a graph that is never ready
        return start.start_ns + int(timeline.duration_ns / time_scale) + int(grace_s * NS)

    def exit_wall(receipt: Receipt, monitor: RunMonitor) -> int:
        # The exit happens at its scenario time on the wall clock.
        return start.start_ns + (to_ns(receipt.exit_stamp) - start.start_ns) / time_scale

    return _watch(specs, store, parties={p.id for p in timeline.scenario.parties},
                  matcher=PartyMatcher(lambda gate_id, stamp_ns: timeline.party_at_entry(
                      gate_id, stamp_ns - start.start_ns)),
                  time_origin=lambda: start.start_ns or 0, log_path=log_path, deadline=deadline,
                  exit_wall=exit_wall, on_receipt=on_receipt, before_stop=before_stop, driver=start,
                  on_turn=(lambda supervisor: on_turn(supervisor, start.start_ns)) if on_turn else None,
                  supervisor_options=supervisor_options, shelves_per_process=shelves_per_process)


class ReplayProcess(_Driver):
    """`jwo replay BAG` as a child process, started once the processing graph is ready
    (ReadinessWatch) and every topic it plays has as many subscribers as the graph will
    have (``subscribers``: topic -> count, the monitor's own included). Its output goes
    to the run log as ``[replay] ...``."""

    def __init__(self, bag, *, topics: list, subscribers: dict, rate: Optional[float],
                 extra_args=()):
        self.bag = str(bag)
        self.topics = list(topics)
        self.subscribers = dict(subscribers)
        self.rate = rate
        self.extra_args = list(extra_args)
        self.created = time.monotonic()    # the graph is given ready_timeout_s from here
        self.process: Optional[subprocess.Popen] = None
        self.started_ns: Optional[int] = None
        self.playing_since_ns: Optional[int] = None   # when it said it starts publishing
        self.ended_ns: Optional[int] = None
        self.returncode: Optional[int] = None
        self.lines: list = []
        self._reader: Optional[threading.Thread] = None
        self.log: Callable[[str], None] = lambda line: None

    def poll(self, monitor: RunMonitor, graph: ReadinessWatch) -> None:
        if self.process is None:
            missing = [t for t, n in self.subscribers.items() if monitor.count_subscribers(t) < n]
            state = graph.state()
            if not missing and state.ready:
                self._start()
            elif time.monotonic() - self.created > ready_timeout_s(len(graph.nodes)):
                self.failure = (f'the processing nodes did not subscribe to {", ".join(missing[:3])}'
                                f'{" ..." if len(missing) > 3 else ""} in time ({state.summary()})' if missing
                                else f'the processing graph was not ready in time: {state.summary()}')
            return
        if self.returncode is None and self.process.poll() is not None:
            self._reader.join(2.0)
            self.returncode = self.process.returncode
            self.ended_ns = time.time_ns()
            if self.returncode != 0:
                last = next((line for line in reversed(self.lines) if line.startswith('error')),
                            self.lines[-1] if self.lines else '')
                self.failure = f'jwo replay exited with status {self.returncode}: {last}'

    def _start(self) -> None:
        speed = ['--max'] if self.rate is None else ['--rate', repr(float(self.rate))]
        argv = [sys.executable, '-m', 'jwo_nodes.cli', 'replay', self.bag, *speed,
                '--topics', *self.topics, '--wait-subscribers', '30', '--clock-hz', '0',
                '--subscribers', *(f'{t}={n}' for t, n in self.subscribers.items()),
                *self.extra_args]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.started_ns = time.time_ns()
        self._reader = threading.Thread(target=self._pump, daemon=True, name='jwo-replay-output')
        self._reader.start()

    def _pump(self) -> None:
        for raw in iter(self.process.stdout.readline, b''):
            line = raw.decode('utf-8', errors='replace').rstrip()
            if self.playing_since_ns is None and line.startswith('replaying '):
                self.playing_since_ns = time.time_ns()
            self.lines.append(line)
            self.log(f'[replay] {line}')
        self.process.stdout.close()

    def finished_ns(self) -> Optional[int]:
        return self.ended_ns if self.returncode == 0 else None

    def played(self) -> Optional[str]:
        """The replayer's closing line ('replay done: N messages in T s ...')."""
        return next((line for line in reversed(self.lines) if line.startswith('replay ')), None)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT: the replayer stops cleanly
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(2.0)


def run_bag(store, store_path, bag, truth, *, rate: Optional[float], log_path: Path,
            grace_s: float, on_receipt: Callable = None, overrides: dict = None,
            max_wall_s: Optional[float] = None, duration_s: Optional[float] = None,
            watch_shelves: frozenset = frozenset(), shelves_per_process: int = SHELVES_PER_CONTAINER,
            on_turn: Callable = None) -> tuple:
    """Plays a simulator bag (jwo_nodes.simbag) into a fresh set of processing nodes
    with `jwo replay` (``rate`` times real time, None: as fast as they keep up; only the
    first ``duration_s`` of bag time when given); returns (RunResult, ReplayProcess)
    when every party has its receipt, ``grace_s`` after the replay ended, or on
    failure. ``truth``: the bag's GroundTruthRecord; ``watch_shelves``: see
    RunMonitor; ``on_turn(supervisor, replay)`` every turn of the watch."""
    from jwo_nodes.simbag import GROUND_TRUTH_TOPIC, POSITIONS_TOPIC, gate_topic, raw_topic
    specs = processing_graph(store_path, params_dir=default_params_dir(),
                             rate_hz=truth.scenario['weight_rate_hz'])
    for spec in specs:
        spec.parameters.update((overrides or {}).get(spec.executable, {}))
    # Inputs only: the ground truth is for the scorer.
    subscribers = {raw_topic(s): 2 if s in watch_shelves else 1 for s in store.shelves}
    subscribers[POSITIONS_TOPIC] = 1
    subscribers.update({gate_topic(g): 2 for g in store.gates})   # fusion and the monitor
    with_topics = [t for t in subscribers if t != GROUND_TRUTH_TOPIC]
    replay = ReplayProcess(bag, topics=with_topics,
                           subscribers=subscribers, rate=rate,
                           extra_args=[] if duration_s is None else ['--duration', repr(duration_s)])
    bag_s = truth.scenario['duration_ns'] / NS
    if duration_s is not None:
        bag_s = min(bag_s, duration_s)
    cap = time.time_ns() + int((max_wall_s or (120 + (bag_s / rate if rate else bag_s * 4))) * NS)

    def deadline() -> int:
        finished = replay.finished_ns()
        return min(cap, finished + int(grace_s * NS)) if finished else cap

    def exit_wall(receipt: Receipt, monitor: RunMonitor) -> Optional[int]:
        # When the monitor saw the exit event that closed the visit (the replay's time).
        stamp = to_ns(receipt.exit_stamp)
        return next((wall for (gate_id, s), wall in monitor.exit_wall.items() if s == stamp), None)

    result = _watch(specs, store, parties=set(truth.parties),
                    matcher=PartyMatcher(truth.party_at_entry, truth.party_of_visit),
                    time_origin=lambda: truth.epoch_ns, log_path=log_path, deadline=deadline,
                    exit_wall=exit_wall, on_receipt=on_receipt, driver=replay,
                    watch_shelves=watch_shelves, shelves_per_process=shelves_per_process,
                    on_turn=(lambda supervisor: on_turn(supervisor, replay)) if on_turn else None)
    if result.failure is None and replay.process is None:
        result.failure = 'the replay never started'
    return result, replay


def receipt_to_dict(receipt: Receipt) -> dict:
    return {
        'receipt_id': receipt.receipt_id, 'store_id': receipt.store_id,
        'visit_code': receipt.visit_code,
        'entry_gate_id': receipt.entry_gate_id,
        'entry_stamp_ns': to_ns(receipt.entry_stamp), 'exit_stamp_ns': to_ns(receipt.exit_stamp),
        'status': 'NEEDS_REVIEW' if receipt.status == Receipt.NEEDS_REVIEW else 'FINAL',
        'confidence': round(float(receipt.confidence), 3),
        'lines': [{'sku': line.sku, 'name': line.name, 'quantity': line.quantity,
                   'unit_price_cents': line.unit_price_cents,
                   'line_total_cents': line.line_total_cents,
                   'grams': line.grams if line.sold_by_weight else 0,
                   'age_restricted': line.age_restricted, 'id_verified': line.id_verified,
                   'confidence': round(float(line.confidence), 3)} for line in receipt.lines],
        'savings': [{'promotion_id': s.promotion_id, 'name': s.name, 'skus': list(s.skus), 'cents': s.cents}
                    for s in receipt.savings],
        'savings_cents': receipt.savings_cents,
        'subtotal_cents': receipt.subtotal_cents, 'tax_cents': receipt.tax_cents,
        'total_cents': receipt.total_cents,
        'reasons': [{'code': r.code, 'event_id': r.event_id, 'detail': r.detail} for r in receipt.reasons],
    }
