"""`jwo bench` (`make bench`): replay throughput and sensor-to-cart latency on a large
generated store, each also as a ratio to the bare rclpy publish->subscribe hop
measured in the same run (these machines are noisy: compare ratios, not seconds).

    jwo bench                                      # 40 shelves at 60 Hz, 30 visits, 10 min
    jwo bench --shelves 8 --visits 6 --minutes 2   # a quick look

Steps, each printed as it goes:

1. a store of N shelves of 3 bins (the demo catalogue, a gate at the front) and a
   scenario of V visits spread over the recording (the medium preset's behaviour and
   noise), written to the run folder;
2. `jwo simbag` of it at R Hz: every shelf's raw samples, gate events, tracker
   frames and the ground truth, in one rosbag2 MCAP bag;
3. the baseline: one rclpy publisher process -> one subscriber in this process,
   WeightReadings of the bag over Fast DDS: messages/s as fast as they go (reliable,
   like the replayer), and the one-way latency at the rate of one shelf; and the
   floor of the sensor-to-cart path's shape: that sample forwarded by two relay
   processes that do nothing else (where the path has the shelf's node and fusion),
   timed as in step 5;
4. throughput: `jwo replay --max` of the whole bag into the processing nodes (fusion
   and one weight_sensor_node per shelf, separate processes): messages/s of the
   replayer, and bag time over wall time until the last receipt (times real time);
   the receipts are scored so that a fast but wrong run shows;
5. latency: `jwo replay --rate 1` of the first W seconds of the bag: per cart update,
   from the arrival of the sample on which its weight change was decided
   (WeightChange.decided_stamp) to the arrival of the update, both at one subscriber
   in this process, as for the baseline's one hop (arrival: when the middleware
   received the message, MessageInfo received_timestamp; that subscriber takes the
   samples of the shelves that change in the window only); with the CPU and memory of
   the store's processes meanwhile, and whether the replay kept to real time.

Prints a table and writes bench.json in the run folder.
"""
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.scenario_gen import generate
from jwo_nodes.core.scoring import percentiles, score_visits
from jwo_nodes.core.sim import NS, Timeline, load_scenario
from jwo_nodes.launcher import add_shelves_per_process
from jwo_nodes.proc_usage import TICKS_PER_S, usage

BINS_PER_SHELF = 3
SHELVES_PER_ROW = 10
HOP_MESSAGES = 20_000
HOP_LATENCY_S = 10.0


def add_arguments(parser) -> None:
    add_shelves_per_process(parser)
    parser.add_argument('--shelves', type=int, default=40, help='shelves in the generated store')
    parser.add_argument('--rate-hz', type=int, default=60, help='load-cell samples per second')
    parser.add_argument('--visits', type=int, default=30, help='visits in the recording')
    parser.add_argument('--minutes', type=float, default=10.0, help='length of the recording')
    parser.add_argument('--latency-window', type=float, default=120.0, metavar='S',
                        help='seconds of the bag replayed in real time for the latency')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--catalogue', default='config/stores/demo.yaml',
                        help='store config whose products stock the generated store')
    parser.add_argument('--runs-dir', default='runs', help='where the run folder is created')
    parser.add_argument('--out', help='run folder (default: <runs-dir>/bench-<date>)')


# ---------------------------------------------------------------- the inputs

def bench_store(catalogue: dict, shelves: int) -> dict:
    """A store document: rows of SHELVES_PER_ROW shelves of BINS_PER_SHELF bins (1 m
    apart, a 1.5 m gap between shelves, 3.2 m between rows), stocked round-robin from
    the catalogue, one gate at the front."""
    products = catalogue['products']
    rows = (shelves + SHELVES_PER_ROW - 1) // SHELVES_PER_ROW
    shelf_docs = []
    for k in range(shelves):
        row, col = divmod(k, SHELVES_PER_ROW)
        bins = []
        for i in range(BINS_PER_SHELF):
            n = k * BINS_PER_SHELF + i
            bins.append({'id': f'S{k + 1}-B{i + 1}', 'sku': products[n % len(products)]['sku'],
                         'position': [2.0 + col * (BINS_PER_SHELF + 1.5) + i, 1.2 + row * 3.2],
                         'initial_units': 40})
        shelf_docs.append({'id': f'S{k + 1}', 'source': 'sim', 'bins': bins})
    return {'store': {'id': 'bench', 'name': f'jwo bench store ({shelves} shelves)',
                      'currency': catalogue['store']['currency'], 'tax_rate_bp': 0},
            'review': catalogue['review'], 'products': products, 'shelves': shelf_docs,
            'gates': [{'id': 'G1', 'position': [0.6, 1.2 + (rows - 1) * 1.6], 'radius_m': 0.8,
                       'source': 'sim'}]}


