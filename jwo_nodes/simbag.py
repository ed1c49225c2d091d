"""`jwo simbag`: a scenario written to a bag, as the store's sensors would have recorded it.

    jwo simbag config/scenarios/demo.yaml -o runs/demo-bag [--store config/stores/demo.yaml]
    jwo scenario --preset hard --seed 3 --bag runs/hard-3-bag

The simulator plays the scenario (jwo_nodes.core.sim) and the bag gets what the store's
sensor nodes would have published, CDR-serialized, through the BagWriter (rosbag2 MCAP):

* ``/jwo/shelves/<id>/weight/raw`` (WeightReading) of every shelf at the configured
  rate (``rate_hz`` of config/params/weight_sensor_node.yaml, or ``--rate-hz``), with
  the scenario's load-cell noise (jwo_nodes.core.loadcell_sim, the same samples the
  sim-mode weight_sensor_node produces);
* ``/jwo/gates/<id>/events`` (GateEvent): the scenario's gate lines run through the
  gate logic (jwo_nodes.core.gate_logic), visit codes from a random source seeded by
  the scenario seed and the gate id;
* ``/jwo/gates/<id>/status`` (GateStatus) every STATUS_PERIOD_S (0.2 s) of scenario
  time, after the events up to its stamp, as the gate node publishes it;
* ``/jwo/shoppers/positions`` (ShopperPositions) at the tracker rate (10 Hz), visit
  codes assigned at the ENTRY events (jwo_nodes.core.tracker_sim, shared with
  shopper_sim_node);
* ``/jwo/ground_truth`` (GroundTruth, JSON documents with a ``kind``), for scoring only:
  ``scenario`` first (name, seed, epoch, duration, rates, the store config and the
  scenario text, so the bag is self-contained), an ``entry`` per party (gate, stamp,
  visit code, event id), a ``weight_event`` per true change of weight (bin, stamps,
  grams, who), and an ``expected_receipt`` per party at its exit (the receipt a perfect
  system issues, integer cents).

Every stamp is scenario time + EPOCH_NS, log time = stamp, messages in stamp order, CDR
with zeroed padding (jwo_nodes.bag.cdr): the same scenario and options give the same
bag, byte for byte. The bag is written to a
``.part`` file and renamed when complete (BagWriter), so an interrupted run leaves
nothing that looks like a bag. Exit status 2 for a bad scenario or store config (one
line naming the file and key), 1 when the bag cannot be written.
"""
import hashlib
import heapq
import itertools
import json
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml
from rclpy.serialization import deserialize_message

from jwo.msg import GateEvent, GateStatus, GroundTruth, ShopperPosition, ShopperPositions, WeightReading

from jwo_nodes.bag import cdr
from jwo_nodes.bag.format import BagError, BagReader, BagWriter, CorruptBagError
from jwo_nodes.core import gate_logic
from jwo_nodes.core.config import ConfigError, StoreConfig, load_store_config
from jwo_nodes.core.loadcell_sim import LoadCellNoise, LoadCellSim
from jwo_nodes.core.sim import NS, Scenario, Timeline, load_scenario, stable_seed
from jwo_nodes.core.tracker_sim import TrackerSim

# Scenario time 0 is stamped 2024-01-01T00:00:00Z.
EPOCH_NS = 1_704_067_200 * NS
FORMAT_VERSION = 1

GROUND_TRUTH_TOPIC = '/jwo/ground_truth'
POSITIONS_TOPIC = '/jwo/shoppers/positions'
DEFAULT_WEIGHT_RATE_HZ = 50
DEFAULT_TRACKER_RATE_HZ = 10.0

# The QoS the live publishers offer (ros_common.SENSOR_QOS / EVENT_QOS /
# DURABLE_EVENT_QOS), as recorded.
SENSOR_QOS = {'history': 'keep_last', 'depth': 5, 'reliability': 'best_effort',
              'durability': 'volatile'}
EVENT_QOS = {'history': 'keep_last', 'depth': 1000, 'reliability': 'reliable',
             'durability': 'volatile'}
