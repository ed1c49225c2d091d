"""Shared test set-up: an isolated ROS 2 graph per test process, and helpers to start
real jwo nodes as processes."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# A distinct domain per pytest process, discovery kept on this machine: parallel test
# runs (and a demo running beside them) never see each other's nodes. The workers of one
# run (pytest-xdist gw0, gw1, ...) never share one: with two, one takes odd, one even.
_WORKER = int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0')[2:])
_WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
os.environ['ROS_DOMAIN_ID'] = str(1 + (os.getpid() % (100 // _WORKERS)) * _WORKERS + _WORKER)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('RCUTILS_COLORIZED_OUTPUT', '0')

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def repo() -> Path:
    return REPO


class NodeProcess:
    """A jwo executable started as its own process; stopped with SIGINT like Ctrl-C."""

    def __init__(self, executable: str, *ros_args: str, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, 'w')
        self.process = subprocess.Popen(
            [str(BIN / executable), '--ros-args', *ros_args],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_node(tmp_path):
    """start_node('weight_sensor_node', '-p', 'x:=1', ...) -> NodeProcess, stopped after the test."""
    started = []

    def start(executable: str, *ros_args: str) -> NodeProcess:
        node = NodeProcess(executable, *ros_args,
                           log_path=tmp_path / f'{executable}-{len(started)}.log')
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def spin_in_thread(executor, context):
    """Spins ``executor`` in a daemon thread until ``context`` shuts down."""
    def spin():
        while context.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                return
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    return thread


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow(seconds): a test that takes about this long; '
                                       'the slowest start first, so parallel workers finish together')


def pytest_collection_modifyitems(items):
    def seconds(item):
        marker = item.get_closest_marker('slow')
        return marker.args[0] if marker else 0
    items.sort(key=seconds, reverse=True)   # stable: the rest keep their order
