"""`jwo record` and `jwo replay` as real processes on an isolated ROS graph: what the
test publishes is recorded byte for byte (header stamp as publish time), and a --max
replay delivers every recorded message, in order and unchanged, with /clock; broken
bags and uninstalled types end the replay with one error line and status 1."""
import os
import signal
import subprocess
import threading
import time

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rclpy.serialization import deserialize_message, serialize_message

from builtin_interfaces.msg import Time
from jwo.msg import CartLine, GateEvent, Receipt, WeightReading
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String

from conftest import BIN, wait_until
from jwo_nodes.bag.format import BagReader, BagWriter
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, EVENT_QOS, LATCHED_QOS

GATES = '/jwo/gates/g1/events'
RECEIPTS = '/jwo/receipts'
RAW = '/jwo/shelves/s1/weight/raw'
LAYOUT = '/jwo/layout'
N = 60
RELIABLE_DEEP = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.VOLATILE)


def jwo(*args, log):
    return subprocess.Popen([str(BIN / 'jwo'), *args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(process, timeout):
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


class Graph:
    """rclpy in the test process, on its own context, spun in a background thread."""

    def __init__(self):
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('record_replay_test', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self.context.ok():
                    raise

    def close(self):
        if not self.context.ok():
            return
        rclpy.shutdown(context=self.context)
        self.thread.join(5)
        self.node.destroy_node()


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def messages():
    """(topic, message) in publishing order: interleaved topics, distinct contents."""
    out = []
    for i in range(N):
        event = GateEvent(event_id=f'g1/{i}', gate_id='g1', direction=i % 2,
                          visit_code=f'v{i:03d}', credential_kind=2, group_size=1)
        event.header.stamp = Time(sec=5000 + i, nanosec=i)
        out.append((GATES, event))
        reading = WeightReading(shelf_id='s1', bin_ids=['a', 'b', 'c'],
                                bin_grams=[100.0 + i, 0.5 * i, -1.0])
        reading.header.stamp = Time(sec=6000 + i)
        out.append((RAW, reading))
        if i % 3 == 0:
            out.append((RECEIPTS, Receipt(
                receipt_id=f'r{i}', store_id='demo', visit_code=f'v{i:03d}',
                lines=[CartLine(sku=f'sku{j}', quantity=j + 1, unit_price_cents=99)
                       for j in range(i % 4)], total_cents=99 * i)))
    return out


def test_record_then_replay_max(graph, tmp_path, request):
    bag_dir = tmp_path / 'bag1'
    node = graph.node
    publishers = {
        GATES: node.create_publisher(GateEvent, GATES, DURABLE_EVENT_QOS),
        RECEIPTS: node.create_publisher(Receipt, RECEIPTS, EVENT_QOS),
        RAW: node.create_publisher(WeightReading, RAW, qos_profile_sensor_data),
        LAYOUT: node.create_publisher(String, LAYOUT, LATCHED_QOS),
    }
    publishers[LAYOUT].publish(String(data='layout v1'))  # latched: recorded on subscription
    with open(tmp_path / 'record.log', 'w') as log:
        recorder = jwo('record', '-o', str(bag_dir), '--all', log=log)
        try:
            assert wait_until(lambda: all(p.get_subscription_count() for p in publishers.values()),
                              timeout=20), (tmp_path / 'record.log').read_text()
            time.sleep(1.0)  # our side matched; let the recorder's side match us too
            sent = messages()
            for topic, msg in sent:
                publishers[topic].publish(msg)
                time.sleep(0.002)
            time.sleep(1.5)  # > 1 s: at least one progress line
        finally:
            recorder.send_signal(signal.SIGINT)
            code = finish(recorder, 15)
    output = (tmp_path / 'record.log').read_text()
    assert code == 0, output
    assert 'recording' in output and f'into {bag_dir}' in output
    assert sorted(p.name for p in bag_dir.iterdir()) == ['bag1_0.mcap', 'metadata.yaml']

    with BagReader(bag_dir) as reader:
        assert set(reader.topics) == {GATES, RECEIPTS, RAW, LAYOUT}  # no /rosout etc.
        assert reader.topics[GATES].offered_qos_profiles[0]['reliability'] == 'reliable'
        assert reader.topics[RAW].offered_qos_profiles[0]['reliability'] == 'best_effort'
        assert reader.topics[LAYOUT].offered_qos_profiles[0]['durability'] == 'transient_local'
        recorded = {topic: [] for topic in reader.topics}
        for m in reader.messages():
            recorded[m.topic].append(m)
    # The recorded bytes are the wire form (CDR padded to 4 bytes): compare contents.
    for topic, type_ in ((GATES, GateEvent), (RECEIPTS, Receipt)):  # reliable: all, in order
        assert [deserialize_message(m.data, type_) for m in recorded[topic]] == [
            msg for t, msg in sent if t == topic]
    raw = [msg for t, msg in sent if t == RAW]
    got_raw = [deserialize_message(m.data, WeightReading) for m in recorded[RAW]]
    assert len(got_raw) >= 0.9 * len(raw)  # best effort: allowed to lose a few, not to reorder
    assert got_raw == [msg for msg in raw if msg in got_raw]
    assert [deserialize_message(m.data, String) for m in recorded[LAYOUT]] == [
        String(data='layout v1')]
    gates = recorded[GATES]
    assert [m.publish_time for m in gates] == [(5000 + i) * 10**9 + i for i in range(N)]
    assert all(abs(m.log_time - time.time_ns()) < 120 * 10**9 for m in gates)  # receive time
    assert [m.log_time for m in gates] == sorted(m.log_time for m in gates)
    graph.close()  # the recording publishers go away (the latched one would answer too)

    # --- replay as fast as possible while this process listens (raw: compare bytes)
    graph = Graph()
    request.addfinalizer(graph.close)
    node = graph.node
    received = {topic: [] for topic in recorded}
    clock = []

    def keep(topic):
        def callback(data):
            with graph.lock:
                received[topic].append(data)
        return callback

    for topic, type_ in ((GATES, GateEvent), (RECEIPTS, Receipt), (RAW, WeightReading)):
        node.create_subscription(type_, topic, keep(topic), RELIABLE_DEEP, raw=True)
    node.create_subscription(String, LAYOUT, keep(LAYOUT), LATCHED_QOS, raw=True)
    node.create_subscription(Clock, '/clock', lambda m: clock.append(m.clock), 10)
    with open(tmp_path / 'replay.log', 'w') as log:
        replay = jwo('replay', str(bag_dir), '--max', log=log)
        code = finish(replay, 40)
    output = (tmp_path / 'replay.log').read_text()
    assert code == 0, output
    total = sum(len(v) for v in recorded.values())
    assert f'replay done: {total} messages' in output, output
    assert wait_until(lambda: all(len(received[t]) == len(recorded[t]) for t in recorded), 5), (
        output, {t: (len(received[t]), len(recorded[t])) for t in recorded})
    with graph.lock:
        for topic in recorded:
            assert received[topic] == [m.data for m in recorded[topic]], topic
    assert clock, 'no /clock'
    stamps = [c.sec * 10**9 + c.nanosec for c in clock]
    assert stamps == sorted(stamps)
    assert stamps[0] >= min(m.log_time for v in recorded.values() for m in v)
    assert stamps[-1] == max(m.log_time for v in recorded.values() for m in v)


def test_record_named_topics_until_sigterm_and_for_a_duration(graph, tmp_path):
    publisher = graph.node.create_publisher(String, '/chatter', EVENT_QOS)
    other = graph.node.create_publisher(String, '/other', EVENT_QOS)
    with open(tmp_path / 'record.log', 'w') as log, open(tmp_path / 'timed.log', 'w') as timed_log:
        recorder = jwo('record', '-o', str(tmp_path / 'named'), '--topics', '/chatter', '/later',
                       '--quiet', log=log)
        timed = jwo('record', '-o', str(tmp_path / 'timed'), '--topics', '/nobody',
                    '--duration', '1.5', log=timed_log)
        started = time.monotonic()
        assert wait_until(lambda: publisher.get_subscription_count() > 0, timeout=20)
        time.sleep(1.0)  # discovery is complete on both sides
        for i in range(20):
            publisher.publish(String(data=f'c{i}'))
            other.publish(String(data=f'o{i}'))
        time.sleep(0.5)
        recorder.send_signal(signal.SIGTERM)
        code = finish(recorder, 15)
        timed_code = finish(timed, 15)  # stops by itself
    output = (tmp_path / 'record.log').read_text()
    assert code == 0, output
    assert 'never saw a publisher on /later' in output
    with BagReader(tmp_path / 'named') as reader:
        assert list(reader.topics) == ['/chatter']
        assert [deserialize_message(m.data, String) for m in reader.messages()] == [
            String(data=f'c{i}') for i in range(20)], output
    timed_output = (tmp_path / 'timed.log').read_text()
    assert timed_code == 0 and 'recorded 0 messages' in timed_output, timed_output
    assert time.monotonic() - started < 15
    with BagReader(tmp_path / 'timed') as reader:
        assert reader.topics == {} and list(reader.messages()) == []


def replay_error(tmp_path, bag):
    result = subprocess.run([str(BIN / 'jwo'), 'replay', str(bag), '--max', '--clock-hz', '0'],
                            capture_output=True, text=True, timeout=30)
    return result.returncode, result.stderr.strip()


def small_bag(path, topic='/chatter', type_name='std_msgs/msg/String', definition=None):
    with BagWriter(path, compression='none') as writer:
        writer.add_topic(topic, type_name, definition=definition)
        for i in range(200):
            writer.write(topic, serialize_message(String(data=f'x{i}' * 20)), 10**18 + i)
    return path / f'{path.name}_0.mcap'


def test_replay_refuses_broken_bags_and_unknown_types(tmp_path):
    mcap = small_bag(tmp_path / 'cut')
    mcap.write_bytes(mcap.read_bytes()[:-100])
    code, err = replay_error(tmp_path, tmp_path / 'cut')
    assert code == 1 and err.startswith('error: ') and 'cut_0.mcap' in err and 'footer' in err

    mcap = small_bag(tmp_path / 'bad')
    data = bytearray(mcap.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the (uncompressed) chunk
    mcap.write_bytes(bytes(data))
    code, err = replay_error(tmp_path, tmp_path / 'bad')
    assert code == 1 and 'bad_0.mcap: chunk record at offset' in err and 'CRC' in err, err

    small_bag(tmp_path / 'alien', topic='/alien', type_name='alien_msgs/msg/Probe',
              definition='string data\n')
    code, err = replay_error(tmp_path, tmp_path / 'alien')
    assert code == 1, err
    assert 'alien_msgs/msg/Probe' in err and 'not installed' in err and 'channel record' in err

    code, err = replay_error(tmp_path, tmp_path / 'nothing-here')
    assert code == 1 and 'no such bag' in err