DURABLE_EVENT_QOS = dict(EVENT_QOS, durability='transient_local')

# Ground-truth document kinds.
SCENARIO, ENTRY, WEIGHT_EVENT, EXPECTED_RECEIPT = 'scenario', 'entry', 'weight_event', 'expected_receipt'


def raw_topic(shelf_id: str) -> str:
    return f'/jwo/shelves/{shelf_id}/weight/raw'


def gate_topic(gate_id: str) -> str:
    return f'/jwo/gates/{gate_id}/events'


def gate_status_topic(gate_id: str) -> str:
    return f'/jwo/gates/{gate_id}/status'


def configured_rate(executable: str, name: str, default, params_dir=None):
    """A rate from config/params/<executable>.yaml (the value the nodes run with), or
    ``default`` when the file or the key is not there."""
    from jwo_nodes.graph import default_params_dir
    params_dir = default_params_dir() if params_dir is None else Path(params_dir)
    if params_dir is None:
        return default
    try:
        document = yaml.safe_load((Path(params_dir) / f'{executable}.yaml').read_text())
        value = document[f'/**/{executable}']['ros__parameters'][name]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return default
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default


# ---------------------------------------------------------------- serialization

def _stamp(stamp_ns: int) -> tuple:
    return divmod(int(stamp_ns), NS)


class ReadingEncoder:
    """CDR bytes of one shelf's WeightReadings, fast: the bytes of a reading differ only
    in the stamp and the grams (shelf id, frame id and bin ids are the same every time),
    so they are packed into a template serialized once (jwo_nodes.bag.cdr). The first
    reading is checked against the full serializer, byte for byte."""

    def __init__(self, shelf_id: str, bin_ids: list):
        self.shelf_id = shelf_id
        self.bin_ids = list(bin_ids)
        self._template = cdr.serialize(self._message(0, [0.0] * len(bin_ids)))
        self._grams_at = len(self._template) - 8 * len(bin_ids)
        self._grams = struct.Struct(f'<{len(bin_ids)}d')
        self._checked = False

    def _message(self, stamp_ns: int, grams) -> WeightReading:
        msg = WeightReading(shelf_id=self.shelf_id, bin_ids=self.bin_ids,
                            bin_grams=[float(g) for g in grams])
        msg.header.stamp.sec, msg.header.stamp.nanosec = _stamp(stamp_ns)
        msg.header.frame_id = self.shelf_id
        return msg

    def encode(self, stamp_ns: int, grams) -> bytes:
        data = bytearray(self._template)
        struct.pack_into('<iI', data, 4, *_stamp(stamp_ns))
        self._grams.pack_into(data, self._grams_at, *grams)
        data = bytes(data)
        if not self._checked:
            if data != cdr.serialize(self._message(stamp_ns, grams)):
                raise RuntimeError(f'fast WeightReading encoding of shelf {self.shelf_id} differs '
                                   'from the CDR serializer')
            self._checked = True
        return data


def _gate_event_bytes(event: gate_logic.GateEventData) -> bytes:
    msg = GateEvent(event_id=event.event_id, gate_id=event.gate_id, direction=event.direction,
                    visit_code=event.visit_code, credential_kind=event.credential_kind,
                    group_size=event.group_size)
    msg.header.stamp.sec, msg.header.stamp.nanosec = _stamp(event.stamp_ns)
    msg.header.frame_id = event.gate_id
    return cdr.serialize(msg)


def _gate_status_bytes(gate_id: str, stamp_ns: int, last_event_id: str) -> bytes:
    msg = GateStatus(gate_id=gate_id, last_event_id=last_event_id)
    msg.header.stamp.sec, msg.header.stamp.nanosec = _stamp(stamp_ns)
    msg.processed_until.sec, msg.processed_until.nanosec = _stamp(stamp_ns)
    msg.header.frame_id = gate_id
    return cdr.serialize(msg)


