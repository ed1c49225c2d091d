"""weight_sensor_node: the load cells of one shelf.

Reads samples (grams per bin) from the simulator, from the shelf's HX711 board on a
serial port (protocol: jwo_nodes/core/hx711.py) or, with ``source: topic``, from its
own ``weight/raw`` topic as a bag replays it (``jwo replay``), detects settled weight
changes per bin (jwo_nodes/core/weight_detect.py) and publishes, under
/jwo/shelves/<shelf_id>:

- ``weight/raw``     jwo/WeightReading, every sample (SENSOR_QOS; not with
  ``source: topic``, where it is the input);
- ``weight/changes`` jwo/WeightChange, one per settled change of one bin
  (EVENT_QOS, event_id ``<shelf_id>/<seq>``);
- ``weight/status``  jwo/ShelfStatus at 5 Hz from the first sample on
  (EVENT_QOS; header.stamp: the newest sample): every change that ended at or
  before ``processed_until`` has been published before it.

Stamps: sim samples carry scenario time (``sim_start_ns + t``); serial samples the
node clock when their line arrived; replayed samples (``source: topic``) keep the
stamps of their messages. Bad lines and samples are counted on /diagnostics and
dropped; the node keeps running.

Restarts (``state_dir`` set): the node keeps the settled level of every bin in
``<state_dir>/shelf-<shelf_id>.json`` (written atomically after every new level, every
STATE_REFRESH_S of sample time so its stamp says how recent it is, and at shutdown).
A restarted node seeds its detector with it, so weight taken or put back while it was
down comes out as a change when the bin first settles after the restart: flagged
``restart = RESTART_SEEN`` and stamped at the first sample of that settled level (when
it happened is unknown), or ``RESTART_UNSURE`` when it cannot tell (levels older than
``state_max_age_s``, of other bins or unreadable; a bin that does not settle). See
jwo_nodes/core/weight_detect.py. A simulation restarts its stream from the beginning:
its stamps are not after the saved ones, and the state is not used.

Replay input (``source: topic``): the subscription is reliable and keeps every sample
(KEEP_ALL, matching the reliable publishers of ``jwo replay``), so a replay at any
speed, ``--max`` included, feeds the detector every recorded sample in order and the
changes come out the same. Samples are taken in batches every BATCH_S from a
subscription the executor does not wake up for (it belongs to a helper node that is
never spun): an executor wake-up per message costs several times the detector's work
on it (measured by ``jwo bench``). The status heartbeat follows the stamps while
samples flow (one per STATUS_PERIOD_S of stamp time, at most one per batch), and the
wall clock when they stop.
"""
import math
import queue
import threading
import time
from pathlib import Path

from jwo.msg import ShelfStatus, WeightChange, WeightReading
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from jwo_nodes.bag.cdr import read_weight_reading
from jwo_nodes.core import hx711
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.state_file import StateFileError, read_state, write_state
from jwo_nodes.core.weight_detect import (RESTART_NONE, RESTART_SEEN, RESTART_UNSURE,
                                          STAMP_ORDER, BadSample, ChangeDetector,
                                          DetectorSettings, SavedLevels)
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, EVENT_QOS, NO_PUBLISHER_EVENTS, NO_SUBSCRIPTION_EVENTS,
                                  REPLAY_INPUT_QOS, SENSOR_QOS, Counters, Param, SimStart, declare_params, run_node, shared_timer,
                                  to_stamp)

_DEFAULTS = DetectorSettings()