def bench_scenario(store, visits: int, minutes: float, seed: int) -> dict:
    """The medium preset with ``visits`` parties entering evenly over the recording; the
    last one stays until its end, so the bag is ``minutes`` long."""
    gap = max(1.0, (minutes * 60 - 60) / max(1, visits - 1))
    document = generate(store, 'medium', seed, parties=visits, entry_gap_s=(0.9 * gap, 1.1 * gap))
    document['name'] = f'bench-{visits}-visits'
    last = max(document['parties'], key=lambda p: p['enter_at_s'])
    for script in ([last['script']] if 'script' in last else last['scripts']):
        script.insert(len(script) - (script[-1] == 'leave'), {'wait_until': {'s': minutes * 60 - 2}})
    return document


# ---------------------------------------------------------------- the baseline hop

HOP_PUBLISHER = '''
import sys, time
import rclpy
import rclpy.duration
from jwo.msg import WeightReading
from jwo_nodes.bag.replayer import replay_qos
mode, topic, samples, count, rate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
data = open(samples, 'rb').read().split(b'\\0SPLIT\\0')
rclpy.init()
node = rclpy.create_node('bench_hop_publisher')
publisher = node.create_publisher(WeightReading, topic, replay_qos([]))   # as jwo replay
deadline = time.monotonic() + 30
while publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(1.0)
if mode == 'max':
    for i in range(count):
        while True:
            try:
                publisher.publish(data[i % len(data)])
                break
            except RuntimeError:   # history full: wait for the subscriber, as jwo replay does
                time.sleep(0.005)
else:
    from jwo_nodes.ros_common import to_stamp
    msg = WeightReading(shelf_id='S1', bin_ids=['a', 'b', 'c'], bin_grams=[1.0, 2.0, 3.0])
    next_at = time.monotonic()
    for i in range(count):
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
        msg.header.stamp = to_stamp(time.time_ns())
        publisher.publish(msg)
publisher.wait_for_all_acked(rclpy.duration.Duration(seconds=60))
node.destroy_node()
rclpy.shutdown()
'''


