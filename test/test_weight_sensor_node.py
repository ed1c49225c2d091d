"""weight_sensor_node as a process: an HX711 board on a pseudo-terminal (with garbage,
NaN, bad checksums, lost and out-of-order lines), and the simulated shelf of the
demo scenario, and a restart with the levels kept; checked from a subscriber in this
process."""
import json
import os
import re
import threading
import time
import tty

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from jwo.msg import ShelfStatus, WeightChange, WeightReading
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from jwo_nodes.core import hx711
from jwo_nodes.ros_common import EVENT_QOS, SENSOR_QOS, to_ns

NS = 1_000_000_000


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Listener:
    """Subscribes to one shelf's topics and /diagnostics, spinning in a thread."""

    def __init__(self, shelf_id: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node('weight_test_listener', context=self.context)
        prefix = f'/jwo/shelves/{shelf_id}/weight'
        self.topic = f'{prefix}/changes'
        self.changes, self.status, self.raw, self.diagnostics = [], [], [], []
        self.raw_arrivals = []                  # wall-clock ns at which each raw reading came
        subscribe = self.node.create_subscription
        subscribe(WeightChange, f'{prefix}/changes', self.changes.append, EVENT_QOS)
        subscribe(ShelfStatus, f'{prefix}/status', self.status.append, EVENT_QOS)
        subscribe(WeightReading, f'{prefix}/raw', self._on_raw, SENSOR_QOS)
        subscribe(DiagnosticArray, '/diagnostics', self.diagnostics.append, EVENT_QOS)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _on_raw(self, reading: WeightReading):
        self.raw_arrivals.append(time.time_ns())
        self.raw.append(reading)

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                return

    def connected(self) -> bool:
        return all(self.node.count_publishers(f'{self.topic.rsplit("/", 1)[0]}/{name}') > 0
                   for name in ('changes', 'status', 'raw'))

    def counters(self, hardware_id: str) -> dict:
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.hardware_id == hardware_id:
                    return {kv.key: int(kv.value) for kv in status.values}
        return {}

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(2)


@pytest.fixture
def listener_for():
    made = []

    def make(shelf_id):
        made.append(Listener(shelf_id))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def node_args(repo, shelf_id, *extra):
    return ('-r', f'__ns:=/jwo/shelves/{shelf_id}',
            '--params-file', str(repo / 'config/params/weight_sensor_node.yaml'),
            '-p', f'store_config:={repo / "config/stores/demo.yaml"}',
            '-p', f'shelf_id:={shelf_id}', *extra)


# -- an HX711 board on a serial port ------------------------------------------------------

OFFSETS = [8000.0, -5000.0, 100.0]
SCALES = [2.0, 2.0, 4.0]


class Board:
    """Writes HX711 lines to the master side of a pseudo-terminal at a steady rate."""

    def __init__(self, rate_hz: int):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)          # no echo, no line editing before the node opens it
        self.path = os.ttyname(self.slave)
        self.rate_hz = rate_hz
        self.calibration = hx711.Calibration.per_bin(3, OFFSETS, SCALES)
        self.seq = 0
        self.rng = np.random.default_rng(3)
        self.next_at = time.monotonic()

    def write(self, data: bytes):
        os.write(self.master, data)

    def sample(self, grams, skip: int = 0):
        """One good line (noise 1 g); ``skip`` line numbers are lost before it."""
        self.seq = (self.seq + skip) % hx711.SEQ_MODULO
        noisy = [g + float(self.rng.normal(0, 1.0)) for g in grams]
        self.write(hx711.encode(self.seq, self.calibration.to_raw(noisy)))
        self.seq = (self.seq + 1) % hx711.SEQ_MODULO
        self.next_at += 1.0 / self.rate_hz
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def hold(self, grams, seconds: float):
        for _ in range(int(seconds * self.rate_hz)):
            self.sample(grams)

    def hold_until(self, grams, predicate, seconds: float) -> bool:
        """Holds a level until predicate() holds, at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while not predicate() and time.monotonic() < deadline:
            self.hold(grams, 0.1)
        return bool(predicate())

    def ramp(self, start, end, seconds: float):
        steps = max(1, int(seconds * self.rate_hz))
        for k in range(1, steps + 1):
            self.sample([a + (b - a) * k / steps for a, b in zip(start, end)])

    def close(self):
        os.close(self.master)
        os.close(self.slave)


def with_checksum(payload: bytes) -> bytes:
    return b'$%s*%02X\r\n' % (payload, hx711.checksum(payload))


def test_serial_board_with_bad_lines(repo, start_node, listener_for):
    rate = 40
    board = Board(rate)
    listener = listener_for('S1')
    node = start_node('weight_sensor_node', *node_args(
        repo, 'S1', '-p', f'source:={board.path}', '-p', f'rate_hz:={rate}',
        '-p', f'calibration_offsets:={OFFSETS}', '-p', f'calibration_scales:={SCALES}'))
    try:
        assert wait_for(listener.connected, 15), node.log()
        level = [5000.0, 3000.0, 9000.0]
        board.hold(level, 2.0)                      # the first level: INIT, no change
        # Seeing the node's publishers is not enough: until its writers have matched our
        # readers too (discovery may finish on our side first, on a loaded machine), a
        # change it sends is lost. Its status heard, they have.
        assert board.hold_until(level, lambda: listener.status, 15), node.log()
        # Bad input between good lines.
        board.write(b'HX711 board v1.2 booting...\r\n')               # malformed
        board.hold(level, 0.1)
        board.write(with_checksum(b'W,%d,nan,1,2' % board.seq))       # NaN, valid checksum
        board.hold(level, 0.1)
        line = bytearray(hx711.encode(board.seq, board.calibration.to_raw(level)))
        line[4] = ord('9') if line[4] != ord('9') else ord('8')
        board.write(bytes(line))                                      # bad checksum
        board.hold(level, 0.1)
        board.write(hx711.encode(board.seq, [1, 2]))                  # two readings
        board.write(b'\x00\xff' * 300 + b'\n')                        # overlong garbage
        board.write(hx711.encode((board.seq - 5) % hx711.SEQ_MODULO, [1, 2, 3]))  # behind
        board.sample(level, skip=3)                                   # three lines lost
        board.write(hx711.encode((board.seq - 1) % hx711.SEQ_MODULO,
                                 board.calibration.to_raw(level)))    # duplicate
        board.hold(level, 0.5)
        # A cola taken from B1, then at once water put on B2 and a gum taken from B3.
        taken = [level[0] - 350.0, level[1], level[2]]
        board.ramp(level, taken, 0.3)
        board.hold(taken, 1.5)
        both = [taken[0], taken[1] + 520.0, taken[2] - 32.0]
        board.ramp(taken, both, 0.3)
        board.hold(both, 2.5)

        assert wait_for(lambda: len(listener.changes) >= 3, 5), node.log()
        assert node.process.poll() is None, node.log()
        changes = sorted(listener.changes, key=lambda c: (to_ns(c.end_stamp), c.bin_ids[0]))
        assert [(c.bin_ids[0], round(c.delta_grams[0] / 2) * 2) for c in changes] in (
            [('S1-B1', -350), ('S1-B2', 520), ('S1-B3', -32)],
            [('S1-B1', -350), ('S1-B3', -32), ('S1-B2', 520)])
        for change in changes:
            assert abs(change.delta_grams[0] - round(change.delta_grams[0] / 2) * 2) <= 1.5
            assert re.fullmatch(r'S1/\d+', change.event_id)
            assert change.shelf_id == 'S1' and change.header.frame_id == 'S1'
            end = to_ns(change.end_stamp)
            assert to_ns(change.start_stamp) <= end == to_ns(change.header.stamp)
            assert 0.3 < change.noise_grams < 3.0
        ids = [int(c.event_id.split('/')[1]) for c in listener.changes]
        assert ids == list(range(ids[0], ids[0] + 3))
        # Stamps are the node clock at receipt.
        assert abs(to_ns(changes[-1].end_stamp) - time.time_ns()) < 10 * NS

        # The heartbeat has moved past every change and nothing is pending.
        last_end = max(to_ns(c.end_stamp) for c in changes)
        assert wait_for(lambda: to_ns(listener.status[-1].processed_until) >= last_end
                        and not listener.status[-1].changing, 3)
        # Raw readings are calibrated grams.
        assert listener.raw and listener.raw[-1].bin_ids == ['S1-B1', 'S1-B2', 'S1-B3']
        assert np.allclose(listener.raw[-1].bin_grams, both, atol=5.0)

        # Every kind of bad input was counted on /diagnostics.
        def counted():
            c = listener.counters('shelf/S1')
            return (c.get('malformed_reading', 0) >= 3 and c.get('bad_checksum', 0) >= 1
                    and c.get('wrong_bin_count', 0) >= 1 and c.get('out_of_order', 0) >= 1
                    and c.get('duplicate_line', 0) >= 1 and c.get('dropped_lines', 0) == 3
                    and c.get('changes', 0) == 3)
        assert wait_for(counted, 3), listener.counters('shelf/S1')
        status = [s for a in listener.diagnostics for s in a.status if s.hardware_id == 'shelf/S1']
        assert status[-1].level == status[-1].WARN
        assert 'malformed_reading: ' in node.log()
        assert node.process.poll() is None
    finally:
        assert node.stop() == 0, node.log()
        board.close()


# -- the simulated shelf ---------------------------------------------------------------------

def test_simulated_shelf_of_the_demo_scenario(repo, start_node, listener_for):
    sim = pytest.importorskip('jwo_nodes.core.sim')
    from jwo_nodes.core.config import load_store_config
    store = load_store_config(repo / 'config/stores/demo.yaml')
    scenario = repo / 'config/scenarios/demo.yaml'
    timeline = sim.Timeline(sim.load_scenario(scenario, store), store)
    truth = sorted((e for e in timeline.weight_events if e.shelf_id == 'S2'),
                   key=lambda e: (e.end_ns, e.bin_id))
    assert len(truth) >= 3
    scale = 10.0
    listener = listener_for('S2')
    start = time.time_ns() + 4 * NS
    node = start_node('weight_sensor_node', *node_args(
        repo, 'S2', '-p', 'source:=sim', '-p', f'scenario:={scenario}',
        '-p', f'sim_start_ns:={start}', '-p', f'time_scale:={scale}'))
    try:
        assert wait_for(listener.connected, 15), node.log()
        assert time.time_ns() < start, 'the node took too long to start'
        end_wall = start + int((truth[-1].end_ns + 3 * NS) / scale)
        assert wait_for(lambda: time.time_ns() > end_wall and len(listener.changes) >= len(truth),
                        (end_wall - time.time_ns()) / NS + 5), node.log()
        changes = sorted(listener.changes, key=lambda c: (to_ns(c.end_stamp), c.bin_ids[0]))
        assert [c.event_id for c in listener.changes] == [f'S2/{k + 1}' for k in range(len(truth))]
        for change, event in zip(changes, truth):
            assert change.bin_ids == [event.bin_id]
            assert abs(change.delta_grams[0] - event.delta_grams) < 5.0
            # Stamps are scenario time from sim_start_ns.
            assert event.start_ns - NS // 2 <= to_ns(change.start_stamp) - start <= event.end_ns
            assert event.ramp_start_ns <= to_ns(change.end_stamp) - start <= event.end_ns + 2 * NS
        # Samples are stamped on the rate's grid, and the heartbeat follows them.
        stamps = [to_ns(r.header.stamp) - start for r in listener.raw]
        assert all(s % (NS // 50) == 0 for s in stamps)
        # Never ahead of time: a sample is published once the scaled clock reaches its stamp.
        assert all(arrival >= start + stamp / scale
                   for stamp, arrival in zip(stamps, listener.raw_arrivals))
        assert to_ns(listener.status[-1].processed_until) - start > truth[-1].end_ns
        assert node.process.poll() is None
    finally:
        assert node.stop() == 0, node.log()


def test_unknown_shelf_does_not_start(repo, start_node):
    node = start_node('weight_sensor_node', *node_args(repo, 'S9', '-p', 'source:=sim'))
    assert node.process.wait(15) == 2
    log = node.log()
    assert "no shelf 'S9'" in log and 'Traceback' not in log


# -- a restart: the levels kept in the state folder -------------------------------------------

def test_a_take_while_the_node_was_down_is_reported_after_its_restart(repo, start_node,
                                                                      listener_for, tmp_path):
    rate = 40
    board = Board(rate)
    listener = listener_for('S1')
    state = tmp_path / 'state'
    args = node_args(repo, 'S1', '-p', f'source:={board.path}', '-p', f'rate_hz:={rate}',
                     '-p', f'calibration_offsets:={OFFSETS}',
                     '-p', f'calibration_scales:={SCALES}', '-p', f'state_dir:={state}')
    saved = state / 'shelf-S1.json'
    level = [5000.0, 3000.0, 9000.0]
    node = start_node('weight_sensor_node', *args)
    try:
        assert wait_for(listener.connected, 15), node.log()
        board.hold(level, 2.0)                      # the first levels: saved, no change
        assert wait_for(lambda: saved.exists() and None not in json.loads(
            saved.read_text())['levels'], 3), node.log()
    finally:
        assert node.stop() == 0, node.log()
    assert saved.stat().st_mode & 0o777 == 0o600
    assert not listener.changes

    # While the node is down a cola leaves B1; the board reads the new level from the
    # restart on.
    assert wait_for(lambda: not listener.connected(), 5)
    restarted_ns = time.time_ns()
    node = start_node('weight_sensor_node', *args)
    try:
        assert wait_for(listener.connected, 15), node.log()
        taken = [level[0] - 350.0, level[1], level[2]]
        board.next_at = time.monotonic()
        board.hold(taken, 3.0)
        assert wait_for(lambda: listener.changes, 3), node.log()
        (change,) = listener.changes
        assert (change.bin_ids, change.restart) == (['S1-B1'], WeightChange.RESTART_SEEN)
        assert abs(change.delta_grams[0] + 350.0) < 3.0
        # Stamped when the restarted node saw it: its first settled sample.
        assert to_ns(change.start_stamp) == to_ns(change.end_stamp) > restarted_ns
        assert 'seeded with the levels saved' in node.log()
        assert wait_for(lambda: abs(json.loads(saved.read_text())['levels'][0]
                                    - taken[0]) < 3.0, 3)
    finally:
        assert node.stop() == 0, node.log()
        board.close()


# -- replayed readings (source 'topic') ---------------------------------------------------

@pytest.fixture
def replayed_shelf(repo):
    """Shelf S1 of the demo store reading its topic, in this process (not spun), and a
    publisher of its readings: (context, node, publisher)."""
    from rclpy.parameter import Parameter

    from jwo_nodes.nodes.weight_sensor_node import WeightSensorNode
    from jwo_nodes.ros_common import REPLAY_INPUT_QOS
    context = rclpy.Context()
    rclpy.init(context=context)
    node = WeightSensorNode(context=context, namespace='/jwo/shelves/S1', parameter_overrides=[
        Parameter('store_config', value=str(repo / 'config/stores/demo.yaml')),
        Parameter('shelf_id', value='S1'), Parameter('source', value='topic'),
        Parameter('rate_hz', value=50)])
    feeder = Node('feeder', context=context)
    publisher = feeder.create_publisher(WeightReading, '/jwo/shelves/S1/weight/raw', REPLAY_INPUT_QOS)
    assert wait_for(lambda: publisher.get_subscription_count() == 1, 10)
    yield context, node, publisher
    feeder.destroy_node()
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_replayed_readings_are_batched_at_rest_and_taken_one_by_one_while_a_bin_changes(replayed_shelf):
    """The node in this process, readings published to it one at a time. At rest the
    executor does not spin its input (the readings wait for the batch timer); from the
    moment a bin leaves its level until the change goes out it does, so the change is
    published on the reading that settles it."""
    from jwo_nodes.ros_common import to_stamp
    context, node, publisher = replayed_shelf
    executor = SingleThreadedExecutor(context=context)
    try:
        executor.add_node(node)
        changes = []
        node.change_pub.publish = changes.append
        followed = []     # per reading: was the input spun when it was handled
        grams = [500.0, 800.0, 1000.0]
        decided = None                             # the reading the change went out on
        for k in range(250):                       # 1 s still, a take, still until it is out
            if decided is not None and k == decided + 5:
                break
            if k == 50:
                grams[0] -= 350.0
            msg = WeightReading(shelf_id='S1', bin_ids=node.bin_ids,
                                bin_grams=[g + 0.3 * np.sin(k + i) for i, g in enumerate(grams)])
            msg.header.stamp = to_stamp(NS + k * NS // 50)
            publisher.publish(msg)
            deadline = time.monotonic() + 5
            while node._last_stamp != NS + k * NS // 50 and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.01)
            assert node._last_stamp == NS + k * NS // 50
            followed.append(node._input_node in executor.get_nodes())
            if changes and decided is None:
                decided = k
        assert len(changes) == 1 and round(changes[0].delta_grams[0]) == -350
        assert to_ns(changes[0].decided_stamp) == NS + decided * NS // 50
        assert not any(followed[:50]) and not any(followed[decided:])
        assert all(followed[55:decided])
    finally:
        executor.shutdown()


def test_replayed_readings_that_are_not_this_shelfs_are_counted_and_dropped(replayed_shelf):
    """Bytes that are no WeightReading, another shelf's reading and one with a value
    short are counted (malformed_reading, wrong_bin_count) and dropped; the shelf's
    own readings around them are taken."""
    from rclpy.serialization import serialize_message

    from jwo_nodes.ros_common import to_stamp
    _, node, publisher = replayed_shelf

    def reading(k, shelf_id='S1', grams=(500.0, 800.0, 1000.0)):
        msg = WeightReading(shelf_id=shelf_id, bin_ids=node.bin_ids, bin_grams=list(grams))
        msg.header.stamp = to_stamp(NS + k * NS // 50)
        return serialize_message(msg)

    for data in (reading(0), serialize_message(WeightReading())[:9], reading(1, shelf_id='S2'),
                 reading(2, grams=(500.0, 800.0)), reading(3)):
        publisher.publish(data)
    assert wait_for(lambda: node._drain_topic() or node.counters.values['samples'] == 2, 10)
    assert node._last_stamp == NS + 3 * NS // 50
    assert node.counters.values['malformed_reading'] == 2
    assert node.counters.values['wrong_bin_count'] == 1
