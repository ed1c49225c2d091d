"""gate_node: one entry/exit gate. Reads the gate line protocol from the simulator,
stdin or a serial reader and publishes anonymous jwo/GateEvent on
/jwo/gates/<gate_id>/events. Credentials never leave this process (see
jwo_nodes/core/gate_logic.py).

Restarts (``state_dir`` set): the open visits (code, group size, opening stamp and the
salted credential hash of each; never a token) are kept in
``<state_dir>/gate-<gate_id>.json``, written atomically whenever a visit opens, closes
or expires, so a tap-out after a restart still finds its visit. The hashes only match
under the same salt: a configured ``salt`` is not written to the file (only a check
value that tells when it changed); a random one is kept in the file while visits are
open (a start without open visits draws a new one). With a random salt, whoever reads
the file can test guessed tokens against its hashes: configure the salt from a secret
where that matters.

Live cart: each ENTRY's access token (see jwo_nodes/core/visit_access.py) is appended
to the handoff file ``<access_dir>/access-<gate_id>.jsonl`` (0600), the stand-in for
the shopper's app, and only its SHA-256 is published, on /jwo/gates/<gate_id>/access
(jwo/VisitAccess, durable: a live cart service that starts later still learns it; a
restarted gate offers its open visits' hashes again).
"""
import os
import queue
import random
import secrets
import threading
import time
from pathlib import Path

from jwo.msg import GateEvent, GateStatus, VisitAccess

from jwo_nodes.core import gate_logic, visit_access
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.state_file import StateFileError, read_state, write_state
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, EVENT_QOS, Counters, Param, SimStart, declare_params,
                                  run_node, to_stamp)
from rclpy.node import Node

PARAMS = [
    Param('store_config', str, 'store configuration YAML file'),
    Param('gate_id', str, 'id of this gate in the store configuration'),
    Param('source', str, "'sim' (scenario timeline), 'stdin', or a serial device path "
          '(e.g. /dev/ttyUSB0) of the gate reader'),
    Param('baud', int, 'serial baud rate', 9600, 50, 4_000_000),
    Param('debounce_s', float, 'the same credential scanned again within this many '
          'seconds (by stamp) is a double scan and ignored', 3.0, 0.0, 60.0),
    Param('max_visit_s', float, 'an open visit is forgotten after this many seconds '
          '(its shopper walked out without tapping out)', 14400.0, 60.0, 604800.0),
    Param('salt', str, 'secret salt of the credential hashes (at least 16 characters); '
          "empty: a random salt per start (kept in the state file while visits are open)",
          ''),
    Param('state_dir', str, 'folder of the state file that keeps the open visits across '
          "restarts (gate-<gate_id>.json); '': none kept", ''),
    Param('access_dir', str, "folder of the handoff file that gives each visit's live-cart "
          "token to the shopper (access-<gate_id>.jsonl, 0600); '': tokens are not handed off "
          '(their hashes are published all the same)', ''),
    Param('scenario', str, "scenario YAML file (source 'sim')", ''),
    Param(SimStart.PARAM, int, SimStart.DESCRIPTION, 0, 0),
    Param('time_scale', float, "scenario seconds per wall second (source 'sim')",
          1.0, 0.001, 1000.0),
]

# How often a simulated gate looks for scenario time 0 until it has it (then it wakes
# when each line is due).
SIM_START_POLL_S = 0.05


