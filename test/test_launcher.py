"""The process supervisor behind `jwo launch` (jwo_nodes.launcher), run on small
throwaway programs instead of real nodes, and `jwo launch` itself on bad configs."""
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import wait_until
from jwo_nodes.graph import NodeSpec
from jwo_nodes.launcher import LaunchError, Supervisor, resolve_executable, supervise

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / 'config' / 'stores' / 'demo.yaml'

# Says 'ready' only once SIGINT is handled, and leaves <its path>.ready for programs
# that must not act before it is up.
POLITE = """
    import os, sys, time
    try:
        print('ready', os.getpid(), flush=True)
        open(sys.argv[0] + '.ready', 'w').close()
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:
        print('bye', flush=True)
"""
STUBBORN = """
    import os, signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print('ready', os.getpid(), flush=True)
    while True:
        time.sleep(0.05)
"""
DEAF = """
    import os, signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print('ready', os.getpid(), flush=True)
    while True:
        time.sleep(0.05)
"""


class Programs:
    """Executables written into a temporary bin directory."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir()

    def add(self, name: str, body: str) -> Path:
        path = self.dir / name
        path.write_text(f'#!{sys.executable}\n' + textwrap.dedent(body))
        path.chmod(0o755)
        return path

    def resolve(self, executable: str, package: str = 'jwo'):
        path = self.dir / executable
        return str(path) if path.exists() else None


@pytest.fixture
def programs(tmp_path):
    return Programs(tmp_path / 'bin')


@pytest.fixture
def supervisors():
    """make(specs, **options) -> (Supervisor, log lines); every one stopped after the test."""
    made = []

    def make(specs, **options):
        lines = []
        supervisor = Supervisor(specs, log=lines.append, **options)
        made.append(supervisor)
        return supervisor, lines

    yield make
    for supervisor in made:
        supervisor.stop()


def spec(executable: str, respawn: bool = True, **parameters) -> NodeSpec:
    return NodeSpec(executable=executable, name=executable, namespace='/t',
                    parameters=parameters, respawn=respawn)


def ready_pids(lines, fqn):
    return [int(m.group(1)) for line in list(lines)
            if (m := re.fullmatch(rf'\[{re.escape(fqn)}\] ready (\d+)', line))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def restart_delays(lines, fqn):
    return [float(m.group(1)) for line in list(lines)
            if line.startswith(f'[launch] {fqn} ')
            and (m := re.search(r'restarting it in ([0-9.]+) s', line))]


def test_output_is_prefixed_line_by_line(programs, supervisors):
    programs.add('talker', """
        import sys
        print(' '.join(sys.argv[1:]))
        print('hello', flush=True)
        print('oops', file=sys.stderr, flush=True)
        print('\\x1b[31mred\\x1b[0m', flush=True)
        sys.stdout.write('no newline at the end')
    """)
    supervisor, lines = supervisors([spec('talker', x=1, where='a b')], resolve=programs.resolve)
    supervisor.start()
    assert supervisor.wait(10) == 0          # ended with 0: the supervisor is done
    node_lines = [line for line in lines if line.startswith('[/t/talker] ')]
    assert node_lines == [
        "[/t/talker] --ros-args -r __node:=talker -r __ns:=/t -p x:=1 -p where:='a b'",
        '[/t/talker] hello', '[/t/talker] oops', '[/t/talker] red',
        '[/t/talker] no newline at the end']
    assert supervisor.starts() == {'/t/talker': 1}   # a clean exit is not restarted
    assert any('/t/talker exited with status 0; not restarting' in line for line in lines)
    assert all('\x1b' not in line for line in lines)


def test_crashed_node_is_restarted_with_exponential_backoff(programs, supervisors, tmp_path):
    starts_file = tmp_path / 'starts'
    programs.add('crasher', f"""
        import sys, time
        with open({str(starts_file)!r}, 'a') as f:
            f.write(f'{{time.time()}}\\n')
        count = len(open({str(starts_file)!r}).read().split())
        print('start', count, flush=True)
        if count <= 4:
            sys.exit(1)             # crashes at once: back-off doubles, capped
        if count == 5:
            time.sleep(0.8)         # stayed up past backoff_reset: back-off resets
            sys.exit(3)
        while True:
            time.sleep(0.05)
    """)
    programs.add('bystander', POLITE)
    supervisor, lines = supervisors(
        [spec('bystander'), spec('crasher')], resolve=programs.resolve,
        backoff_initial=0.1, backoff_max=0.4, backoff_reset=0.5)
    supervisor.start()
    assert wait_until(lambda: supervisor.starts()['/t/crasher'] == 6, timeout=15)
    assert restart_delays(lines, '/t/crasher') == [0.1, 0.2, 0.4, 0.4, 0.1]
    starts = [float(t) for t in starts_file.read_text().split()]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    for gap, delay in zip(gaps, [0.1, 0.2, 0.4, 0.4, 0.8 + 0.1]):
        assert gap >= delay - 0.02
    # The uptime reported is the run that stayed up (0.8 s asleep plus its own start-up).
    uptimes = [float(m.group(1)) for line in lines
               if (m := re.search(r'/t/crasher exited with status 3 after ([0-9.]+) s', line))]
    assert len(uptimes) == 1 and uptimes[0] >= 0.8
    # The crashes did not disturb the other node.
    assert supervisor.starts()['/t/bystander'] == 1
    assert supervisor.poll() is None
    assert supervisor.stop() == 0


def test_no_respawn_when_respawn_is_off(programs, supervisors):
    programs.add('fragile', 'import sys\nsys.exit(1)\n')
    programs.add('bystander', POLITE)
    supervisor, lines = supervisors([spec('bystander'), spec('fragile', respawn=False)],
                                    resolve=programs.resolve, backoff_initial=0.05)
    supervisor.start()
    assert wait_until(lambda: any('respawn is off' in line for line in lines), timeout=10)
    time.sleep(0.3)
    assert supervisor.starts() == {'/t/bystander': 1, '/t/fragile': 1}
    assert supervisor.poll() is None   # the others keep running
    assert supervisor.stop() == 0


def test_config_error_at_start_stops_everything(programs, supervisors):
    programs.add('bystander', POLITE)
    programs.add('misconfigured', f"""
        import os, sys, time
        while not os.path.exists({str(programs.dir / 'bystander.ready')!r}):
            time.sleep(0.05)
        print('error: store.yaml: gates[0].radius_m: must be > 0.0', file=sys.stderr, flush=True)
        sys.exit(2)
    """)
    supervisor, lines = supervisors([spec('bystander'), spec('misconfigured')],
                                    resolve=programs.resolve, backoff_initial=0.05)
    supervisor.start()
    assert supervisor.wait(15) == 2
    assert supervisor.starts()['/t/misconfigured'] == 1         # not restarted
    assert '/t/misconfigured' in supervisor.failure and 'configuration error' in supervisor.failure
    child_error = lines.index('[/t/misconfigured] error: store.yaml: gates[0].radius_m: must be > 0.0')
    launch_error = next(i for i, line in enumerate(lines) if line.startswith('[launch] error: '))
    assert child_error < launch_error                           # its reason first
    assert '[/t/bystander] bye' in lines                        # the rest was stopped
    assert not any(alive(pid) for pid in ready_pids(lines, '/t/bystander'))
    assert supervisor.pids() == {}
    assert supervisor.stop() == 2


def test_exit_2_after_the_start_up_is_a_crash(programs, supervisors):
    programs.add('late', 'import sys, time\ntime.sleep(0.4)\nsys.exit(2)\n')
    supervisor, lines = supervisors([spec('late')], resolve=programs.resolve,
                                    startup_grace=0.2, backoff_initial=0.05)
    supervisor.start()
    assert wait_until(lambda: supervisor.starts()['/t/late'] >= 2, timeout=10)
    assert supervisor.failure is None
    assert supervisor.stop() == 0


def test_missing_executable_starts_nothing(programs, supervisors, tmp_path, capsys):
    marker = tmp_path / 'started'
    programs.add('present', f'open({str(marker)!r}, "w").close()\n')
    specs = [spec('present'), NodeSpec('ghost_node', 'ghost_node', '/t/g')]
    supervisor, lines = supervisors(specs, resolve=programs.resolve)
    with pytest.raises(LaunchError) as error:
        supervisor.start()
    assert "cannot start /t/g/ghost_node: executable 'ghost_node' not found" in str(error.value)
    time.sleep(0.3)
    assert not marker.exists() and supervisor.pids() == {}

    # The `jwo launch` loop: one error line, non-zero status.
    assert supervise(specs, resolve=programs.resolve, log=lambda line: None) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot start /t/g/ghost_node: executable 'ghost_node' not found")
    assert not marker.exists()


def test_executables_are_found_next_to_the_interpreter():
    assert resolve_executable('jwo') == str(Path(sys.executable).parent / 'jwo')
    assert resolve_executable('no_such_jwo_node_anywhere') is None


def test_stop_escalates_to_sigterm_and_sigkill(programs, supervisors):
    programs.add('polite', POLITE)
    programs.add('stubborn', STUBBORN)
    programs.add('deaf', DEAF)
    supervisor, lines = supervisors([spec('polite'), spec('stubborn'), spec('deaf')],
                                    resolve=programs.resolve, stop_timeout=2.0, term_timeout=0.5)
    supervisor.start()
    assert wait_until(lambda: all(ready_pids(lines, f'/t/{name}')
                                  for name in ('polite', 'stubborn', 'deaf')), timeout=10)
    pids = supervisor.pids()
    began = time.monotonic()
    assert supervisor.stop() == 0
    assert time.monotonic() - began < 6
    assert '[/t/polite] bye' in lines   # 2 s is long enough for it even on a loaded machine
    assert any('still running 2 s after SIGINT; sending SIGTERM' in line for line in lines)
    assert any(line.endswith('/t/deaf ignored SIGTERM; sending SIGKILL') for line in lines)
    assert not any(alive(pid) for pid in pids.values())
    assert supervisor.stop() == 0   # idempotent


def test_context_manager(programs):
    programs.add('polite', POLITE)
    lines = []
    with Supervisor([spec('polite')], log=lines.append, resolve=programs.resolve) as stack:
        assert wait_until(lambda: ready_pids(lines, '/t/polite'), timeout=10)
        pid = stack.pids()['/t/polite']
    assert stack.poll() == 0 and not alive(pid)


DRIVER = """
import sys
from jwo_nodes.graph import NodeSpec
from jwo_nodes.launcher import supervise

