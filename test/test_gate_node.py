"""gate_node as a real process: lines through a pseudo-terminal (the serial source),
stdin and the simulator, and a restart between entry and tap-out; GateEvents and
/diagnostics checked by an rclpy subscriber."""
import os
import subprocess
import time
from pathlib import Path

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from jwo.msg import GateEvent, GateStatus, VisitAccess
from rclpy.executors import SingleThreadedExecutor

from conftest import BIN, wait_until
from jwo_nodes.core.visit_access import handoff_path, read_handoff, token_hash
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, EVENT_QOS, to_ns

REPO = Path(__file__).resolve().parent.parent
STORE = str(REPO / 'config/stores/demo.yaml')
PARAMS = str(REPO / 'config/params/gate_node.yaml')
SCENARIO = REPO / 'config/scenarios/demo.yaml'
TOPIC = '/jwo/gates/G1/events'
CARD = 'tok-4111111111111111'


class Listener:
    """GateEvents and the gate's diagnostics, received in this test process."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('gate_test_listener', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.events = []
        self.statuses = []
        self.diagnostics = {}
        self.node.create_subscription(GateEvent, TOPIC, self.events.append, EVENT_QOS)
        self.node.create_subscription(GateStatus, '/jwo/gates/G1/status', self.statuses.append, EVENT_QOS)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics,
                                      EVENT_QOS)

    def _diagnostics(self, msg):
        for status in msg.status:
            if status.hardware_id == 'gate/G1':
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics['_level'] = status.level

    def spin_until(self, predicate, timeout: float) -> bool:
        def step():
            self.executor.spin_once(timeout_sec=0.02)
            return predicate()
        return wait_until(step, timeout, interval=0.0)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def assert_statuses_cover_the_events(listener) -> None:
    """Each status names as its last event the newest event stamped up to its
    processed_until (of those received: a probe's may have gone before we matched), and
    the statuses never go back."""
    def seq(event_id):
        return int(event_id.split('/')[1]) if event_id else 0
    assert len(listener.statuses) >= 3
    stamps = [to_ns(s.processed_until) for s in listener.statuses]
    assert stamps == sorted(stamps)
    for status, until in zip(listener.statuses, stamps):
        assert status.gate_id == 'G1'
        for event in listener.events:
            assert (to_ns(event.header.stamp) <= until) == (seq(event.event_id) <= seq(status.last_event_id))


@pytest.fixture
def listener():
    listener = Listener()
    yield listener
    listener.close()


def gate_args(source: str, *extra: str) -> list:
    return ['--params-file', PARAMS, '-p', f'store_config:={STORE}', '-p', 'gate_id:=G1',
            '-p', f'source:={source}', *extra]


def wait_for_link(listener, send, node) -> None:
    """Sends walk-outs until one arrives: the node runs and our subscription matched."""
    def probe():
        if node_dead(node):
            return True
        send(b'EXIT\n')
        return listener.spin_until(lambda: listener.events, 0.3)
    assert wait_until(probe, 20.0, interval=0.0), 'gate_node published nothing'
    assert not node_dead(node), 'gate_node died'
    listener.spin_until(lambda: False, 0.5)  # probes still in flight
    listener.events.clear()


def node_dead(node) -> bool:
    process = getattr(node, 'process', node)
    return process.poll() is not None


def test_serial_pty_events_and_garbage_counted(start_node, listener):
    master, slave = os.openpty()
    try:
        node = start_node('gate_node', *gate_args(os.ttyname(slave), '-p', 'debounce_s:=0.5'))
        wait_for_link(listener, lambda data: os.write(master, data), node)

        os.write(master, f'entry CARD {CARD} 3\r\n'.encode())
        os.write(master, b'this is not a gate line\n\xff\xfe garbage\n')
        os.write(master, f'ENTRY card {CARD}\n'.encode())  # reader repeats: debounced
        assert listener.spin_until(lambda: len(listener.events) >= 1, 5.0)
        time.sleep(0.6)
        os.write(master, f'EXIT card {CARD}\n'.encode())
        os.write(master, b'EXIT card never-entered\n')
        assert listener.spin_until(lambda: len(listener.events) >= 2, 5.0)

        entry, exit_ = listener.events[:2]
        assert (entry.direction, entry.credential_kind, entry.group_size) == (
            GateEvent.ENTRY, GateEvent.CREDENTIAL_CARD_TOKEN, 3)
        assert entry.visit_code.startswith('v-') and len(entry.visit_code) == 12
        assert (exit_.direction, exit_.visit_code, exit_.group_size) == (
            GateEvent.EXIT, entry.visit_code, 3)
        assert entry.gate_id == 'G1' and entry.event_id.startswith('G1/')
        assert int(exit_.event_id.split('/')[1]) == int(entry.event_id.split('/')[1]) + 1
        assert abs(to_ns(entry.header.stamp) - time.time_ns()) < 10 * 10**9  # stamped at receipt

        # Garbage, the double scan and the exit without entry are counted; the node runs on.
        def counted():
            d = listener.diagnostics
            return (d.get('malformed_reading') == '2' and d.get('debounced') == '1'
                    and d.get('exit_without_entry') == '1')
        assert listener.spin_until(counted, 5.0), listener.diagnostics
        assert listener.diagnostics['_level'] == DiagnosticStatus.WARN
        assert not node_dead(node)
        os.write(master, b'EXIT\n')
        assert listener.spin_until(lambda: len(listener.events) >= 3, 5.0)
        last = listener.events[-1].event_id
        assert listener.spin_until(lambda: listener.statuses[-1].last_event_id == last, 5.0)
        assert_statuses_cover_the_events(listener)
        assert CARD not in node.log()
        assert node.stop() == 0
    finally:
        os.close(master)
        os.close(slave)


def test_a_tap_out_after_a_restart_finds_its_visit(start_node, listener, tmp_path):
    master, slave = os.openpty()
    state = tmp_path / 'state'
    args = gate_args(os.ttyname(slave), '-p', f'state_dir:={state}')
    try:
        node = start_node('gate_node', *args)
        wait_for_link(listener, lambda data: os.write(master, data), node)
        os.write(master, f'ENTRY card {CARD} 2\n'.encode())
        assert listener.spin_until(lambda: listener.events, 5.0)
        (entry,) = listener.events
        assert node.stop() == 0, node.log()
        saved = state / 'gate-G1.json'
        assert CARD not in saved.read_text() and entry.visit_code in saved.read_text()
        assert saved.stat().st_mode & 0o777 == 0o600

        listener.events.clear()
        node = start_node('gate_node', *args)
        wait_for_link(listener, lambda data: os.write(master, data), node)
        assert '1 open visits restored' in node.log()
        # A consumer starting after the restart is offered the restored visit's ENTRY.
        late = []
        listener.node.create_subscription(GateEvent, TOPIC, late.append, DURABLE_EVENT_QOS)
        entries = lambda: [(e.event_id, e.visit_code) for e in late if e.direction == GateEvent.ENTRY]
        assert listener.spin_until(entries, 5.0), node.log()
        assert entries() == [(entry.event_id, entry.visit_code)]
        # ... and its live-cart token's hash, as saved (the token is not in the file).
        offered = []
        listener.node.create_subscription(VisitAccess, '/jwo/gates/G1/access', offered.append,
                                          DURABLE_EVENT_QOS)
        assert listener.spin_until(lambda: offered, 5.0), node.log()
        assert [a.visit_code for a in offered] == [entry.visit_code]
        assert offered[0].token_sha256.tobytes().hex() in saved.read_text()
        listener.events.clear()
        os.write(master, f'EXIT card {CARD}\n'.encode())
        assert listener.spin_until(lambda: listener.events, 5.0), node.log()
        (exit_,) = listener.events
        assert (exit_.direction, exit_.visit_code, exit_.group_size) == (
            GateEvent.EXIT, entry.visit_code, 2)
        assert entry.visit_code not in saved.read_text()      # closed: forgotten
        assert node.stop() == 0, node.log()
    finally:
        os.close(master)
        os.close(slave)


def test_stdin_source_and_the_live_cart_token_handed_off(tmp_path, listener):
    handoff = tmp_path / 'access'
    accesses = []
    listener.node.create_subscription(VisitAccess, '/jwo/gates/G1/access', accesses.append,
                                      DURABLE_EVENT_QOS)
    log = open(tmp_path / 'gate.log', 'w')
    process = subprocess.Popen([str(BIN / 'gate_node'), '--ros-args',
                                *gate_args('stdin', '-p', f'access_dir:={handoff}')],
                               stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    try:
        def send(data):
            process.stdin.write(data)
            process.stdin.flush()
        wait_for_link(listener, send, process)
        send(b'ENTRY qr app-1 2\nENTRY bogus x\n')
        assert listener.spin_until(lambda: listener.events and accesses, 5.0)
        (entry,) = listener.events
        assert (entry.group_size, entry.credential_kind) == (2, GateEvent.CREDENTIAL_APP_QR)
        # The shopper gets the token (a private file here); the bus carries its hash.
        path = handoff_path(handoff, 'G1')
        assert path.stat().st_mode & 0o777 == 0o600
        (grant,) = read_handoff(path)
        (access,) = accesses
        assert grant.access.visit_code == access.visit_code == entry.visit_code
        assert access.token_sha256.tobytes() == token_hash(grant.token)
        assert to_ns(access.header.stamp) == to_ns(entry.header.stamp)
    finally:
        process.stdin.close()
        process.send_signal(2)
        assert process.wait(10) == 0
        log.close()
    assert grant.token not in (tmp_path / 'gate.log').read_text()


@pytest.mark.parametrize('args, message', [
    (['-p', f'store_config:={STORE}', '-p', 'gate_id:=G9', '-p', 'source:=stdin'], "no gate 'G9'"),
    (gate_args('/dev/nonexistent-gate-reader'), 'cannot open serial device'),
    (gate_args('sim'), 'scenario'),
    (['-p', f'store_config:={STORE}', '-p', 'source:=stdin'], 'gate_id'),
])
def test_bad_config_fails_with_one_line(args, message):
    result = subprocess.run([str(BIN / 'gate_node'), '--ros-args', *args],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.skipif(not SCENARIO.exists(), reason='no demo scenario yet')
def test_sim_source_plays_the_scenario(start_node, listener):
    from jwo_nodes.core import sim
    from jwo_nodes.core.config import load_store_config
    store = load_store_config(STORE)
    lines = sim.Timeline(sim.load_scenario(SCENARIO, store), store).gate_lines('G1')
    scale = 25.0
    # The first line is due 5 s after start: time to start and to discover each other
    # on a loaded machine (GateEvents are volatile: a subscriber that is late misses them).
    start_ns = time.time_ns() + 5 * 10**9 - lines[0][0] // int(scale)
    start_node('gate_node', *gate_args('sim', '-p', f'scenario:={SCENARIO}',
                                       '-p', f'sim_start_ns:={start_ns}',
                                       '-p', f'time_scale:={scale}'))
    assert listener.spin_until(lambda: listener.node.count_publishers(TOPIC) > 0, 10.0)
    matched_s = (time.time_ns() - start_ns) / 1e9
    last_s = lines[-1][0] / 1e9 / scale
    assert listener.spin_until(lambda: len(listener.events) >= len(lines), 5 + last_s + 10), (
        [e.event_id for e in listener.events], f'discovered {matched_s:.2f} s after start')
    got = [(to_ns(e.header.stamp) - start_ns, e.direction) for e in listener.events]
    assert got == [(t, GateEvent.ENTRY if line.startswith('ENTRY') else GateEvent.EXIT)
                   for t, line in lines]
    assert [e.event_id for e in listener.events] == [f'G1/{i}' for i in range(1, len(lines) + 1)]
    codes = {e.visit_code for e in listener.events if e.direction == GateEvent.ENTRY}
    assert len(codes) == sum(line.startswith('ENTRY') for _, line in lines)
    tap_outs = [e for e in listener.events if e.direction == GateEvent.EXIT and e.visit_code]
    assert all(e.visit_code in codes for e in tap_outs)
    assert len(tap_outs) == sum(line.startswith('EXIT ') for _, line in lines)
    assert listener.spin_until(lambda: listener.statuses[-1].last_event_id == listener.events[-1].event_id, 5.0)
    assert_statuses_cover_the_events(listener)