def _ground_truth_bytes(stamp_ns: int, document: dict) -> bytes:
    msg = GroundTruth(json=json.dumps(document, sort_keys=True, separators=(',', ':')))
    msg.header.stamp.sec, msg.header.stamp.nanosec = _stamp(stamp_ns)
    msg.header.frame_id = 'ground_truth'
    return cdr.serialize(msg)


# ---------------------------------------------------------------- the play

@dataclass
class SimBagSummary:
    bag: Path
    messages: int
    topics: dict                   # topic -> message count
    duration_ns: int
    weight_rate_hz: int
    tracker_rate_hz: float
    parties: int
    weight_events: int
    gate_lines_dropped: dict = field(default_factory=dict)
    wall_s: float = 0.0


def gate_events(timeline: Timeline, epoch_ns: int = EPOCH_NS) -> tuple:
    """Runs every gate's scenario lines through the gate logic, as the sim-mode gate
    node would, with visit codes from a random source seeded by the scenario seed and
    the gate id. Returns (events sorted by stamp, {outcome: count} of dropped lines)."""
    seed = timeline.scenario.seed
    events, dropped = [], Counter()
    for gate_id in sorted(timeline.store.gates):
        rng = np.random.default_rng(stable_seed('simbag-gate', seed, gate_id))
        salt = hashlib.sha256(f'jwo simbag {seed} {gate_id}'.encode()).digest()
        logic = gate_logic.GateLogic(gate_id, salt=salt, random_bytes=lambda n, rng=rng: rng.bytes(n),
                                     first_seq=1)
        for t_ns, line in timeline.gate_lines(gate_id):
            result = logic.feed(line, epoch_ns + t_ns)
            if result.outcome == gate_logic.EVENT:
                events.append(result.event)
            elif result.outcome != gate_logic.BLANK:
                dropped[result.outcome] += 1
    events.sort(key=lambda e: (e.stamp_ns, e.gate_id, e.event_id))
    return events, dict(dropped)


def ground_truth_documents(timeline: Timeline, events: list, *, epoch_ns: int, weight_rate_hz: int,
                           tracker_rate_hz: float, store_text: str, scenario_text: str,
                           store_file: str = '', scenario_file: str = '') -> list:
    """(stamp_ns, document) of the ground-truth topic, in stamp order."""
    scenario, store = timeline.scenario, timeline.store
    parties = [p.id for p in scenario.parties]
    documents = [(epoch_ns, {
        'kind': SCENARIO, 'format': FORMAT_VERSION, 'name': scenario.name, 'seed': scenario.seed,
        'store_id': store.store_id, 'epoch_ns': epoch_ns, 'duration_ns': timeline.duration_ns,
        'weight_rate_hz': weight_rate_hz, 'tracker_rate_hz': tracker_rate_hz,
        'parties': parties, 'shelves': sorted(store.shelves), 'gates': sorted(store.gates),
        'store_file': store_file, 'store_config': store_text,
        'scenario_file': scenario_file, 'scenario': scenario_text})]
    code_of_party = {}
    for event in events:
        if event.direction != gate_logic.ENTRY:
            continue
        party = timeline.party_at_entry(event.gate_id, event.stamp_ns - epoch_ns)
        if party is None or party in code_of_party:
            continue
        code_of_party[party] = event.visit_code
        documents.append((event.stamp_ns, {
            'kind': ENTRY, 'party': party, 'gate_id': event.gate_id, 'stamp_ns': event.stamp_ns,
            'visit_code': event.visit_code, 'event_id': event.event_id,
            'group_size': event.group_size}))
    for e in timeline.weight_events:
        documents.append((epoch_ns + e.end_ns, {
            'kind': WEIGHT_EVENT, 'bin_id': e.bin_id, 'shelf_id': e.shelf_id,
            'start_ns': epoch_ns + e.start_ns, 'ramp_start_ns': epoch_ns + e.ramp_start_ns,
            'end_ns': epoch_ns + e.end_ns, 'delta_grams': e.delta_grams,
            'press_grams': e.press_grams, 'party': e.party_id, 'person': e.person_id,
            'sku': e.sku, 'n': e.n}))
    last_exit = {}
    for t_ns, _, party, _ in timeline.exits:
        last_exit[party] = max(t_ns, last_exit.get(party, t_ns))
    for party in parties:
        exit_ns = epoch_ns + last_exit.get(party, timeline.duration_ns)
        documents.append((exit_ns, {
            'kind': EXPECTED_RECEIPT, 'party': party, 'visit_code': code_of_party.get(party, ''),
            'exit_stamp_ns': exit_ns, 'receipt': timeline.expected_receipt(party, epoch_ns)}))
    documents.sort(key=lambda d: d[0])  # stable: equal stamps keep the order above
    return documents