bin_dir = sys.argv[1]
specs = [NodeSpec('polite', 'polite', '/t'), NodeSpec('stubborn', 'stubborn', '/t')]
sys.exit(supervise(specs, resolve=lambda exe, package: f'{bin_dir}/{exe}',
                   stop_timeout=1.0, term_timeout=2.0))
"""


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_launcher_process_shuts_down_cleanly_on_signal(programs, tmp_path, signum):
    programs.add('polite', POLITE)
    programs.add('stubborn', STUBBORN)
    driver = tmp_path / 'driver.py'
    driver.write_text(DRIVER)
    process = subprocess.Popen([sys.executable, str(driver), str(programs.dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=REPO)
    lines = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(line.rstrip('\n')) for line in process.stdout], daemon=True)
    reader.start()
    seen = []
    try:
        deadline = time.monotonic() + 15
        while not (ready_pids(seen, '/t/polite') and ready_pids(seen, '/t/stubborn')):
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        process.send_signal(signum)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    while not lines.empty():
        seen.append(lines.get())
    assert f'[launch] {signal.Signals(signum).name} received, stopping' in seen
    assert '[/t/polite] bye' in seen
    assert any('/t/stubborn still running' in line for line in seen)
    pids = ready_pids(seen, '/t/polite') + ready_pids(seen, '/t/stubborn')
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


def jwo(*args):
    entry = Path(sys.executable).parent / 'jwo'
    command = [str(entry)] if entry.exists() else [sys.executable, '-m', 'jwo_nodes.cli']
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30, cwd=REPO)


@pytest.mark.parametrize('change, key, problem', [
    (lambda d: d['gates'][0].update(radius_m=-1), 'gates[0].radius_m', 'must be > 0.0, got -1'),
    (lambda d: d['shelves'][1]['bins'][0].update(sku='NOPE'), 'shelves[1].bins[0].sku',
     "unknown SKU 'NOPE' (not under products)"),
    (lambda d: d.pop('store'), 'store', 'missing'),
])
def test_jwo_launch_with_a_broken_store_config(tmp_path, change, key, problem):
    document = yaml.safe_load(DEMO.read_text())
    change(document)
    broken = tmp_path / 'broken.yaml'
    broken.write_text(yaml.safe_dump(document))
    result = jwo('launch', str(broken))
    assert result.returncode == 2
    assert result.stderr == f'error: {broken}: {key}: {problem}\n'
    assert 'started' not in result.stdout


def test_jwo_launch_with_a_missing_store_or_scenario(tmp_path):
    result = jwo('launch', str(tmp_path / 'nowhere.yaml'))
    assert result.returncode == 2
    assert result.stderr.startswith(f'error: {tmp_path / "nowhere.yaml"}: <file>: cannot read')
    result = jwo('launch', str(DEMO), '--scenario', str(tmp_path / 'nothing.yaml'))
    assert result.returncode == 2
    assert result.stderr == f'error: {tmp_path / "nothing.yaml"}: <file>: cannot read: No such file or directory\n'
    result = jwo('launch', str(DEMO), '--params-dir', str(tmp_path / 'noparams'))
    assert result.returncode == 2 and result.stderr.count('\n') == 1