def measure_hop(samples: list, rate_hz: float, folder: Path) -> dict:
    """The bare rclpy hop between two processes: throughput of ``samples`` (serialized
    WeightReadings) published as fast as they go, and the one-way latency at
    ``rate_hz``."""
    from jwo.msg import WeightReading
    from jwo_nodes.bag.format import cdr_header_stamp_ns
    from jwo_nodes.ros_common import REPLAY_INPUT_QOS
    samples_file = folder / 'hop-samples.bin'
    samples_file.write_bytes(b'\0SPLIT\0'.join(samples))
    node = rclpy.create_node('bench_hop_subscriber')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    results = {}
    try:
        for mode, topic, count, rate in (('max', '/bench/hop_max', HOP_MESSAGES, 0.0),
                                         ('latency', '/bench/hop_latency',
                                          int(HOP_LATENCY_S * rate_hz), rate_hz)):
            arrivals = []
            subscription = node.create_subscription(
                WeightReading, topic, lambda data, info: arrivals.append((info['received_timestamp'], data)),
                REPLAY_INPUT_QOS, raw=True)
            publisher = subprocess.Popen(
                [sys.executable, '-c', HOP_PUBLISHER, mode, topic, str(samples_file), str(count),
                 str(rate)], stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 60 + count / max(rate, 1000)
            while len(arrivals) < count and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            publisher.wait(30)
            node.destroy_subscription(subscription)
            if len(arrivals) < count:
                raise RuntimeError(f'the hop baseline lost messages: {len(arrivals)} of {count}')
            if mode == 'max':
                span = (arrivals[-1][0] - arrivals[0][0]) / NS
                results['messages_per_s'] = (count - 1) / span
            else:
                results['latency_ms'] = percentiles(
                    [(wall - cdr_header_stamp_ns(data)) / 1e6 for wall, data in arrivals])
    finally:
        executor.remove_node(node)
        node.destroy_node()
    return results


# Forwards each serialized WeightReading from one topic to the next, doing nothing
# else, with the executor and QoS the store's nodes use.
RELAY = '''
import sys
import rclpy
from jwo.msg import WeightReading
from jwo_nodes.ros_common import REPLAY_INPUT_QOS, run_nodes
from jwo_nodes.bag.replayer import replay_qos
source, target = sys.argv[1], sys.argv[2]

def relay():
    node = rclpy.create_node('bench_relay_' + target.rsplit('/', 1)[-1])
    publisher = node.create_publisher(WeightReading, target, replay_qos([]))
    node.create_subscription(WeightReading, source, publisher.publish, REPLAY_INPUT_QOS, raw=True)
    return node

run_nodes([relay])
'''


def measure_relay_floor(samples_file: Path, rate_hz: float) -> dict:
    """The floor of the sensor-to-cart path's shape: a sample published at ``rate_hz``
    goes through two relay processes that only forward it (where the path has the
    shelf's node and fusion); the latency from its arrival here to the arrival of its
    second forward here, as the sensor-to-cart latency is measured."""
    from jwo.msg import WeightReading
    from jwo_nodes.bag.format import cdr_header_stamp_ns
    from jwo_nodes.ros_common import REPLAY_INPUT_QOS
    topics = ['/bench/relay_in', '/bench/relay_mid', '/bench/relay_out']
    node = rclpy.create_node('bench_relay_subscriber')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    arrivals = {'in': {}, 'out': {}}
    for end, topic in (('in', topics[0]), ('out', topics[2])):
        node.create_subscription(
            WeightReading, topic,
            lambda data, info, end=end: arrivals[end].setdefault(cdr_header_stamp_ns(data), info['received_timestamp']),
            REPLAY_INPUT_QOS, raw=True)
    relays = [subprocess.Popen([sys.executable, '-c', RELAY, topics[k], topics[k + 1]], stdin=subprocess.DEVNULL)
              for k in range(2)]
    count = int(HOP_LATENCY_S * rate_hz)
    try:
        deadline = time.monotonic() + 60
        while (node.count_publishers(topics[2]) < 1 or node.count_subscribers(topics[0]) < 2) \
                and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        publisher = subprocess.Popen(
            [sys.executable, '-c', HOP_PUBLISHER, 'latency', topics[0], str(samples_file), str(count),
             str(rate_hz)], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60 + HOP_LATENCY_S
        while len(arrivals['out']) < count and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        publisher.wait(30)
    finally:
        for relay in relays:
            relay.terminate()
        for relay in relays:
            relay.wait(30)
        executor.remove_node(node)
        node.destroy_node()
    if len(arrivals['out']) < count:
        raise RuntimeError(f'the relay floor lost messages: {len(arrivals["out"])} of {count}')
    return {'latency_ms': percentiles([(wall - arrivals['in'][stamp]) / 1e6
                                       for stamp, wall in arrivals['out'].items() if stamp in arrivals['in']])}


# ---------------------------------------------------------------- the run

def _say(text: str) -> None:
    print(text, flush=True)


class _Ticker:
    """A progress line every few seconds while a long step runs."""

    def __init__(self, what: str, period_s: float = 10.0):
        self.what, self.period_s = what, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.period_s):
            _say(f'    ... {self.what}: {time.monotonic() - started:.0f} s')

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class StoreUsage:
    """CPU and resident memory of the store's processes while the bag plays (from its
    first message to the end of the run), sampled once a second from the runner's loop."""

    def __init__(self):
        self.first = {}     # process label -> (pid, CPU ticks, monotonic s)
        self.latest = {}    # process label -> (pid, CPU ticks, monotonic s, resident MB)
        self.shelves = {}   # process label -> shelves in it
        self._next_s = 0.0

    def __call__(self, supervisor, replay) -> None:
        now = time.monotonic()
        if replay.playing_since_ns is None or now < self._next_s:
            return
        self._next_s = now + 1.0
        for spec in supervisor.specs:
            pid = supervisor.pid(spec.node_fqns[0])
            rss_mb, ticks = usage(pid) if pid is not None else (None, None)
            if ticks is None:
                continue
            if self.first.get(spec.label, (pid,))[0] != pid:   # restarted: measure the new one
                self.first.pop(spec.label)
            self.first.setdefault(spec.label, (pid, ticks, now))
            self.latest[spec.label] = (pid, ticks, now, rss_mb or 0.0)
            self.shelves[spec.label] = sum(1 for node in spec.nodes if node.executable == 'weight_sensor_node')

    def summary(self, shelf_count: int) -> dict:
        def cores(label):
            (_, t0, s0), (_, t1, s1, _) = self.first[label], self.latest[label]
            return (t1 - t0) / TICKS_PER_S / (s1 - s0) if s1 > s0 else 0.0
        shelf_labels = [label for label, count in self.shelves.items() if count]
        return {
            'processes': len(self.latest),
            'cpu_cores': sum(cores(label) for label in self.latest),
            'rss_mb': sum(rss for *_, rss in self.latest.values()),
            'per_shelf_cpu_pct': 100 * sum(cores(label) for label in shelf_labels) / shelf_count,
            'per_shelf_rss_mb': sum(self.latest[label][3] for label in shelf_labels) / shelf_count,
        }


def run(args) -> int:
    for name in ('shelves', 'visits', 'rate_hz'):
        if getattr(args, name) < 1:
            print(f'error: --{name.replace("_", "-")} must be at least 1', file=sys.stderr)
            return 2
    if not (args.minutes > 0 and args.latency_window > 0):
        print('error: --minutes and --latency-window must be positive', file=sys.stderr)
        return 2
    from jwo_nodes.bag.format import BagReader
    from jwo_nodes.simbag import read_ground_truth, write_simbag
    out = Path(args.out) if args.out else Path(args.runs_dir) / time.strftime('bench-%Y%m%d-%H%M%S')
    out.mkdir(parents=True, exist_ok=True)
    (out / 'bench.json').unlink(missing_ok=True)

    # 1. store and scenario
    catalogue = yaml.safe_load(Path(args.catalogue).read_text())
    store_path = out / 'store.yaml'
    store_path.write_text(yaml.safe_dump(bench_store(catalogue, args.shelves), sort_keys=False))
    store = load_store_config(store_path)
    scenario_path = out / 'scenario.yaml'
    scenario_path.write_text(yaml.safe_dump(
        bench_scenario(store, args.visits, args.minutes, args.seed), sort_keys=False))
    scenario = load_scenario(scenario_path, store)
    timeline = Timeline(scenario, store)
    _say(f'[1/5] store {store_path}: {len(store.shelves)} shelves, {len(store.bins)} bins; '
         f'scenario {scenario_path}: {len(scenario.parties)} visits, '
         f'{len(timeline.weight_events)} weight changes, {timeline.duration_ns / NS:.0f} s')

    # 2. the bag
    bag = out / 'bag'
    if bag.exists():
        import shutil
        shutil.rmtree(bag)
    _say(f'[2/5] writing the bag {bag} ({args.rate_hz} Hz) ...')
    summary = write_simbag(bag, store, scenario, store_text=store_path.read_text(),
                           scenario_text=scenario_path.read_text(), store_file=str(store_path),
                           scenario_file=str(scenario_path), weight_rate_hz=args.rate_hz,
                           progress=lambda f, n: _say(f'    ... {f:.0%}, {n} messages'))
    bag_s = summary.duration_ns / NS
    _say(f'    {summary.messages} messages, {bag_s:.0f} s of recording, '
         f'{summary.messages / bag_s:.0f} messages/s recorded, written in {summary.wall_s:.0f} s')
    with BagReader(bag) as reader:
        truth = read_ground_truth(reader)
        topic = f'/jwo/shelves/{next(iter(store.shelves))}/weight/raw'
        samples = [m.data for _, m in zip(range(2000), reader.messages([topic]))]

    rclpy.init()
    try:
        # 3. the baseline
        _say('[3/5] baseline: bare rclpy publish -> subscribe, one hop between two processes ...')
        try:
            hop = measure_hop(samples, args.rate_hz, out)
        except RuntimeError as error:
            print(f'error: {error}', file=sys.stderr)
            return 1
        _say(f'    {hop["messages_per_s"]:.0f} messages/s; one-way latency p50 '
             f'{hop["latency_ms"]["p50"]:.2f} ms, p99 {hop["latency_ms"]["p99"]:.2f} ms')
        _say('    the path\'s floor: the same sample forwarded by two relay processes that do nothing else ...')
        try:
            floor = measure_relay_floor(out / 'hop-samples.bin', args.rate_hz)
        except RuntimeError as error:
            print(f'error: {error}', file=sys.stderr)
            return 1
        _say(f'    through two relays p50 {floor["latency_ms"]["p50"]:.2f} ms, p99 {floor["latency_ms"]["p99"]:.2f} ms')

        from jwo_nodes.runner import run_bag
        prices = {sku: p.price_cents for sku, p in store.products.items()}

        # 4. throughput
        _say(f'[4/5] throughput: jwo replay --max into fusion + {len(store.shelves)} '
             'weight_sensor_nodes ...')
        with _Ticker('replaying'):
            result, replay = run_bag(store, str(store_path), bag, truth, rate=None,
                                     log_path=out / 'throughput.nodes.log', grace_s=60.0,
                                     shelves_per_process=args.shelves_per_process)
        # 'replay done: ...', or '... interrupted' when the last receipt came while the
        # replayer still waited for its final acknowledgements.
        done = re.search(r'replay \w+: (\d+) messages in ([\d.]+) s', replay.played() or '')
        if result.failure or not done or replay.playing_since_ns is None:
            print(f'error: the throughput run failed: {result.failure or "the replay did not finish"} '
                  f'(see {out / "throughput.nodes.log"})', file=sys.stderr)
            return 1
        visits = score_visits(truth.expected_items(), result.receipts, prices)
        played, replay_s = int(done.group(1)), float(done.group(2))   # the replayer's own clock
        played_ns = replay.playing_since_ns + int(replay_s * NS)
        processed_s = (max(played_ns, result.last_receipt_wall_ns or 0) - replay.playing_since_ns) / NS
        throughput = {
            'messages': played, 'replay_wall_s': replay_s,
            'replay_messages_per_s': played / replay_s,
            'processed_wall_s': processed_s, 'times_real_time': bag_s / processed_s,
            'receipts': len(result.receipts), 'visits': len(truth.parties),
            'exact_receipt_rate': visits['exact_receipt_rate'], 'review_rate': visits['review_rate'],
            'wrong_charge_items': visits['wrong_charge_items'],
        }
        _say(f'    replayed {played} messages in {replay_s:.1f} s '
             f'({throughput["replay_messages_per_s"]:.0f}/s); last receipt after {processed_s:.1f} s: '
             f'{throughput["times_real_time"]:.1f}x real time; {len(result.receipts)}/'
             f'{len(truth.parties)} receipts, exact {visits["exact_receipt_rate"]:.0%}, '
             f'flagged {visits["review_rate"]:.0%}')

        # 5. latency
        window = min(args.latency_window, bag_s)
        _say(f'[5/5] latency: jwo replay --rate 1 of the first {window:.0f} s ...')
        store_usage = StoreUsage()
        # Only the shelves that change in the window: a monitor taking every shelf's
        # samples would load these two cores as much as the store does.
        changing = frozenset(event.shelf_id for event in timeline.weight_events
                             if event.start_ns < window * NS)
        with _Ticker('replaying'):
            result, replay = run_bag(store, str(store_path), bag, truth, rate=1.0, duration_s=window,
                                     log_path=out / 'latency.nodes.log', grace_s=5.0,
                                     watch_shelves=changing, shelves_per_process=args.shelves_per_process,
                                     on_turn=store_usage)
        done = re.search(r'replay \w+: (\d+) messages in ([\d.]+) s', replay.played() or '')
        if result.failure and not result.sensor_to_cart_ms or not store_usage.latest:
            print(f'error: the latency run failed: {result.failure} (see {out / "latency.nodes.log"})',
                  file=sys.stderr)
            return 1
        latency = {'sensor_to_cart_ms': percentiles(result.sensor_to_cart_ms),
                   'change_to_cart_ms': percentiles(result.cart_latency_ms),
                   # The replayer keeps to the bag's clock only if the machine keeps up.
                   'replay_wall_s': float(done.group(2)) if done else None, 'window_s': window,
                   'store': store_usage.summary(len(store.shelves))}
        used = latency['store']
        _say(f'    {window:.0f} s of bag replayed in {latency["replay_wall_s"] or float("nan"):.1f} s; '
             f'{used["processes"]} store processes: {used["cpu_cores"]:.2f} cores, {used["rss_mb"]:.0f} MB; '
             f'per shelf {used["per_shelf_cpu_pct"]:.2f} % of a core, {used["per_shelf_rss_mb"]:.1f} MB')
    finally:
        rclpy.try_shutdown()

    hop_p50 = hop['latency_ms']['p50']
    report = {
        'store': {'shelves': len(store.shelves), 'bins': len(store.bins), 'rate_hz': args.rate_hz},
        'recording': {'seconds': bag_s, 'messages': summary.messages, 'visits': len(truth.parties)},
        'baseline_hop': hop, 'relay_floor': floor, 'throughput': throughput, 'latency': latency,
        'ratios': {
            'replay_messages_per_s_to_hop': throughput['replay_messages_per_s'] / hop['messages_per_s'],
            'sensor_to_cart_p50_to_hop_p50': latency['sensor_to_cart_ms'].get('p50', float('nan')) / hop_p50,
            'sensor_to_cart_p99_to_hop_p99': (latency['sensor_to_cart_ms'].get('p99', float('nan'))
                                              / hop['latency_ms']['p99']),
            'relay_floor_p50_to_hop_p50': floor['latency_ms']['p50'] / hop_p50,
            'relay_floor_p99_to_hop_p99': floor['latency_ms']['p99'] / hop['latency_ms']['p99'],
        },
    }
    (out / 'bench.json').write_text(json.dumps(report, indent=2) + '\n')
    s2c = latency['sensor_to_cart_ms']
    ratios = report['ratios']
    nan = float('nan')
    rows = [
        ('bare rclpy hop (baseline)', f'{hop["messages_per_s"]:.0f} msg/s', '1'),
        ('', f'p50 {hop_p50:.2f} ms', '1'),
        ('', f'p99 {hop["latency_ms"]["p99"]:.2f} ms', '1'),
        ('two relays that only forward (floor)', f'p50 {floor["latency_ms"]["p50"]:.2f} ms',
         f'{ratios["relay_floor_p50_to_hop_p50"]:.1f}'),
        ('', f'p99 {floor["latency_ms"]["p99"]:.2f} ms', f'{ratios["relay_floor_p99_to_hop_p99"]:.1f}'),
        ('replay --max into the nodes', f'{throughput["replay_messages_per_s"]:.0f} msg/s',
         f'{ratios["replay_messages_per_s_to_hop"]:.2f}'),
        ('  bag time / time to last receipt', f'{throughput["times_real_time"]:.1f}x real time', ''),
        ('sensor message -> cart update', f'p50 {s2c.get("p50", nan):.1f} ms',
         f'{ratios["sensor_to_cart_p50_to_hop_p50"]:.1f}'),
        (f'  ({s2c.get("count", 0)} cart updates)', f'p99 {s2c.get("p99", nan):.1f} ms',
         f'{ratios["sensor_to_cart_p99_to_hop_p99"]:.1f}'),
        (f'real time: {latency["window_s"]:.0f} s of bag in', f'{latency["replay_wall_s"] or nan:.1f} s', ''),
        (f'  {used["processes"]} store processes', f'{used["cpu_cores"]:.2f} cores, {used["rss_mb"]:.0f} MB', ''),
        ('  per shelf', f'{used["per_shelf_cpu_pct"]:.2f} % core, {used["per_shelf_rss_mb"]:.1f} MB', ''),
    ]
    _say(f'\njwo bench: {len(store.shelves)} shelves x {BINS_PER_SHELF} bins at {args.rate_hz} Hz, '
         f'{len(truth.parties)} visits, {bag_s / 60:.1f} min, {summary.messages} messages')
    _say(f'  {"":36}{"measured":>22}   ratio to the bare hop')
    for name, measured, ratio in rows:
        _say(f'  {name:36}{measured:>22}   {ratio}')
    _say(f'report: {out / "bench.json"}')
    return 0