def _streams(timeline: Timeline, store: StoreConfig, *, epoch_ns: int, weight_rate_hz: int,
             tracker_rate_hz: float, events: list, documents: list) -> list:
    """One iterator per source of (stamp_ns, rank, seq, topic, bytes), each in stamp
    order; rank orders equal stamps across sources (ground truth, gates, tracker, shelves)."""
    duration = timeline.duration_ns

    def truth():
        for seq, (stamp, document) in enumerate(documents):
            yield stamp, 0, seq, GROUND_TRUTH_TOPIC, _ground_truth_bytes(stamp, document)

    def gates():
        """The gates' events and, every STATUS_PERIOD_S, each gate's status after the
        events up to its stamp, as the gate nodes publish them."""
        seq, last, pending = itertools.count(), dict.fromkeys(store.gates, ''), iter(events)
        event = next(pending, None)
        period = int(gate_logic.STATUS_PERIOD_S * NS)
        for stamp in range(epoch_ns, epoch_ns + duration + 1, period):
            while event is not None and event.stamp_ns <= stamp:
                yield event.stamp_ns, 1, next(seq), gate_topic(event.gate_id), _gate_event_bytes(event)
                last[event.gate_id] = event.event_id
                event = next(pending, None)
            for gate_id in sorted(store.gates):
                yield stamp, 1, next(seq), gate_status_topic(gate_id), _gate_status_bytes(gate_id, stamp,
                                                                                          last[gate_id])
        while event is not None:
            yield event.stamp_ns, 1, next(seq), gate_topic(event.gate_id), _gate_event_bytes(event)
            event = next(pending, None)

    def tracker():
        frames = TrackerSim(timeline, tracker_rate_hz)
        entries = [e for e in events if e.direction == gate_logic.ENTRY]
        applied = 0
        for k in range(frames.frame_count):
            t = frames.frame_time(k)
            if t is None:
                continue
            # Visit codes from the ENTRY events up to this frame (the live stand-in
            # assigns them as the events arrive).
            while applied < len(entries) and entries[applied].stamp_ns - epoch_ns <= t:
                entry = entries[applied]
                frames.on_entry(entry.gate_id, entry.stamp_ns - epoch_ns, entry.visit_code)
                applied += 1
            msg = ShopperPositions(shoppers=[
                ShopperPosition(track_id=s.track_id, visit_code=s.visit_code, x=s.x, y=s.y,
                                confidence=s.confidence) for s in frames.shoppers(t)])
            stamp = epoch_ns + t
            msg.header.stamp.sec, msg.header.stamp.nanosec = _stamp(stamp)
            msg.header.frame_id = 'floor'
            yield stamp, 2, k, POSITIONS_TOPIC, cdr.serialize(msg)

    def shelf(rank: int, shelf_id: str):
        bin_ids = [b.id for b in store.shelves[shelf_id].bins]
        cells = LoadCellSim(shelf_id, len(bin_ids), weight_rate_hz,
                            lambda t_ns: timeline.bin_grams(shelf_id, t_ns),
                            seed=timeline.scenario.seed,
                            noise=LoadCellNoise.from_scenario(timeline.scenario.noise))
        encoder = ReadingEncoder(shelf_id, bin_ids)
        topic = raw_topic(shelf_id)
        while True:
            sample = cells.next()
            if sample.t_ns > duration:
                return
            if sample.grams is None:
                continue  # lost by the scenario's noise: the bag never saw it
            stamp = epoch_ns + sample.t_ns
            yield stamp, rank, sample.k, topic, encoder.encode(stamp, sample.grams)

    streams = [truth(), gates(), tracker()]
    streams += [shelf(3 + i, shelf_id) for i, shelf_id in enumerate(sorted(store.shelves))]
    return streams


