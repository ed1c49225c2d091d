"""Two edge machines in one store: the node set split across two network namespaces
joined by a veth pair, DDS between them over real UDP (Fast DDS with UDPv4 only, no
shared memory; host B has no other way out than the veth), gives the receipts of a
single-host run.

Host A (this process's namespace, the root one): fusion, the gate, the launcher and
the run monitor. Host B (a namespace of its own): every weight sensor and the
simulator's tracker stand-in. Needs root (CI runs as root); skipped with one line
where namespaces cannot be made.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.sim import Timeline, load_scenario
from jwo_nodes.launcher import resolve_executable
from jwo_nodes.runner import run_scenario

pytestmark = pytest.mark.slow(60)

SCENARIO = 'test/scenarios/hard-adjacent-same-moment.yaml'
# The shelves (composed in a node_container) and the simulator run on host B.
ON_HOST_B = {'node_container', 'shopper_sim_node'}
SUBNET = '10.77.{}.{}'


def _ip(*args, namespace=None) -> subprocess.CompletedProcess:
    prefix = ['ip', 'netns', 'exec', namespace] if namespace else []
    return subprocess.run([*prefix, 'ip', *args], capture_output=True, text=True)


@pytest.fixture
def host_b(tmp_path):
    """A network namespace joined to this one by a veth pair: (namespace, address here,
    address there)."""
    tag = os.getpid() % 250 + 1
    namespace, here_dev, there_dev = f'jwo-b{tag}', f'jwoa{tag}', f'jwob{tag}'
    here, there = SUBNET.format(tag, 1), SUBNET.format(tag, 2)
    made = _ip('netns', 'add', namespace)
    if made.returncode != 0:
        pytest.skip(f'multi-host test needs network namespaces (root): {made.stderr.strip()}')
    try:
        steps = [
            (('link', 'add', here_dev, 'type', 'veth', 'peer', 'name', there_dev), None),
            (('link', 'set', there_dev, 'netns', namespace), None),
            (('addr', 'add', f'{here}/24', 'dev', here_dev), None),
            (('link', 'set', here_dev, 'up'), None),
            (('addr', 'add', f'{there}/24', 'dev', there_dev), namespace),
            (('link', 'set', there_dev, 'up'), namespace),
            (('link', 'set', 'lo', 'up'), namespace),
        ]
        for args, where in steps:
            done = _ip(*args, namespace=where)
            assert done.returncode == 0, f'ip {" ".join(args)}: {done.stderr}'
        yield namespace, here, there
    finally:
        _ip('link', 'del', here_dev)
        _ip('netns', 'del', namespace)


def _run(repo: Path, out: Path, name: str, resolve=None) -> dict:
    """One run of the scenario: party -> (status, lines)."""
    store_path = repo / 'config/stores/demo.yaml'
    store = load_store_config(store_path)
    timeline = Timeline(load_scenario(repo / SCENARIO, store), store)
    rclpy.init()
    try:
        result = run_scenario(store, store_path, repo / SCENARIO, timeline, time_scale=1.0, start_delay_s=1.0,
                              with_cameras=False, log_path=out / f'{name}.log', grace_s=20.0,
                              supervisor_options={'resolve': resolve} if resolve else None)
    finally:
        rclpy.try_shutdown()
    assert result.failure is None, f'{result.failure}\n{(out / f"{name}.log").read_text()[-3000:]}'
    return {party: [r['status'], sorted([line['sku'], line['quantity']] for line in r['lines'])]
            for party, r in result.receipts.items()}


def _in_a_process(out: Path, name: str, env: dict, *args) -> dict:
    """_run in a Python process of its own: Fast DDS reads its transports from the
    environment once per process."""
    done = subprocess.run([sys.executable, __file__, str(out), name, *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_hosts_over_udp_give_the_receipts_of_one(tmp_path, host_b):
    namespace, here, there = host_b
    single = _in_a_process(tmp_path, 'single', {})
    # DDS over UDP only (no shared memory between the hosts' processes), discovery
    # beyond localhost, each host told the other's address.
    split = _in_a_process(tmp_path, 'split', {
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET', 'FASTDDS_BUILTIN_TRANSPORTS': 'UDPv4',
        'ROS_STATIC_PEERS': there}, namespace, here)
    log = (tmp_path / 'split.log').read_text()
    # The sensors really ran over there: started through `ip netns exec`.
    assert f'ip netns exec {namespace}' in (tmp_path / 'host-b' / 'node_container').read_text()
    assert 'graph ready' in log
    assert split == single
    assert len(split) == 3


def _host_b_resolver(out: Path, namespace: str, host_a: str):
    """Executables of the host-B nodes started inside its namespace, told host A's
    address."""
    wrappers = out / 'host-b'
    wrappers.mkdir(exist_ok=True)

    def resolve(executable, package):
        path = resolve_executable(executable, package)
        if executable not in ON_HOST_B or path is None:
            return path
        wrapper = wrappers / executable
        wrapper.write_text(f'#!/bin/sh\nexport ROS_STATIC_PEERS={host_a}\n'
                           f'exec ip netns exec {namespace} {path} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)
    return resolve


if __name__ == '__main__':
    out, name = Path(sys.argv[1]), sys.argv[2]
    resolve = _host_b_resolver(out, *sys.argv[3:5]) if len(sys.argv) > 3 else None
    print(json.dumps(_run(Path(__file__).resolve().parent.parent, out, name, resolve)))
