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
# runs (and a demo running beside them) never see each other's nodes.
os.environ['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100)
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