def write_simbag(out, store: StoreConfig, scenario: Scenario, *, store_text: str, scenario_text: str,
                 store_file: str = '', scenario_file: str = '', weight_rate_hz: Optional[int] = None,
                 tracker_rate_hz: Optional[float] = None, epoch_ns: int = EPOCH_NS,
                 compression: str = 'zstd',
                 progress: Optional[Callable[[float, int], None]] = None) -> SimBagSummary:
    """Plays the scenario and writes the bag ``out``. ``progress(fraction, messages)``
    is called about once a second. Raises ConfigError (scenario cannot be played),
    BagError (cannot write); an exception leaves only the ``.part`` file."""
    started = time.monotonic()
    if weight_rate_hz is None:
        weight_rate_hz = int(configured_rate('weight_sensor_node', 'rate_hz', DEFAULT_WEIGHT_RATE_HZ))
    if tracker_rate_hz is None:
        tracker_rate_hz = float(configured_rate('shopper_sim_node', 'rate_hz', DEFAULT_TRACKER_RATE_HZ))
    if not 1 <= weight_rate_hz <= 1000 or not 0 < tracker_rate_hz <= 1000:
        raise ValueError('rates must be within 1..1000 Hz')
    timeline = Timeline(scenario, store)
    events, dropped = gate_events(timeline, epoch_ns)
    documents = ground_truth_documents(
        timeline, events, epoch_ns=epoch_ns, weight_rate_hz=weight_rate_hz,
        tracker_rate_hz=tracker_rate_hz, store_text=store_text, scenario_text=scenario_text,
        store_file=store_file, scenario_file=scenario_file)
    streams = _streams(timeline, store, epoch_ns=epoch_ns, weight_rate_hz=weight_rate_hz,
                       tracker_rate_hz=tracker_rate_hz, events=events, documents=documents)
    end = epoch_ns + timeline.duration_ns
    with BagWriter(out, compression=compression) as writer:
        writer.add_topic(GROUND_TRUTH_TOPIC, 'jwo/msg/GroundTruth', [EVENT_QOS])
        for gate_id in sorted(store.gates):
            writer.add_topic(gate_topic(gate_id), 'jwo/msg/GateEvent', [DURABLE_EVENT_QOS])
            writer.add_topic(gate_status_topic(gate_id), 'jwo/msg/GateStatus', [EVENT_QOS])
        writer.add_topic(POSITIONS_TOPIC, 'jwo/msg/ShopperPositions', [EVENT_QOS])
        for shelf_id in sorted(store.shelves):
            writer.add_topic(raw_topic(shelf_id), 'jwo/msg/WeightReading', [SENSOR_QOS])
        sequences = Counter()
        next_report = time.monotonic() + 1.0
        for count, (stamp, _, _, topic, data) in enumerate(heapq.merge(*streams), 1):
            sequences[topic] += 1
            writer.write(topic, data, stamp, stamp, sequences[topic])
            if progress is not None and count % 2000 == 0 and time.monotonic() >= next_report:
                next_report = time.monotonic() + 1.0
                progress((stamp - epoch_ns) / max(1, end - epoch_ns), count)
        bag = writer.close()
    if progress is not None:
        progress(1.0, writer.message_count)
    return SimBagSummary(bag=bag, messages=writer.message_count, topics=dict(sequences),
                         duration_ns=timeline.duration_ns, weight_rate_hz=weight_rate_hz,
                         tracker_rate_hz=tracker_rate_hz, parties=len(scenario.parties),
                         weight_events=len(timeline.weight_events), gate_lines_dropped=dropped,
                         wall_s=time.monotonic() - started)


