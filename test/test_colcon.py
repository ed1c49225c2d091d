"""The repository as a ROS 2 user builds it: cloned into a workspace's src/, one plain
`colcon build` (colcon from PyPI, against the ROS 2 wheels of this environment), then
the workspace's setup.bash. What `ros2 run jwo <executable>` starts (lib/jwo/...)
runs the installed code and talks to this process over DDS."""
import os
import shutil
import subprocess
import sys

import pytest
import rclpy
from jwo.msg import GateEvent
from rclpy.executors import SingleThreadedExecutor

from conftest import REPO, wait_until
from jwo_nodes.ros_common import EVENT_QOS

pytestmark = pytest.mark.slow(70)

VENV = os.path.dirname(sys.executable)
BUILD_TIMEOUT_S = 600


def checkout_files() -> list:
    """The files a clone of this checkout has (tracked, or new and not ignored)."""
    listed = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=REPO,
                            check=True, capture_output=True).stdout.decode()
    return [path for path in listed.split('\0') if path and (REPO / path).is_file()]


def colcon_env() -> dict:
    """This environment's ROS 2 (the wheels) as the underlay, colcon on PATH."""
    env = dict(os.environ)
    env['PATH'] = VENV + os.pathsep + env['PATH']
    env['AMENT_PREFIX_PATH'] = env['CMAKE_PREFIX_PATH'] = sys.prefix
    env['CMAKE_POLICY_VERSION_MINIMUM'] = '3.5'   # the wheels' CMake files ask for older
    return env


def copy_checkout(root):
    for path in checkout_files():
        target = root / 'src' / 'jwo' / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, target)


def run(workspace, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', '-c', command], cwd=workspace, env=colcon_env(), text=True,
                          capture_output=True, timeout=timeout)


def test_colcon_builds_a_workspace_that_runs(tmp_path):
    """One build (a minute of CPU), then what a user does with it."""
    copy_checkout(tmp_path)
    listed = run(tmp_path, 'colcon list')
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ['jwo', 'src/jwo', '(ros.ament_cmake)']
    build = run(tmp_path, 'colcon build --event-handlers console_direct-', BUILD_TIMEOUT_S)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    the_install_holds_the_executables_interfaces_data_and_tools(tmp_path)
    a_bad_config_stops_an_installed_node_with_one_line(tmp_path)
    an_installed_gate_node_publishes_to_this_process(tmp_path)


def sourced(workspace, command: str, **kwargs) -> subprocess.CompletedProcess:
    return run(workspace, f'. install/setup.bash && {command}', **kwargs)


def console_scripts() -> list:
    lines = (REPO / 'setup.cfg').read_text().split('console_scripts =', 1)[1].splitlines()
    return sorted(line.split('=')[0].strip() for line in lines if ' = ' in line)


def the_install_holds_the_executables_interfaces_data_and_tools(built):
    lib = built / 'install' / 'jwo' / 'lib'
    assert sorted(p.name for p in (lib / 'jwo').iterdir()) == console_scripts()
    share = built / 'install' / 'jwo' / 'share' / 'jwo'
    for path in ('package.xml', 'launch/store.launch.py', 'config/stores/demo.yaml',
                 'config/params/fusion_node.yaml', 'config/scenarios/demo.yaml', 'models/detector.onnx',
                 'msg/WeightChange.msg'):
        assert (share / path).is_file(), path
    found = sourced(built, 'command -v jwo jwo-cloud && python -c "import jwo.msg, jwo_nodes, '
                           'jwo_cloud; print(jwo.msg.__file__, jwo_nodes.__file__, jwo_cloud.__file__)"')
    assert found.returncode == 0, found.stderr
    assert all(line.startswith(str(built / 'install' / 'jwo')) for line in found.stdout.split()), found.stdout
    # The launcher finds the installed data (params, the model) from the installed code.
    data = sourced(built, 'python -c "from jwo_nodes.graph import default_params_dir; '
                          'from jwo_nodes.core.detector import default_model_path; '
                          'print(default_params_dir(), default_model_path())"')
    assert data.stdout.split() == [str(share / 'config' / 'params'), str(share / 'models' / 'detector.onnx')]


def a_bad_config_stops_an_installed_node_with_one_line(built):
    result = sourced(built, 'install/jwo/lib/jwo/fusion_node --ros-args -p store_config:=/no/such.yaml')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ['error: /no/such.yaml: <file>: cannot read: '
                                                   'No such file or directory']


def an_installed_gate_node_publishes_to_this_process(built):
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('colcon_test_listener', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    events = []
    node.create_subscription(GateEvent, '/jwo/gates/G1/events', events.append, EVENT_QOS)
    share = built / 'install' / 'jwo' / 'share' / 'jwo'
    gate = subprocess.Popen(
        ['bash', '-c', '. install/setup.bash && exec install/jwo/lib/jwo/gate_node --ros-args '
                       f'--params-file {share}/config/params/gate_node.yaml '
                       f'-p store_config:={share}/config/stores/demo.yaml -p gate_id:=G1 -p source:=stdin'],
        cwd=built, env=colcon_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    try:
        def walk_out_arrived():
            if gate.poll() is not None:
                return True
            gate.stdin.write(b'EXIT\n')
            gate.stdin.flush()
            executor.spin_once(timeout_sec=0.3)
            return bool(events)
        assert wait_until(walk_out_arrived, 30.0, interval=0.0)
        assert gate.poll() is None, gate.stdout.read().decode()
        assert events[0].gate_id == 'G1' and events[0].direction == GateEvent.EXIT
    finally:
        gate.stdin.close()
        gate.terminate()
        gate.wait(10)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
