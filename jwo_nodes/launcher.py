"""`jwo launch`: starts the node set of a store and watches it.

The ros2 launch stand-in for installs without `launch`/`launch_ros` (the PyPI
wheels). The node graph comes from jwo_nodes.graph.store_graph and its processes from
jwo_nodes.graph.compose (the shelves composed in node_containers, every other node in
a process of its own), the functions launch/store.launch.py uses.

    jwo launch config/stores/demo.yaml
    jwo launch config/stores/demo.yaml --scenario config/scenarios/demo.yaml --time-scale 2

Supervisor (usable from Python, e.g. by `jwo demo`):
  * every output line of a process is printed as ``[<namespace>/<name>] <line>``
    (a container's as ``[/jwo/shelves/{S1..S25}] <line>``);
  * a node that crashes (non-zero exit or killed) is restarted after a back-off
    that doubles from 0.5 s to 30 s and resets once the node stayed up 30 s;
    a node that exits 0 is not restarted;
  * a node that cannot start -- its executable is missing, or it exits with status 2
    (configuration error, see ros_common.run_node) within its first seconds -- is
    not restarted: the others are stopped and the supervisor finishes with an error;
  * stop() sends SIGINT to every node, waits, then SIGTERM, then SIGKILL.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from jwo_nodes.core.config import ConfigError
from jwo_nodes.graph import (SHELVES_PER_CONTAINER, NodeSpec, ProcessSpec, compose, default_params_dir,
                             store_graph)
from jwo_nodes.paths import PACKAGE, install_prefixes

# Seconds between the graph being ready and scenario time 0 (the signal reaches every
# node well before).
START_LEAD_S = 1.0

# Exit statuses of the supervisor (and of `jwo launch`).
EXIT_OK = 0
EXIT_FAILED = 1         # a node could not start (missing executable, exec error)
EXIT_CONFIG = 2         # bad configuration (store config, or a node exited 2 at start)
NODE_CONFIG_ERROR = 2   # what run_node exits with on a ConfigError

LAUNCH_PREFIX = '[launch]'
_ANSI = re.compile(r'\x1b\[[0-9;?]*[A-Za-z]')


class LaunchError(Exception):
    """A node cannot be started at all (e.g. its executable is missing)."""


def _print_line(line: str) -> None:
    try:
        sys.stdout.write(line + '\n')
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass


def executable_candidates(executable: str, package: str = PACKAGE) -> list:
    """Where a node executable may be, in order: next to sys.executable (the venv's
    bin), on PATH, then <prefix>/lib/<package>/ of colcon/ament installs."""
    candidates = [Path(sys.executable).parent / executable]
    found = shutil.which(executable)
    if found:
        candidates.append(Path(found))
    candidates += [prefix / 'lib' / package / executable for prefix in install_prefixes()]
    return candidates


def resolve_executable(executable: str, package: str = PACKAGE) -> Optional[str]:
    """The path of a node executable, or None when it is nowhere to be found."""
    for candidate in executable_candidates(executable, package):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f'killed by {signal.Signals(-returncode).name}'
        except ValueError:
            return f'killed by signal {-returncode}'
    return f'exited with status {returncode}'


class _Child:
    """One ProcessSpec and its current process."""

    def __init__(self, spec: ProcessSpec, path: str, backoff: float):
        self.spec = spec
        self.path = path
        self.process: Optional[subprocess.Popen] = None
        self.reader: Optional[threading.Thread] = None
        self.started_at = 0.0
        self.starts = 0
        self.backoff = backoff
        self.next_start: Optional[float] = None   # monotonic time of a pending respawn
        self.finished = False                      # ended and will not be restarted
        self.last_returncode: Optional[int] = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Runs ProcessSpecs (or NodeSpecs, a process each), prefixes their output,
    restarts crashed ones.

        with Supervisor(store_graph(...)) as stack:   # start() ... stop()
            ...
            status = stack.poll()       # None while running, else the exit status

    start() raises LaunchError (starting nothing) when an executable is missing.
    A background thread watches the processes; poll()/wait() report the exit
    status once the supervisor has finished: EXIT_CONFIG when a node exited 2 at
    start-up, EXIT_FAILED when a node could not be executed (both also in
    .failure, a message), 0 after stop() or when every node exited 0 on its own.
    """

    def __init__(self, specs, *, log: Callable[[str], None] = _print_line,
                 resolve: Callable[[str, str], Optional[str]] = resolve_executable,
                 env: Optional[dict] = None, cwd=None,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 backoff_reset: float = 30.0, startup_grace: float = 10.0,
                 stop_timeout: float = 10.0, term_timeout: float = 5.0):
        self.specs = [ProcessSpec((spec,)) if isinstance(spec, NodeSpec) else spec for spec in specs]
        names = [fqn for spec in self.specs for fqn in spec.node_fqns]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f'duplicate node names: {", ".join(duplicates)}')
        self._log = log
        self._resolve = resolve
        self._env = env
        self._cwd = cwd
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_reset = backoff_reset
        self.startup_grace = startup_grace
        self.stop_timeout = stop_timeout
        self.term_timeout = term_timeout
        self._children: list = []
        self._log_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._done = threading.Event()
        self._monitor: Optional[threading.Thread] = None
        self._result: Optional[int] = None
        self.failure: Optional[str] = None

    # -- public API -------------------------------------------------------------

    def start(self) -> None:
        """Starts every node, in spec order, and the watcher thread."""
        if self._monitor is not None:
            raise RuntimeError('Supervisor.start() called twice')
        missing = []
        for spec in self.specs:
            path = self._resolve(spec.executable, spec.package)
            if path is None:
                missing.append(spec)
            else:
                self._children.append(_Child(spec, path, self.backoff_initial))
        if missing:
            self._children = []
            lines = [f'cannot start {spec.label}: executable {spec.executable!r} not found '
                     f'(looked next to {sys.executable}, on PATH and in <prefix>/lib/{spec.package}/'
                     '; is jwo_nodes installed?)' for spec in missing]
            raise LaunchError('\n'.join(lines))
        try:
            for child in self._children:
                self._spawn(child)
        except OSError as error:
            self._say(f'error: cannot start {child.spec.label}: {error}')
            self._shutdown_children()
            self._result = EXIT_FAILED
            raise LaunchError(f'cannot start {child.spec.label} ({child.path}): {error}') from error
        self._monitor = threading.Thread(target=self._watch, name='jwo-supervisor', daemon=True)
        self._monitor.start()

    def pid(self, fqn: str) -> Optional[int]:
        """The process id of the node named ``fqn`` (or of its container) while it
        runs, else None."""
        for child in self._children:
            if fqn in child.spec.node_fqns and child.running():
                return child.process.pid
        return None

    def poll(self) -> Optional[int]:
        """None while the supervisor runs, else its exit status."""
        return self._result if self._done.is_set() else None

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Waits until the supervisor has finished (or timeout); returns poll()."""
        if self._monitor is None:
            return self._result
        self._done.wait(timeout)
        return self.poll()

    def stop(self, timeout: Optional[float] = None) -> Optional[int]:
        """Stops every node (SIGINT, then SIGTERM, then SIGKILL) and returns the exit
        status: 0 unless a node had failed before. Idempotent."""
        if self._monitor is None:
            return self._result
        self._stop_requested.set()
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._monitor.is_alive():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self._monitor.join(0.2 if left is None else min(0.2, left))
        return self.poll()

    def pids(self) -> dict:
        """{fqn: pid} of the nodes running now (nodes of one container share a pid)."""
        return {fqn: child.process.pid for child in self._children
                if child.process is not None and child.process.returncode is None
                for fqn in child.spec.node_fqns}

    def starts(self) -> dict:
        """{fqn: how many times its process was started}."""
        return {fqn: child.starts for child in self._children for fqn in child.spec.node_fqns}

    def __enter__(self) -> 'Supervisor':
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------

    def _say(self, message: str) -> None:
        self._emit(f'{LAUNCH_PREFIX} {message}')

    def _emit(self, line: str) -> None:
        with self._log_lock:
            try:
                self._log(line)
            except Exception:  # a broken log sink must not stop the supervisor
                pass

    def _child_env(self) -> dict:
        env = dict(os.environ)
        if self._env:
            env.update(self._env)
        env.setdefault('PYTHONUNBUFFERED', '1')
        env['RCUTILS_COLORIZED_OUTPUT'] = '0'
        return env

    def _spawn(self, child: _Child) -> None:
        argv = [child.path, *child.spec.ros_args()]
        # Own session: Ctrl-C in the terminal reaches the supervisor only, which
        # forwards SIGINT once to every node (and its own child processes).
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, cwd=self._cwd,
                                   env=self._child_env(), start_new_session=True)
        child.process = process
        child.started_at = time.monotonic()
        child.starts += 1
        child.next_start = None
        child.reader = threading.Thread(target=self._pump, args=(child.spec.label, process.stdout),
                                        name=f'jwo-output {child.spec.label}', daemon=True)
        child.reader.start()
        again = f' (start {child.starts})' if child.starts > 1 else ''
        self._say(f'started {child.spec.label} (pid {process.pid}){again}')

    def _pump(self, label: str, pipe) -> None:
        prefix = f'[{label}] '
        try:
            for raw in iter(pipe.readline, b''):
                line = _ANSI.sub('', raw.decode('utf-8', errors='replace')).rstrip('\r\n')
                self._emit(prefix + line)
        except (OSError, ValueError):
            pass
        finally:
            try:
                pipe.close()
            except OSError:
                pass

    def _watch(self) -> None:
        try:
            while not self._stop_requested.is_set():
                if self._check_children():
                    break
                self._wake.wait(0.05)
                self._wake.clear()
        finally:
            self._shutdown_children()
            if self._result is None:
                self._result = EXIT_OK
            self._done.set()

    def _check_children(self) -> bool:
        """One round of watching; True when the supervisor is finished."""
        now = time.monotonic()
        for child in self._children:
            if child.process is not None and child.next_start is None and not child.finished:
                returncode = child.process.poll()
                if returncode is not None:
                    if self._on_exit(child, returncode, now):
                        return True
            if child.next_start is not None and now >= child.next_start:
                try:
                    self._spawn(child)
                except OSError as error:
                    self._fail(EXIT_FAILED, f'cannot restart {child.spec.label} ({child.path}): {error}')
                    return True
        if all(child.finished for child in self._children):
            failed = [c for c in self._children if c.last_returncode not in (0, None)]
            self._say('all nodes have ended')
            self._result = EXIT_FAILED if failed else EXIT_OK
            return True
        return False

    def _on_exit(self, child: _Child, returncode: int, now: float) -> bool:
        """Handles the end of a node's process; True when the supervisor must stop."""
        if child.reader is not None:
            child.reader.join(1.0)   # its last lines first, then why it ended
        child.last_returncode = returncode
        uptime = now - child.started_at
        label = child.spec.label
        status = _describe_status(returncode)
        if returncode == NODE_CONFIG_ERROR and uptime <= self.startup_grace:
            self._fail(EXIT_CONFIG, f'{label} cannot start: {status} after {uptime:.1f} s '
                                    '(configuration error, see its output above); not restarting it')
            return True
        if returncode == 0:
            self._say(f'{label} {status}; not restarting it')
            child.finished = True
            return False
        if not child.spec.respawn:
            self._say(f'{label} {status} after {uptime:.1f} s; respawn is off, not restarting it')
            child.finished = True
            return False
        if uptime >= self.backoff_reset:
            child.backoff = self.backoff_initial
        delay = child.backoff
        child.backoff = min(child.backoff * 2, self.backoff_max)
        child.next_start = now + delay
        self._say(f'{label} {status} after {uptime:.1f} s; restarting it in {delay:g} s')
        return False

    def _fail(self, status: int, message: str) -> None:
        self.failure = message
        self._result = status
        self._say(f'error: {message}; stopping the other nodes')

    def _shutdown_children(self) -> None:
        """SIGINT to every running node, then SIGTERM, then SIGKILL after timeouts."""
        for child in self._children:
            child.next_start = None
        running = [child for child in self._children if child.running()]
        if running:
            self._say(f'stopping {len(running)} node(s)')
        for child in running:
            self._signal(child, signal.SIGINT)
        running = self._wait_all(running, self.stop_timeout)
        if running:
            self._say(f'{", ".join(c.spec.label for c in running)} still running '
                      f'{self.stop_timeout:g} s after SIGINT; sending SIGTERM')
            for child in running:
                self._signal(child, signal.SIGTERM)
            running = self._wait_all(running, self.term_timeout)
        if running:
            self._say(f'{", ".join(c.spec.label for c in running)} ignored SIGTERM; sending SIGKILL')
            for child in running:
                self._signal(child, signal.SIGKILL)
            self._wait_all(running, None)
        for child in self._children:
            if child.reader is not None:
                child.reader.join(2.0)

    @staticmethod
    def _signal(child: _Child, signum: int) -> None:
        try:
            os.killpg(child.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _wait_all(children: list, timeout: Optional[float]) -> list:
        deadline = None if timeout is None else time.monotonic() + timeout
        for child in children:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                child.process.wait(left)
            except subprocess.TimeoutExpired:
                pass
        return [child for child in children if child.process.poll() is None]


def supervise(specs, on_turn: Callable[[], None] = lambda: None, **supervisor_options) -> int:
    """Runs specs until they fail or SIGINT/SIGTERM/SIGHUP arrives; the `jwo launch`
    main loop, calling ``on_turn`` about every 0.2 s. Returns 0 after a signal, else
    the supervisor's exit status."""
    signalled = threading.Event()
    received = []
    supervisor = Supervisor(specs, **supervisor_options)

    def on_signal(signum, frame):
        # No logging here: the main thread may hold the log lock right now. A second
        # signal changes nothing; the stop escalation timeouts run their course.
        received.append(signum)
        signalled.set()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    try:
        try:
            supervisor.start()
        except LaunchError as error:
            for line in str(error).splitlines():
                print(f'error: {line}', file=sys.stderr, flush=True)
            return EXIT_FAILED
        status = None
        while not signalled.is_set():
            status = supervisor.wait(0.2)
            if status is not None:
                break
            on_turn()
        if received:
            supervisor._say(f'{signal.Signals(received[0]).name} received, stopping')
        supervisor.stop()
        if supervisor.failure:
            print(f'error: {supervisor.failure}', file=sys.stderr, flush=True)
            return supervisor.poll()
        return EXIT_OK if signalled.is_set() else supervisor.poll()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _positive_float(text: str) -> float:
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}')
    if not value > 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'must be a positive number, got {text!r}')
    return value