def write_simbag_files(out, store_path, scenario_path, **options) -> SimBagSummary:
    """write_simbag from a store config file and a scenario file."""
    store = load_store_config(store_path)
    scenario = load_scenario(scenario_path, store)
    return write_simbag(out, store, scenario, store_text=Path(store_path).read_text(),
                        scenario_text=Path(scenario_path).read_text(),
                        store_file=str(store_path), scenario_file=str(scenario_path), **options)


# ---------------------------------------------------------------- reading it back

@dataclass
class GroundTruthRecord:
    """The ground truth of a simulator bag (what `jwo eval BAG` scores against)."""

    path: str
    scenario: dict
    entries: list = field(default_factory=list)          # 'entry' documents
    weight_events: list = field(default_factory=list)    # 'weight_event' documents
    receipts: dict = field(default_factory=dict)         # party -> 'expected_receipt' document

    @property
    def name(self) -> str:
        return self.scenario['name']

    @property
    def epoch_ns(self) -> int:
        return self.scenario['epoch_ns']

    @property
    def parties(self) -> list:
        return list(self.scenario['parties'])

    def expected_items(self) -> dict:
        """party -> Counter of SKUs the party walked out with."""
        return {party: Counter({line['sku']: line['quantity']
                                for line in self.receipts[party]['receipt']['lines']})
                for party in self.parties}

    def party_of_visit(self, visit_code: str) -> Optional[str]:
        """The party that entered with this visit code (simbag's codes are seeded)."""
        return next((e['party'] for e in self.entries if e['visit_code'] == visit_code), None)

    def party_at_entry(self, gate_id: str, stamp_ns: int) -> Optional[str]:
        """The party whose ENTRY event fired at this gate with this stamp."""
        for entry in self.entries:
            if entry['gate_id'] == gate_id and entry['stamp_ns'] == stamp_ns:
                return entry['party']
        return None


def read_ground_truth(reader: BagReader) -> GroundTruthRecord:
    """The ground truth of a bag written by `jwo simbag`. BagError naming the file and
    message when there is none or it is damaged."""
    path = str(reader.path)
    topic = reader.topics.get(GROUND_TRUTH_TOPIC)
    if topic is None:
        raise BagError(path, f'no {GROUND_TRUTH_TOPIC} topic: not a bag written by `jwo simbag` '
                       '(jwo eval scores bags against their ground truth)')
    if topic.type != 'jwo/msg/GroundTruth':
        raise BagError(topic.file, f'{GROUND_TRUTH_TOPIC} carries {topic.type}, not '
                       'jwo/msg/GroundTruth', where=topic.where)
    truth = None
    kinds = {ENTRY: [], WEIGHT_EVENT: []}
    receipts = {}
    for index, message in enumerate(reader.messages([GROUND_TRUTH_TOPIC])):
        where = f'{GROUND_TRUTH_TOPIC} message {index} (log time {message.log_time})'
        try:
            document = json.loads(deserialize_message(message.data, GroundTruth).json)
            kind = document['kind']
        except Exception as error:  # noqa: BLE001 - undecodable CDR or JSON
            raise CorruptBagError(topic.file, f'not a ground-truth document ({error})', where=where)
        if kind == SCENARIO:
            if truth is not None:
                raise CorruptBagError(topic.file, 'a second scenario document', where=where)
            missing = [k for k in ('name', 'epoch_ns', 'duration_ns', 'parties', 'weight_rate_hz')
                       if k not in document]
            if missing:
                raise CorruptBagError(topic.file, f'scenario document without {", ".join(missing)}',
                                      where=where)
            truth = document
        elif truth is None:
            raise CorruptBagError(topic.file, f'{kind} document before the scenario document',
                                  where=where)
        elif kind in kinds:
            kinds[kind].append(document)
        elif kind == EXPECTED_RECEIPT:
            receipts[document['party']] = document
    if truth is None:
        raise CorruptBagError(topic.file, f'{GROUND_TRUTH_TOPIC} has no scenario document')
    missing = [p for p in truth['parties'] if p not in receipts]
    if missing:
        raise CorruptBagError(topic.file, f'no expected receipt of parties {", ".join(missing)} '
                              '(the bag ends early?)', where=GROUND_TRUTH_TOPIC)
    return GroundTruthRecord(path=path, scenario=truth, entries=kinds[ENTRY],
                             weight_events=kinds[WEIGHT_EVENT], receipts=receipts)


