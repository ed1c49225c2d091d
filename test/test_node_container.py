"""node_container: its command line, and two simulated shelves composed in one process,
each with its own name, namespace, parameters, topics and diagnostics."""
import signal
import subprocess
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from jwo.msg import NodeState, WeightChange
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from conftest import BIN, spin_in_thread, wait_until
from jwo_nodes.graph import NodeSpec, ProcessSpec
from jwo_nodes.nodes.node_container import UsageError, parse_nodes
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, EVENT_QOS, NODE_STATES_TOPIC

NS = 1_000_000_000


def test_each_node_gets_its_own_arguments():
    argv = ['--node', 'weight_sensor_node', '--ros-args', '-r', '__ns:=/a', '-p', 'x:=1', '--',
            '--node', 'gate_node', '--ros-args', '-p', 'y:=2']
    assert parse_nodes(argv) == [('weight_sensor_node', ['--ros-args', '-r', '__ns:=/a', '-p', 'x:=1']),
                                 ('gate_node', ['--ros-args', '-p', 'y:=2'])]
    assert parse_nodes(['--node', 'fusion_node']) == [('fusion_node', [])]


@pytest.mark.parametrize('argv, problem', [
    ([], 'no nodes'),
    (['weight_sensor_node'], 'expected --node'),
    (['--node'], 'expected --node'),
    (['--node', 'rm_rf_node'], "'rm_rf_node' cannot be composed"),
])
def test_a_bad_command_line_is_refused(argv, problem):
    with pytest.raises(UsageError, match=problem):
        parse_nodes(argv)


def test_a_container_command_line_parses_back_to_its_nodes():
    nodes = tuple(NodeSpec('weight_sensor_node', 'weight_sensor_node', f'/jwo/shelves/S{k}',
                           parameters={'shelf_id': f'S{k}', 'note': '-- --node'})
                  for k in (1, 2, 3))
    process = ProcessSpec(nodes)
    assert process.executable == 'node_container' and process.label == '/jwo/shelves/{S1..S3}'
    assert parse_nodes(process.ros_args()) == [(n.executable, n.ros_args()) for n in nodes]


class Watcher:
    """Subscribes to both shelves' changes, the node states and /diagnostics."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node('container_test_watcher', context=self.context)
        self.changes, self.states, self.diagnostics = {'S1': [], 'S2': []}, {}, set()
        for shelf in self.changes:
            self.node.create_subscription(WeightChange, f'/jwo/shelves/{shelf}/weight/changes',
                                          self.changes[shelf].append, DURABLE_EVENT_QOS)
        self.node.create_subscription(NodeState, NODE_STATES_TOPIC,
                                      lambda m: self.states.__setitem__(m.node, m.pid), DURABLE_EVENT_QOS)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', lambda m: self.diagnostics.update(
            (s.name, s.hardware_id) for s in m.status), EVENT_QOS)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = spin_in_thread(self.executor, self.context)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(2)


def shelf(repo, shelf_id: str, *extra) -> NodeSpec:
    return NodeSpec('weight_sensor_node', 'weight_sensor_node', f'/jwo/shelves/{shelf_id}',
                    params_file=str(repo / 'config/params/weight_sensor_node.yaml'),
                    parameters={'store_config': str(repo / 'config/stores/demo.yaml'),
                                'shelf_id': shelf_id, **dict(extra)})


def start(process: ProcessSpec, log_path):
    log = open(log_path, 'w')
    return subprocess.Popen([str(BIN / 'node_container'), *process.ros_args()],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_two_simulated_shelves_in_one_process(repo, tmp_path):
    scenario = repo / 'config/scenarios/demo.yaml'
    start_ns = time.time_ns() + 4 * NS
    sim = (('source', 'sim'), ('scenario', str(scenario)), ('sim_start_ns', start_ns), ('time_scale', 10.0))
    watcher = Watcher()
    process = start(ProcessSpec((shelf(repo, 'S1', *sim), shelf(repo, 'S2', *sim))), tmp_path / 'c.log')
    log = lambda: (tmp_path / 'c.log').read_text()   # noqa: E731
    try:
        names = {'/jwo/shelves/S1/weight_sensor_node', '/jwo/shelves/S2/weight_sensor_node'}
        assert wait_until(lambda: names <= set(watcher.states), 15), log()
        assert {watcher.states[n] for n in names} == {process.pid}
        # Each shelf publishes its own changes, numbered by its own shelf id.
        assert wait_until(lambda: all(len(c) >= 2 for c in watcher.changes.values()), 40), log()
        for shelf_id, changes in watcher.changes.items():
            assert changes[0].event_id == f'{shelf_id}/1'
            assert all(c.shelf_id == shelf_id for c in changes)
        assert wait_until(lambda: {(n, f'shelf/{n.split("/")[3]}') for n in names} <= watcher.diagnostics, 5)
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0, log()
        assert 'Traceback' not in log()
    finally:
        if process.poll() is None:
            process.kill()
        watcher.close()


def test_a_bad_node_config_stops_the_container_with_one_line(repo, tmp_path):
    sim = (('source', 'sim'), ('scenario', str(repo / 'config/scenarios/demo.yaml')))
    process = start(ProcessSpec((shelf(repo, 'S1', *sim), shelf(repo, 'S9', *sim))), tmp_path / 'bad.log')
    assert process.wait(20) == 2
    text = (tmp_path / 'bad.log').read_text()
    assert "no shelf 'S9'" in text and 'Traceback' not in text