def _non_negative_float(text: str) -> float:
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}')
    if not 0 <= value < float('inf'):
        raise argparse.ArgumentTypeError(f'must be >= 0, got {text!r}')
    return value


def _positive_int(text: str) -> int:
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}')
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {text!r}')
    return value


def add_shelves_per_process(parser) -> None:
    parser.add_argument('--shelves-per-process', type=_positive_int, default=SHELVES_PER_CONTAINER,
                        metavar='N', help='weight sensor nodes composed into one process (default '
                        f'{SHELVES_PER_CONTAINER}; 1: a process per shelf, as every other node has)')


def add_arguments(parser) -> None:
    parser.add_argument('store', help='store config, e.g. config/stores/demo.yaml')
    parser.add_argument('--scenario', metavar='FILE',
                        help='simulate the store from this scenario (sensor nodes get source:=sim)')
    parser.add_argument('--time-scale', type=_positive_float, default=1.0, metavar='X',
                        help='scenario seconds per wall second (default 1.0)')
    parser.add_argument('--start-delay', type=_non_negative_float, default=START_LEAD_S, metavar='S',
                        help='seconds from the graph being ready (every node up, every publisher-'
                             f'subscriber pair matched) to scenario time 0 (default {START_LEAD_S:g})')
    parser.add_argument('--params-dir', metavar='DIR',
                        help='where <executable>.yaml params files are (default: config/params)')
    parser.add_argument('--no-cameras', action='store_true', help='start no camera nodes')
    add_shelves_per_process(parser)
    parser.add_argument('--uplink', action='store_true',
                        help='also start uplink_node (receipts to the cloud ingest; see cloud/README.md) '
                             'and, with cameras, clip_node (review clips)')
    parser.add_argument('--live-cart', metavar='HANDOFF_DIR',
                        help="also start live_cart_node (the shoppers' live carts on their phones; "
                             "see README \"Live receipt\"); the gates hand each visit's token to the "
                             'shopper through access-<gate>.jsonl files in this folder')
    parser.add_argument('--staff-view', metavar='PIN_FILE',
                        help="also start staff_view_node (the associates' page: ID checks; see README "
                             '"Staff view"), signed into with the staff PIN in this file')