# ---------------------------------------------------------------- command line

def add_arguments(parser) -> None:
    parser.add_argument('scenario', help='scenario YAML file')
    parser.add_argument('-o', '--output', required=True, metavar='BAG',
                        help='bag directory to create (must not exist or be empty)')
    parser.add_argument('--store', default='config/stores/demo.yaml', help='store config YAML')
    add_bag_options(parser)


def add_bag_options(parser) -> None:
    parser.add_argument('--rate-hz', type=int, metavar='HZ',
                        help='load-cell samples per second (default: rate_hz of '
                             'config/params/weight_sensor_node.yaml)')
    parser.add_argument('--tracker-rate-hz', type=float, metavar='HZ',
                        help='tracker frames per second (default: rate_hz of '
                             'config/params/shopper_sim_node.yaml)')
    parser.add_argument('--compression', choices=('zstd', 'lz4', 'none'), default='zstd',
                        help='MCAP chunk compression (default zstd)')
    parser.add_argument('--quiet', action='store_true', help='no progress lines')


def print_progress(fraction: float, messages: int) -> None:
    print(f'simbag: {fraction:4.0%} of the scenario, {messages} messages', flush=True)


def write_from_args(args, store: StoreConfig, scenario: Scenario, *, store_text: str,
                    scenario_text: str, scenario_file: str) -> int:
    """Writes args.bag/args.output for `jwo simbag` and `jwo scenario --bag`."""
    out = getattr(args, 'bag', None) or args.output
    try:
        summary = write_simbag(out, store, scenario, store_text=store_text,
                               scenario_text=scenario_text, store_file=str(args.store),
                               scenario_file=scenario_file, weight_rate_hz=args.rate_hz,
                               tracker_rate_hz=args.tracker_rate_hz, compression=args.compression,
                               progress=None if args.quiet else print_progress)
    except (ConfigError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    except BagError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted: no bag written', file=sys.stderr)
        return 130
    counts = ', '.join(f'{n} {kind}' for kind, n in (
        ('weight readings', sum(n for t, n in summary.topics.items() if t.endswith('/weight/raw'))),
        ('gate events', sum(n for t, n in summary.topics.items() if t.startswith('/jwo/gates/'))),
        ('tracker frames', summary.topics.get(POSITIONS_TOPIC, 0)),
        ('ground-truth documents', summary.topics.get(GROUND_TRUTH_TOPIC, 0))))
    print(f'wrote {summary.bag}: {summary.messages} messages ({counts}), '
          f'{summary.duration_ns / NS:.0f} s of scenario, shelves at {summary.weight_rate_hz} Hz, '
          f'{summary.parties} parties, {summary.weight_events} weight events, '
          f'in {summary.wall_s:.1f} s', flush=True)
    return 0


def run(args) -> int:
    try:
        store = load_store_config(args.store)
        scenario = load_scenario(args.scenario, store)
        store_text = Path(args.store).read_text()
        scenario_text = Path(args.scenario).read_text()
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return write_from_args(args, store, scenario, store_text=store_text,
                           scenario_text=scenario_text, scenario_file=str(args.scenario))


def store_and_scenario(truth: GroundTruthRecord, folder: Path) -> tuple:
    """Writes the store config embedded in a bag's ground truth into ``folder``;
    returns (its path, the StoreConfig). ConfigError when it does not load."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{truth.scenario.get("store_id") or "store"}.store.yaml'
    path.write_text(truth.scenario['store_config'])
    store = load_store_config(path)
    return path, store


__all__ = ['EPOCH_NS', 'GROUND_TRUTH_TOPIC', 'POSITIONS_TOPIC', 'GroundTruthRecord', 'ReadingEncoder',
           'SimBagSummary', 'gate_events', 'gate_topic', 'raw_topic', 'read_ground_truth',
           'write_simbag', 'write_simbag_files']