class GateNode(Node):

    def __init__(self, **node_options):
        super().__init__('gate_node', **node_options)
        self._stop = threading.Event()
        self._serial = None
        self.params = p = declare_params(self, PARAMS)
        where = f'node {self.get_fully_qualified_name()}'
        self.store = load_store_config(p.store_config)
        if p.gate_id not in self.store.gates:
            raise ConfigError(p.store_config, 'gates',
                              f'no gate {p.gate_id!r} (gate_id parameter of {where}); '
                              f'known: {", ".join(sorted(self.store.gates))}')
        if p.salt and len(p.salt) < 16:
            raise ConfigError(where, 'salt', 'must be empty (random) or at least 16 characters')
        self.gate_id = p.gate_id
        self.counters = Counters(self, f'gate/{self.gate_id}', gate_logic.COUNTER_NAMES
                                 + ('serial_errors', 'serial_reopens', 'clock_step_back',
                                    'state_errors', 'handoff_errors'))
        self._state_path = None
        saved = self._load_state(where) if p.state_dir else None
        random_bytes = secrets.token_bytes
        if p.source == 'sim':
            # A restarted simulated gate plays its scenario's lines from the start again:
            # that rebuilds its visits, their event ids and (drawn from a generator seeded
            # by the scenario) their codes exactly as before.
            saved = None
            random_bytes = random.Random(f'{p.scenario}:{self.gate_id}').randbytes
        # Sim runs are deterministic (event ids from 1); a real gate numbers from its
        # start time in ms, so event ids stay unique across restarts.
        first_seq = 1 if p.source == 'sim' else time.time_ns() // 1_000_000
        salt = self._salt(saved)
        # A random salt is saved with the visits: their hashes only match under it.
        self._saved_salt = None if p.salt else salt.hex()
        self.logic = gate_logic.GateLogic(
            self.gate_id, debounce_ns=int(p.debounce_s * 1e9),
            max_visit_ns=int(p.max_visit_s * 1e9), salt=salt, random_bytes=random_bytes,
            first_seq=first_seq)
        if saved is not None:
            self._restore_visits(saved)
        if self._state_path is not None:
            self._save_state()
        if p.access_dir:
            try:
                Path(p.access_dir).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ConfigError(where, 'access_dir', f'cannot create {p.access_dir}: {error}')
        prefix = '' if self.get_namespace() != '/' else f'/jwo/gates/{self.gate_id}/'
        self.publisher = self.create_publisher(GateEvent, f'{prefix}events', DURABLE_EVENT_QOS)
        self.status_publisher = self.create_publisher(GateStatus, f'{prefix}status', EVENT_QOS)
        self.access_publisher = self.create_publisher(VisitAccess, f'{prefix}access', DURABLE_EVENT_QOS)
        self._last_event_id = ''
        # The restored visits' ENTRY events and token hashes, again: a consumer that
        # starts after this restart (the tracker, the live cart) learns the codes of
        # the shoppers already inside.
        for access in self.logic.accesses():
            self._publish_access(access)
        for event in self.logic.entry_events():
            self._publish_event(event)
        self._lines: 'queue.Queue[tuple]' = queue.Queue()
        self._last_receipt_ns = 0
        # A reader stamps a line and queues it in one step: a status stamped after it
        # finds it queued.
        self._stamp_lock = threading.Lock()
        self._thread = None
        if p.source == 'sim':
            self._start_sim(where)
        elif p.source == 'stdin':
            self._thread = threading.Thread(target=self._read_stdin, daemon=True)
        else:
            self._serial = self._open_serial(where)
            self._thread = threading.Thread(target=self._read_serial, daemon=True)
        if self._thread is not None:
            # The reader thread wakes the executor for each thing it hands over.
            self._wake = self.create_guard_condition(self._drain)
            self._thread.start()
        self.create_timer(gate_logic.STATUS_PERIOD_S, self._publish_status)
        self.get_logger().info(f'gate {self.gate_id} reading {p.source}, publishing on '
                               f'{self.publisher.topic_name}')

    def _publish_status(self) -> None:
        """Publishes the lines due (sim) or read (a reader) by now, then that every event
        stamped before now is out."""
        if self.params.source == 'sim':
            if self._sim_start.ns is None:
                return    # scenario time 0 is not known yet
            now = self.get_clock().now().nanoseconds
            self._sim_tick(now)
            until = self._sim_start.ns + int((now - self._sim_start.ns) * self.params.time_scale)
        else:
            with self._stamp_lock:
                until = self._receipt_stamp()
            self._drain()
        msg = GateStatus(gate_id=self.gate_id, processed_until=to_stamp(until),
                         last_event_id=self._last_event_id)
        msg.header.stamp = to_stamp(until)
        msg.header.frame_id = self.gate_id
        self.status_publisher.publish(msg)

    # -- open visits kept across restarts ----------------------------------------------

    def _load_state(self, where: str):
        """The saved document, or None (a first start, or unusable)."""
        folder = Path(self.params.state_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(where, 'state_dir', f'cannot create {folder}: {error}')
        self._state_path = folder / f'gate-{self.gate_id}.json'
        try:
            return read_state(self._state_path)
        except StateFileError as error:
            self.counters.warn('state_errors', f'saved visits unusable: {error}')
            return None

    def _salt(self, saved) -> bytes:
        """The configured salt; else the saved random one while it has open visits to
        match; else a new one."""
        if self.params.salt:
            return self.params.salt.encode('utf-8')
        if saved and saved.get('visits'):
            try:
                salt = bytes.fromhex(saved.get('salt'))
            except (TypeError, ValueError):
                salt = b''   # restore_visits() reports the mismatch
            if len(salt) == gate_logic.SALT_BYTES:
                return salt
        return secrets.token_bytes(gate_logic.SALT_BYTES)

    def _restore_visits(self, saved: dict) -> None:
        try:
            count = self.logic.restore_visits(saved)
        except ValueError as error:
            self.counters.warn('state_errors', f'saved visits not restored: {error}')
            return
        self._sync_counts()
        self.get_logger().info(f'{count} open visits restored from {self._state_path}')

    def _save_state(self) -> None:
        document = self.logic.export_visits()
        if self._saved_salt is not None:
            document['salt'] = self._saved_salt
        self._written_revision = self.logic.revision
        try:
            write_state(self._state_path, document)
        except OSError as error:
            self.counters.warn('state_errors', f'cannot save the open visits: {error}')

    # -- sources -------------------------------------------------------------------

    def _start_sim(self, where: str) -> None:
        p = self.params
        if not p.scenario:
            raise ConfigError(where, 'scenario', "required with source 'sim'")
        from jwo_nodes.core import sim  # the simulator is only needed in sim mode
        timeline = sim.Timeline(sim.load_scenario(p.scenario, self.store), self.store)
        self._sim_lines = list(timeline.gate_lines(self.gate_id))
        self._sim_next = 0
        self._sim_start = SimStart(self, p.sim_start_ns)
        self._sim_timer = self.create_timer(SIM_START_POLL_S, self._sim_tick)

    def _sim_tick(self, now=None) -> None:
        """Publishes the lines due (by ``now``, default the clock), then sleeps until the
        next one is."""
        if self._sim_start.ns is None:
            return    # scenario time 0 is not known yet
        if now is None:
            now = self.get_clock().now().nanoseconds
        while self._sim_next < len(self._sim_lines):
            t_ns, line = self._sim_lines[self._sim_next]
            due_ns = self._sim_start.ns + t_ns / self.params.time_scale
            if due_ns > now:
                self.destroy_timer(self._sim_timer)
                self._sim_timer = self.create_timer((due_ns - now) / 1e9, self._sim_tick)
                return
            self._sim_next += 1
            self._handle(line, self._sim_start.ns + int(t_ns))
        self.destroy_timer(self._sim_timer)

    def _receipt_stamp(self) -> int:
        """Node clock at receipt, never going back (a system clock step would otherwise
        make every following line out of order)."""
        now = self.get_clock().now().nanoseconds
        if now < self._last_receipt_ns:
            self._queue_warning('clock_step_back', 'system clock stepped back; '
                                'stamping with the last receipt time')
            now = self._last_receipt_ns
        self._last_receipt_ns = now
        return now

    def _read_stdin(self) -> None:
        assembler = gate_logic.LineAssembler()
        while not self._stop.is_set():
            try:
                data = os.read(0, 4096)
            except OSError as error:
                self.get_logger().warning(f'stdin: {error}')
                return
            if not data:
                self.get_logger().info('stdin closed; no more gate lines')
                return
            self._queue_lines(assembler, data)

    def _queue_lines(self, assembler, data: bytes) -> None:
        for line in assembler.feed(data):
            with self._stamp_lock:
                self._hand_over(('line', line, self._receipt_stamp()))

    def _queue_warning(self, name: str, message: str) -> None:
        # Counters belong to the executor thread: reader threads hand warnings over.
        self._hand_over(('warn', name, message))

    def _hand_over(self, item: tuple) -> None:
        self._lines.put(item)
        self._wake.trigger()

    def _open_serial(self, where: str):
        import serial
        try:
            return serial.Serial(self.params.source, self.params.baud, timeout=0.2)
        except (serial.SerialException, OSError, ValueError) as error:
            raise ConfigError(where, 'source', f'cannot open serial device '
                              f'{self.params.source!r}: {error}')

    def _read_serial(self) -> None:
        """Reads the serial reader; reopens it with backoff when it drops out
        (unplugged, power cycled)."""
        import serial
        backoff = 0.5
        assembler = gate_logic.LineAssembler()
        while not self._stop.is_set():
            port = self._serial
            if port is None:
                try:
                    port = serial.Serial(self.params.source, self.params.baud, timeout=0.2)
                except (serial.SerialException, OSError) as error:
                    self._queue_warning('serial_errors', f'cannot reopen {self.params.source}: '
                                        f'{error}; retrying in {backoff:g} s')
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                self._serial = port
                assembler = gate_logic.LineAssembler()
                backoff = 0.5
                self._hand_over(('info', 'serial_reopens',
                                 f'serial device {self.params.source} reopened'))
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as error:
                if self._stop.is_set():
                    return
                self._queue_warning('serial_errors', f'{self.params.source}: {error}')
                self._close_serial()
                self._stop.wait(backoff)
                continue
            if data:
                self._queue_lines(assembler, data)

    def _close_serial(self) -> None:
        port, self._serial = getattr(self, '_serial', None), None
        if port is not None:
            try:
                port.close()
            except Exception:  # noqa: BLE001 - closing a broken port may fail any way
                pass

    def _drain(self) -> None:
        while True:
            try:
                kind, first, second = self._lines.get_nowait()
            except queue.Empty:
                return
            if kind == 'warn':
                self.counters.warn(first, second)
            elif kind == 'info':
                self.counters.count(first)
                self.get_logger().info(second)
            else:
                self._handle(first, second)

    # -- lines to events -----------------------------------------------------------

    def _handle(self, line, stamp_ns: int) -> None:
        if line is None:
            self.logic.counts['lines'] += 1
            self.logic.counts[gate_logic.MALFORMED] += 1
            self._warn(gate_logic.MALFORMED, 'line too long, dropped')
            return
        result = self.logic.feed(line, stamp_ns)
        if self._state_path is not None and self.logic.revision != self._written_revision:
            self._save_state()   # before the event: no published visit is ever unsaved
        if result.access is not None:
            self._issue_access(result.access)
        if result.outcome == gate_logic.EVENT:
            self._publish_event(result.event)
        elif result.outcome in (gate_logic.MALFORMED, gate_logic.OUT_OF_ORDER,
                                gate_logic.EXIT_WITHOUT_ENTRY):
            self._warn(result.outcome, result.problem)
        elif result.outcome != gate_logic.BLANK:
            self.get_logger().info(f'{result.outcome}: {result.problem}',
                                   throttle_duration_sec=1.0)
        self._sync_counts()

    def _warn(self, name: str, problem: str) -> None:
        # Counters.warn counts once; the logic already counted, so mirror after it.
        self.counters.warn(name, problem)
        self._sync_counts()

    def _sync_counts(self) -> None:
        self.counters.values.update(self.logic.counts)

    def _issue_access(self, issued: visit_access.AccessGrant) -> None:
        """Hands the token to the shopper, then publishes its hash (before the ENTRY
        event, so the live cart knows the visit by the time anything happens in it)."""
        if self.params.access_dir:
            try:
                visit_access.append_handoff(self.params.access_dir, issued)
            except OSError as error:
                self.counters.warn('handoff_errors', f'live-cart token not handed off: {error}')
        self._publish_access(issued.access)

    def _publish_access(self, access: visit_access.VisitAccess) -> None:
        msg = VisitAccess(gate_id=access.gate_id, visit_code=access.visit_code,
                          token_sha256=list(access.token_sha256))
        msg.header.stamp = to_stamp(access.stamp_ns)
        msg.header.frame_id = access.gate_id
        self.access_publisher.publish(msg)

    def _publish_event(self, event: gate_logic.GateEventData) -> None:
        self.publisher.publish(self._message(event))
        self._last_event_id = event.event_id

    def _message(self, event: gate_logic.GateEventData) -> GateEvent:
        msg = GateEvent(event_id=event.event_id, gate_id=event.gate_id,
                        direction=event.direction, visit_code=event.visit_code,
                        credential_kind=event.credential_kind, group_size=event.group_size)
        msg.header.stamp = to_stamp(event.stamp_ns)
        msg.header.frame_id = event.gate_id
        return msg

    def destroy_node(self):
        self._stop.set()
        self._close_serial()
        return super().destroy_node()


def main(args=None):
    run_node(GateNode, args)


if __name__ == '__main__':
    main()
