"""What every node shares (jwo_nodes.ros_common), on a real rclpy node in this process:
parameters are read-only unless dynamic, a dynamic one is checked and then read by the
node; the counters' status on /diagnostics goes WARN on bad input and STALE when the
input goes silent; run_node exits cleanly on a signal even while the node is being built."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from conftest import REPO, wait_until
from jwo_nodes.ros_common import EVENT_QOS, Counters, Param, declare_params

SPECS = [
    Param('rate_hz', int, 'samples a second', 50, 10, 80),
    Param('quality', int, 'JPEG quality', 80, 1, 100, dynamic=True),
    Param('margin_s', float, 'seconds around an event', 3.0, 0.0, dynamic=True),
]


@pytest.fixture
def node():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('ros_common_test', context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_parameters_are_read_only_unless_dynamic(node):
    params = declare_params(node, SPECS)
    [result] = node.set_parameters([Parameter('rate_hz', value=60)])
    assert not result.successful and 'read-only' in result.reason
    assert params.rate_hz == 50 and node.get_parameter('rate_hz').value == 50

    # A dynamic parameter: out of its range (rclpy checks a two-sided range, this
    # module a one-sided one) or of the wrong type, refused with the reason.
    [result] = node.set_parameters([Parameter('quality', value=101)])
    assert not result.successful and 'quality' in result.reason and 'Max: 100' in result.reason
    [result] = node.set_parameters([Parameter('margin_s', value=-1.0)])
    assert not result.successful and result.reason == 'margin_s: -1.0 is out of range [0.0, inf]'
    [result] = node.set_parameters([Parameter('quality', value='best')])
    assert not result.successful
    assert (params.quality, params.margin_s) == (80, 3.0)

    # In range: set, and what the node reads from then on.
    results = node.set_parameters([Parameter('quality', value=40), Parameter('margin_s', value=5.5)])
    assert all(r.successful for r in results)
    assert (params.quality, params.margin_s) == (40, 5.5)
    assert params.rate_hz == 50


def test_only_values_read_at_every_use_are_dynamic():
    from jwo_nodes.nodes import camera_node, weight_sensor_node
    assert [p.name for p in camera_node.PARAMS if p.dynamic] == ['jpeg_quality']
    assert not [p.name for p in weight_sensor_node.PARAMS if p.dynamic]


def test_counters_warn_on_bad_input_and_go_stale_when_silent(node):
    statuses = []
    node.create_subscription(DiagnosticArray, '/diagnostics',
                             lambda msg: statuses.extend(msg.status), EVENT_QOS)
    counters = Counters(node, 'test/shelf', ('samples', 'malformed'))
    counters.expect('samples', within_s=2.0)
    counters.count('samples', 10)
    counters.warn('malformed', 'not a reading')
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)

    def spin_until(predicate, timeout):
        return wait_until(lambda: executor.spin_once(timeout_sec=0.05) or predicate(), timeout, 0.0)

    try:
        assert spin_until(lambda: statuses, 10)
        first = statuses[0]
        values = {kv.key: kv.value for kv in first.values}
        assert first.level == DiagnosticStatus.WARN and first.hardware_id == 'test/shelf'
        assert values == {'samples': '10', 'samples_recent': '10', 'malformed': '1',
                          'malformed_recent': '1'}
        assert first.message == '1 bad inputs in the last 60 s (malformed 1)'
        started = time.monotonic()
        assert spin_until(lambda: statuses[-1].level == DiagnosticStatus.STALE, 10)
        assert time.monotonic() - started > 0.5
        assert statuses[-1].message.startswith('no samples for ')
    finally:
        executor.remove_node(node)
        executor.shutdown()


SLOW_NODE = textwrap.dedent("""
    import sys, time
    from rclpy.node import Node
    from std_msgs.msg import String
    from jwo_nodes.ros_common import run_node

    class SlowToBuild(Node):
        def __init__(self):
            super().__init__('slow_to_build')
            print('building', flush=True)
            for i in range(400):  # a node that opens many endpoints, one at a time
                self.create_publisher(String, f'/slow_to_build/t{i}', 10)
                time.sleep(0.005)

    run_node(SlowToBuild)
    print('exited', flush=True)
""")


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_node_is_being_built_is_a_clean_exit(sig, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    process = subprocess.Popen([sys.executable, '-c', SLOW_NODE], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    assert process.stdout.readline() == 'building\n'
    time.sleep(0.3)
    process.send_signal(sig)
    output = process.communicate(timeout=20)[0]
    assert process.returncode == 0, output
    assert output.rstrip().endswith('exited'), output