PARAMS = [
    Param('store_config', str, 'store configuration YAML file'),
    Param('shelf_id', str, 'id of this shelf in the store configuration'),
    Param('source', str, "'sim' (scenario timeline), 'topic' (the samples of its own "
          "weight/raw topic, e.g. from jwo replay) or the serial device path of the "
          "shelf's HX711 board (e.g. /dev/ttyUSB0)"),
    Param('baud', int, 'serial baud rate', 115200, 1200, 4_000_000),
    Param('rate_hz', int, 'samples per second of the board (sim: the simulated rate; '
          "topic: the rate of the replayed samples)", 50, 10, 80),
    Param('max_gap', int, 'a sequence jump of more than this many lines is a board '
          'restart, not lost lines', hx711.DEFAULT_MAX_GAP, 0, hx711.SEQ_MODULO // 2 - 1),
    # Detection (jwo_nodes/core/weight_detect.py).
    Param('settle_s', float, 'a new level must hold this long to be a change (s)',
          _DEFAULTS.settle_s, 0.2, 5.0),
    Param('trigger_k', float, 'a sample this many noise sigmas off the level starts a '
          'change', _DEFAULTS.trigger_k, 2.0, 20.0),
    Param('trigger_min_g', float, 'trigger band at least this wide (g)',
          _DEFAULTS.trigger_min_g, 0.5, 1000.0),
    Param('min_delta_g', float, 'smallest change reported (g)', _DEFAULTS.min_delta_g,
          1.0, 10000.0),
    Param('delta_k', float, 'smallest change reported, in noise sigmas',
          _DEFAULTS.delta_k, 0.0, 20.0),
    Param('settle_z', float, 'a settled window is as steady as pure noise is with '
          'the probability of a normal tail beyond this z', _DEFAULTS.settle_z, 1.0, 6.0),
    Param('drift_tau_s', float, 'time constant of the level following slow drift (s)',
          _DEFAULTS.drift_tau_s, 1.0, 3600.0),
    Param('noise_window_s', float, 'the noise estimate looks back this far (s)',
          _DEFAULTS.noise_window_s, 2.0, 600.0),
    Param('max_unsettled_s', float, 'a bin between levels this long is settled by force '
          '(s)', _DEFAULTS.max_unsettled_s, 2.0, 3600.0),
    # Restarts.
    Param('state_dir', str, 'folder of the state file that keeps the bin levels across '
          "restarts (shelf-<shelf_id>.json); '': none kept", ''),
    Param('state_max_age_s', float, 'levels saved longer than this before the first '
          'sample after a restart are not trusted: a difference is an unsure change (s)',
          300.0, 1.0, 604800.0),
    # Simulation.
    Param('scenario', str, "scenario YAML file (source 'sim')", ''),
    Param(SimStart.PARAM, int, SimStart.DESCRIPTION, 0, 0),
    Param('time_scale', float, "scenario seconds per wall second (source 'sim')",
          1.0, 0.001, 1000.0),
]

# Calibration (serial source), one value per bin or one for all bins:
# grams = (raw - offset) / scale.
ARRAY_PARAMS = {
    'calibration_offsets': ([0.0], 'HX711 raw count of each bin when empty (tare); one '
                            'value per bin (shelf order) or one for all'),
    'calibration_scales': ([1.0], 'HX711 counts per gram of each bin; one value per bin '
                           '(shelf order) or one for all'),
}

COUNTERS = ('samples', 'changes', hx711.MALFORMED, hx711.BAD_CHECKSUM,
            hx711.WRONG_BIN_COUNT, hx711.SATURATED, hx711.DUPLICATE, hx711.OUT_OF_ORDER,
            'dropped_lines', 'board_restarts', 'serial_errors', 'clock_step_back',
            'forced_settle', 'state_errors')

# No sample for this long (or for ten sample periods, when longer) and the shelf's
# status on /diagnostics is STALE.
SILENT_S = 5.0
STATUS_PERIOD_S = 0.2
# Samples are handled in batches this often (sim: published up to this late; serial:
# stamped on arrival by the reader thread). Each executor wake-up costs far more CPU
# than a sample, and a store runs dozens of these nodes on a small box. While a bin is
# changing, a replayed or serial sample is handled as it arrives instead, so a change
# goes out on the sample that settles it, not up to a batch later.
BATCH_S = 0.05
# A late sim timer publishes at most this many scenario seconds per tick, so the
# status heartbeat keeps going while it catches up.
CATCH_UP_S = 2.0
# source 'topic': at most this many samples per batch (the status heartbeat and the
# diagnostics keep going while a fast replay is worked off).
MAX_BATCH = 500
# The state file is rewritten at least this often (sample time) while samples flow,
# so its stamp tells how long the node was down, not how long the shelf stood still.
STATE_REFRESH_S = 30.0
RESTART_NOTES = {RESTART_NONE: '', RESTART_SEEN: ', changed while the node was down',
                 RESTART_UNSURE: ', after a restart: unsure'}


class WeightSensorNode(Node):

    def __init__(self, **node_options):
        # Before anything can fail: destroy_node() runs on a half-built node too.
        self._stop = threading.Event()
        self._serial = None
        self._input_node = None
        self._state_path = None
        super().__init__('weight_sensor_node', **node_options)
        self.params = p = declare_params(self, PARAMS)
        where = f'node {self.get_fully_qualified_name()}'
        self.store = load_store_config(p.store_config)
        if p.shelf_id not in self.store.shelves:
            raise ConfigError(p.store_config, 'shelves',
                              f'no shelf {p.shelf_id!r} (shelf_id parameter of {where}); '
                              f'known: {", ".join(sorted(self.store.shelves))}')
        self.shelf_id = p.shelf_id
        self.bin_ids = [b.id for b in self.store.shelves[p.shelf_id].bins]
        try:
            settings = DetectorSettings(
                settle_s=p.settle_s, trigger_k=p.trigger_k, trigger_min_g=p.trigger_min_g,
                min_delta_g=p.min_delta_g, delta_k=p.delta_k, settle_z=p.settle_z,
                drift_tau_s=p.drift_tau_s, noise_window_s=p.noise_window_s,
                max_unsettled_s=p.max_unsettled_s)
            self.detector = ChangeDetector(self.bin_ids, p.rate_hz, settings)
        except ValueError as error:
            raise ConfigError(where, 'detection parameters', str(error))
        self.counters = Counters(self, f'shelf/{self.shelf_id}', COUNTERS)
        wall_rate_hz = p.rate_hz * (p.time_scale if p.source == 'sim' else 1.0)
        self.counters.expect('samples', max(SILENT_S, 10 / wall_rate_hz))

        prefix = '' if self.get_namespace() != '/' else f'/jwo/shelves/{self.shelf_id}/'
        # With source 'topic' weight/raw is the input: nothing republishes it.
        self.raw_pub = (None if p.source == 'topic' else
                        self.create_publisher(WeightReading, f'{prefix}weight/raw', SENSOR_QOS,
                                              event_callbacks=NO_PUBLISHER_EVENTS))
        self.change_pub = self.create_publisher(WeightChange, f'{prefix}weight/changes', DURABLE_EVENT_QOS,
                                                event_callbacks=NO_PUBLISHER_EVENTS)
        self.status_pub = self.create_publisher(ShelfStatus, f'{prefix}weight/status', EVENT_QOS,
                                                event_callbacks=NO_PUBLISHER_EVENTS)
        # Sim runs and replays are deterministic (event ids from 1); a real shelf numbers
        # from its start time in ms, so event ids stay unique across restarts.
        self._next_event = (1 if p.source in ('sim', 'topic')
                            else time.time_ns() // 1_000_000)
        self._last_stamp = 0
        self._status_stamp = 0           # stamp of the newest sample at the last status
        self._status_wall = 0.0          # monotonic time of the last status
        self._thread = None
        self._resume = False             # saved levels wait for the first sample
        if p.state_dir:
            self._load_state(where)
        if p.source == 'sim':
            self._start_sim(where)
        elif p.source == 'topic':
            self._start_topic(f'{prefix}weight/raw')
        else:
            self._start_serial(where)
        shared_timer(self, STATUS_PERIOD_S, self._publish_status)
        self.get_logger().info(
            f'shelf {self.shelf_id} ({len(self.bin_ids)} bins, {p.rate_hz} Hz) reading '
            f'{p.source}, publishing on {self.change_pub.topic_name}')

    # -- samples to messages ---------------------------------------------------------

    def _sample(self, stamp_ns: int, grams) -> None:
        """One sample: detect, publish the reading and any settled changes."""
        if self._resume:
            self._resume = False
            self.get_logger().info(self.detector.resume(
                self._levels_before_restart, stamp_ns, int(self.params.state_max_age_s * 1e9)))
        try:
            changes = self.detector.feed(stamp_ns, grams)
        except BadSample as error:
            name = hx711.OUT_OF_ORDER if error.reason == STAMP_ORDER else hx711.MALFORMED
            self.counters.warn(name, str(error))
            return
        self._last_stamp = stamp_ns
        self.counters.count('samples')
        if self.raw_pub is not None:
            reading = WeightReading(shelf_id=self.shelf_id, bin_ids=self.bin_ids,
                                    bin_grams=[float(g) for g in grams])
            reading.header.stamp = to_stamp(stamp_ns)
            reading.header.frame_id = self.shelf_id
            self.raw_pub.publish(reading)
        for change in changes:
            self._publish_change(change, stamp_ns)
        if self._state_path is not None:
            self._keep_state(stamp_ns)

    # -- levels kept across restarts -------------------------------------------------

    def _load_state(self, where: str) -> None:
        folder = Path(self.params.state_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(where, 'state_dir', f'cannot create {folder}: {error}')
        self._state_path = folder / f'shelf-{self.shelf_id}.json'
        self._written_revision = self.detector.level_revision
        self._written_ns = 0
        try:
            document = read_state(self._state_path)
            if document is None:
                return           # a first start
            self._levels_before_restart = SavedLevels.from_document(document)
        except (StateFileError, ValueError) as error:
            self.counters.warn('state_errors', f'saved levels unusable: {error}')
            self._levels_before_restart = None
        self._resume = True

    def _keep_state(self, stamp_ns: int) -> None:
        """Saves the levels when a bin took a new one, else every STATE_REFRESH_S; not
        before the first level (a file saved before keeps saying what it knew then)."""
        revision = self.detector.level_revision
        if revision and (revision != self._written_revision
                         or stamp_ns - self._written_ns >= int(STATE_REFRESH_S * 1e9)):
            self._save_state()

    def _save_state(self) -> None:
        saved = self.detector.saved_levels()
        self._written_revision = self.detector.level_revision
        self._written_ns = saved.stamp_ns
        try:
            write_state(self._state_path, saved.to_document())
        except OSError as error:
            self.counters.warn('state_errors', f'cannot save the levels: {error}')

    def _publish_change(self, change, decided_ns: int) -> None:
        if change.forced:
            self.counters.warn('forced_settle', f'{change.bin_id} did not settle for '
                               f'{self.params.max_unsettled_s:g} s; took its median level')
        msg = WeightChange(event_id=f'{self.shelf_id}/{self._next_event}',
                           shelf_id=self.shelf_id, bin_ids=[change.bin_id],
                           delta_grams=[float(change.delta_grams)],
                           start_stamp=to_stamp(change.start_ns),
                           end_stamp=to_stamp(change.end_ns),
                           decided_stamp=to_stamp(decided_ns),
                           noise_grams=float(change.noise_grams), restart=change.restart)
        msg.header.stamp = to_stamp(change.end_ns)
        msg.header.frame_id = self.shelf_id
        self._next_event += 1
        self.counters.count('changes')
        self.change_pub.publish(msg)
        self.get_logger().info(f'{msg.event_id}: {change.bin_id} {change.delta_grams:+.1f} g '
                               f'(noise {change.noise_grams:.1f} g)'
                               + RESTART_NOTES[change.restart])

    def _publish_status(self) -> None:
        # Nothing to say before the first sample (and a restarted node must not tell
        # fusion that it knows less than it said before).
        if not self._last_stamp:
            return
        if (self.params.source == 'topic'
                and time.monotonic() - self._status_wall < 0.9 * STATUS_PERIOD_S):
            return  # samples are flowing: the batches send the status by stamp
        self._send_status()

    def _send_status(self) -> None:
        self._status_stamp = self._last_stamp
        self._status_wall = time.monotonic()
        msg = ShelfStatus(shelf_id=self.shelf_id,
                          processed_until=to_stamp(max(0, self.detector.processed_until_ns)),
                          changing=self.detector.changing)
        msg.header.stamp = to_stamp(self._last_stamp)
        msg.header.frame_id = self.shelf_id
        self.status_pub.publish(msg)

    # -- simulated load cells ------------------------------------------------------

    def _start_sim(self, where: str) -> None:
        p = self.params
        if not p.scenario:
            raise ConfigError(where, 'scenario', "required with source 'sim'")
        from jwo_nodes.core import sim  # the simulator is only needed in sim mode
        from jwo_nodes.core.loadcell_sim import LoadCellNoise, LoadCellSim
        scenario = sim.load_scenario(p.scenario, self.store)
        timeline = sim.Timeline(scenario, self.store)
        shelf_id = self.shelf_id
        self._loadcells = LoadCellSim(shelf_id, len(self.bin_ids), p.rate_hz,
                                      lambda t_ns: timeline.bin_grams(shelf_id, t_ns),
                                      seed=scenario.seed,
                                      noise=LoadCellNoise.from_scenario(scenario.noise))
        self._sim_start = SimStart(self, p.sim_start_ns)
        self._pending = None
        shared_timer(self, BATCH_S, self._sim_tick)

    def _sim_tick(self) -> None:
        """Publishes every sample that is due (none ahead of its time), catching up
        when the timer was late."""
        if self._sim_start.ns is None:
            return    # scenario time 0 is not known yet
        scale = self.params.time_scale
        now = self.get_clock().now().nanoseconds
        budget = int(CATCH_UP_S * self.params.rate_hz)
        for _ in range(budget):
            if self._pending is None:
                self._pending = self._loadcells.next()
            sample = self._pending
            if self._sim_start.ns + sample.t_ns / scale > now:
                return
            self._pending = None
            if sample.grams is None:
                self.counters.count('dropped_lines')
                continue
            self._sample(self._sim_start.ns + sample.t_ns, sample.grams)

    # -- replayed samples (source 'topic') -----------------------------------------

    def _start_topic(self, topic: str) -> None:
        # The input subscription lives on a helper node that no executor spins, so no
        # wake-up per message: _drain_topic takes what has arrived every BATCH_S. The
        # helper takes no global remapping (the launcher's __node:= is for this node).
        self._input_node = Node(f'{self.get_name()}_input', namespace=self.get_namespace(),
                                context=self.context, use_global_arguments=False,
                                start_parameter_services=False, enable_rosout=False)
        # Raw bytes, read by cdr.read_weight_reading: building rclpy's message was most
        # of the Python work per sample.
        self._input = self._input_node.create_subscription(
            WeightReading, self.resolve_topic_name(topic), self._reading_while_changing, REPLAY_INPUT_QOS,
            event_callbacks=NO_SUBSCRIPTION_EVENTS, raw=True)
        self._following = False
        shared_timer(self, BATCH_S, self._drain_topic)

    def _follow_topic(self) -> None:
        """While a bin is changing the executor spins the input node too, so each reading
        is handled as it arrives; at rest the readings wait for the next batch."""
        changing = self.detector.changing
        if changing == self._following or self.executor is None:
            return
        if changing:
            self.executor.add_node(self._input_node)
        else:
            self.executor.remove_node(self._input_node)
        self._following = changing

    def _reading_while_changing(self, data: bytes) -> None:
        # With what else has arrived: a replay at full speed is still taken in batches.
        self._reading(data)
        self._drain_topic()

    def _drain_topic(self) -> None:
        subscription = self._input
        handled = 0
        with subscription.handle:
            while handled < MAX_BATCH:
                taken = subscription.handle.take_message(subscription.msg_type, subscription.raw)
                if taken is None:
                    break
                handled += 1
                self._reading(taken[0])
        self._follow_topic()
        if self._last_stamp and (not self._status_stamp or self._last_stamp - self._status_stamp
                                 >= int(STATUS_PERIOD_S * 1e9)):
            self._send_status()

    def _reading(self, data: bytes) -> None:
        """One replayed reading (CDR bytes): checked against this shelf, then detected on."""
        try:
            msg = read_weight_reading(data)
        except ValueError as error:
            self.counters.warn(hx711.MALFORMED, f'unreadable reading on the topic of shelf {self.shelf_id}: '
                               f'{error}; dropped')
            return
        if msg.shelf_id != self.shelf_id or list(msg.bin_ids) != self.bin_ids:
            name = (hx711.WRONG_BIN_COUNT if msg.shelf_id == self.shelf_id
                    and len(msg.bin_ids) != len(self.bin_ids) else hx711.MALFORMED)
            self.counters.warn(name, f'reading of shelf {msg.shelf_id!r} bins '
                               f'{list(msg.bin_ids)} on the topic of shelf {self.shelf_id} '
                               f'bins {self.bin_ids}; dropped')
            return
        if len(msg.grams) != len(self.bin_ids):
            self.counters.warn(hx711.WRONG_BIN_COUNT, f'{len(msg.grams)} values for '
                               f'{len(self.bin_ids)} bins; dropped')
            return
        self._sample(msg.stamp_ns, msg.grams)

    # -- HX711 board on a serial port ------------------------------------------------

    def _start_serial(self, where: str) -> None:
        offsets = self._array_param('calibration_offsets', where)
        scales = self._array_param('calibration_scales', where)
        try:
            calibration = hx711.Calibration.per_bin(len(self.bin_ids), offsets, scales)
        except ValueError as error:
            raise ConfigError(where, 'calibration_offsets/calibration_scales', str(error))
        self._decoder = hx711.Decoder(len(self.bin_ids), calibration, self.params.max_gap)
        self._lines: 'queue.SimpleQueue[tuple]' = queue.SimpleQueue()
        self._serial = self._open_serial(where)
        self._thread = threading.Thread(target=self._read_serial, daemon=True,
                                        name=f'hx711-{self.shelf_id}')
        shared_timer(self, BATCH_S, self._drain)
        # While a bin is changing the reader wakes the executor on each line.
        self._line_arrived = self.create_guard_condition(self._drain)
        self._thread.start()

    def _array_param(self, name: str, where: str) -> list:
        default, description = ARRAY_PARAMS[name]
        value = self.declare_parameter(
            name, default, ParameterDescriptor(description=description, dynamic_typing=True,
                                               read_only=True)).value
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 and math.isfinite(v) for v in values):
            raise ConfigError(where, name, f'expected finite numbers ({description}), '
                              f'got {value!r}')
        return [float(v) for v in values]

    def _open_serial(self, where: str):
        import serial
        try:
            return serial.Serial(self.params.source, self.params.baud, timeout=0.2)
        except (serial.SerialException, OSError, ValueError) as error:
            raise ConfigError(where, 'source', f'cannot open serial device '
                              f'{self.params.source!r}: {error}')

    def _read_serial(self) -> None:
        """Reads the board; stamps each line on arrival; reopens the port with backoff
        when it drops out (unplugged, power cycled)."""
        import serial
        splitter = hx711.LineSplitter()
        backoff = 0.5
        while not self._stop.is_set():
            port = self._serial
            if port is None:
                try:
                    port = serial.Serial(self.params.source, self.params.baud, timeout=0.2)
                except (serial.SerialException, OSError) as error:
                    self.counters.warn('serial_errors', f'cannot reopen {self.params.source}: '
                                       f'{error}; retrying in {backoff:g} s')
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                self._serial = port
                splitter = hx711.LineSplitter()
                backoff = 0.5
                self.get_logger().info(f'serial device {self.params.source} reopened')
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as error:
                if self._stop.is_set():
                    return
                self.counters.warn('serial_errors', f'{self.params.source}: {error}')
                self._close_serial()
                self._stop.wait(backoff)
                continue
            if data:
                for line in splitter.feed(data):
                    self._lines.put((line, self.get_clock().now().nanoseconds))
                    if self.detector.changing:
                        self._line_arrived.trigger()

    def _close_serial(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except Exception:  # noqa: BLE001 - closing a broken port may fail any way
                pass

    def _drain(self) -> None:
        while True:
            try:
                line, stamp_ns = self._lines.get_nowait()
            except queue.Empty:
                return
            self._line(line, stamp_ns)

    def _line(self, line, stamp_ns: int) -> None:
        if line is None:
            self.counters.warn(hx711.MALFORMED, f'line longer than {hx711.MAX_LINE_BYTES} '
                               'bytes, dropped')
            return
        if not line.strip():
            return
        try:
            frame = self._decoder.decode(line)
        except hx711.ProtocolError as error:
            self.counters.warn(error.reason, str(error))
            return
        if frame.dropped:
            # warn() counts one; the counter counts lost lines.
            self.counters.count('dropped_lines', frame.dropped - 1)
            self.counters.warn('dropped_lines', f'{frame.dropped} lines lost before '
                               f'sequence number {frame.seq}')
        if frame.resync:
            self.counters.warn('board_restarts', f'sequence jumped to {frame.seq}; '
                               'the board restarted or was silent a long time')
        # Receipt stamps never go back (a system clock step would otherwise make every
        # following sample out of order).
        if stamp_ns <= self._last_stamp:
            if stamp_ns < self._last_stamp:
                self.counters.count('clock_step_back')
            stamp_ns = self._last_stamp + 1
        self._sample(stamp_ns, frame.grams)

    def destroy_node(self):
        self._stop.set()
        self._close_serial()
        if self._state_path is not None and self.detector.level_revision:
            self._save_state()   # its stamp: how recent the levels are at a planned stop
        if self._input_node is not None:
            if self._input_node.executor is not None:
                self._input_node.executor.remove_node(self._input_node)
            self._input_node.destroy_node()
            self._input_node = None
        return super().destroy_node()


def main(args=None):
    run_node(WeightSensorNode, args)


if __name__ == '__main__':
    main()