def run(args) -> int:
    params_dir = Path(args.params_dir) if args.params_dir else default_params_dir()
    if args.params_dir and not params_dir.is_dir():
        print(f'error: {args.params_dir}: <dir>: no such directory (--params-dir)',
              file=sys.stderr, flush=True)
        return EXIT_CONFIG
    try:
        # sim_start_ns 0: the simulated sensors wait for the start signal (GraphAnnouncer).
        specs = store_graph(args.store, params_dir=params_dir, scenario=args.scenario,
                            sim_start_ns=0, time_scale=args.time_scale,
                            with_cameras=not args.no_cameras, with_uplink=args.uplink,
                            live_cart_handoff=args.live_cart, staff_pin_file=args.staff_view)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr, flush=True)
        return EXIT_CONFIG
    processes = compose(specs, args.shelves_per_process)
    _print_line(f'{LAUNCH_PREFIX} store {args.store}: {len(specs)} nodes in {len(processes)} processes'
                + (f', scenario {args.scenario} at time scale {args.time_scale:g}, '
                   f'starting {args.start_delay:g} s after the graph is ready' if args.scenario else ''))
    from jwo_nodes.readiness_watch import GraphAnnouncer   # rclpy only where a graph runs
    announcer = GraphAnnouncer(specs, args.start_delay if args.scenario else None,
                               lambda line: _print_line(f'{LAUNCH_PREFIX} {line}'))
    try:
        return supervise(processes, on_turn=announcer.turn)
    finally:
        announcer.close()
