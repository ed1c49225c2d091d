"""Edge-to-cloud figures on loopback (a benchmark, not a test).

    PYTHONPATH=cloud .venv/bin/python cloud/bench.py [--receipts 1000] [--clips 10 --clip-mb 4]

What runs: a real S3-API server (moto_server, its own process), the ingest (this
process), uplink_node (its own process, as in a store) and a ROS publisher (this
process). Receipts and review requests with clips are published on ROS; the ingest
notes when each object is written. Figures:

- receipts/s: receipts published (as fast as the path keeps up, at most --inflight
  ahead) until the last one is in the bucket;
- clip MB/s: review requests referencing --clips clips of --clip-mb MB each, from the
  first publication until the last clip object is written;
- latency: receipts published one at a time at --rate per second, publication to
  object written, p50 and p99;

each also as a ratio to a bare boto3 ``put_object`` of the same objects against the same
server, measured in the same run (sequential puts: that is what one writer gets).
With --no-ros the outbox is fed directly (no ROS, no uplink_node process).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from jwo_cloud import convert, layout, testing, wire  # noqa: E402
from jwo_cloud.bucket import S3Bucket  # noqa: E402
from jwo_cloud.ingest import Ingest  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float('nan')
    k = (len(values) - 1) * p / 100
    low, high = int(k), min(int(k) + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (k - low)


class Moto:
    """moto_server in its own process, like a real S3-compatible store."""

    def __init__(self, directory):
        self.port = free_port()
        self.endpoint = f'http://127.0.0.1:{self.port}'
        executable = shutil.which('moto_server', path=str(Path(sys.executable).parent)) \
            or shutil.which('moto_server')
        command = [executable] if executable else [sys.executable, '-m', 'moto.server']
        self.process = subprocess.Popen([*command, '-H', '127.0.0.1', '-p', str(self.port)],
                                        stdout=open(Path(directory) / 'moto.log', 'w'),
                                        stderr=subprocess.STDOUT)
        import boto3
        for name, value in (('AWS_ACCESS_KEY_ID', 'bench'), ('AWS_SECRET_ACCESS_KEY', 'bench'),
                            ('AWS_DEFAULT_REGION', 'us-east-1')):
            os.environ.setdefault(name, value)
        client = boto3.client('s3', endpoint_url=self.endpoint)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.client = client

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Recorder:
    """Ingest hook: when each object was written (wall clock ns)."""

    def __init__(self):
        self.written = {}
        self.cond = threading.Condition()

    def __call__(self, key):
        now = time.time_ns()
        with self.cond:
            self.written.setdefault(key, now)
            self.cond.notify_all()

    def wait_for(self, keys, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(k in self.written for k in keys):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [k for k in keys if k not in self.written]
                    raise TimeoutError(f'{len(missing)} objects not written, e.g. {missing[:3]}')
                self.cond.wait(min(left, 0.5))

    def count(self, keys):
        with self.cond:
            return sum(1 for k in keys if k in self.written)


class RosFeed:
    """Publishes on ROS to a running uplink_node."""

    def __init__(self, directory, keys, endpoint, domain):
        os.environ['ROS_DOMAIN_ID'] = str(domain)
        os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        import rclpy
        from jwo import msg as msgs
        from jwo_nodes.ros_common import DURABLE_EVENT_QOS
        self.msgs = msgs
        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node('jwo_bench')
        self.receipts = self.node.create_publisher(msgs.Receipt, '/jwo/receipts', DURABLE_EVENT_QOS)
        self.reviews = self.node.create_publisher(msgs.ReviewRequest, '/jwo/review/requests',
                                                  DURABLE_EVENT_QOS)
        command = shutil.which('uplink_node', path=str(Path(sys.executable).parent))
        command = [command] if command else [sys.executable, '-m', 'jwo_nodes.nodes.uplink_node']
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO),
                                                          os.environ.get('PYTHONPATH', '')]))
        self.process = subprocess.Popen(
            [*command, '--ros-args', '--params-file', str(REPO / 'config/params/uplink_node.yaml'),
             '-p', f'store_config:={REPO / "config/stores/demo.yaml"}',
             '-p', f'outbox_path:={Path(directory) / "outbox.sqlite3"}',
             '-p', f'ingest_endpoint:={endpoint}',
             '-p', f'store_secret_key_file:={keys.store_secret}',
             '-p', f'ingest_public_key_file:={keys.server_public}',
             '-p', f'clip_root:={directory}', '-p', 'window:=128'],
            stdout=open(Path(directory) / 'uplink_node.log', 'w'), stderr=subprocess.STDOUT,
            env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while self.receipts.get_subscription_count() == 0 or self.reviews.get_subscription_count() == 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError('uplink_node did not subscribe: see uplink_node.log')
            time.sleep(0.05)

    def _receipt(self, fake):
        from builtin_interfaces.msg import Time
        m = self.msgs
        msg = m.Receipt(receipt_id=fake.receipt_id, store_id=fake.store_id,
                        visit_code=fake.visit_code, status=fake.status,
                        subtotal_cents=fake.subtotal_cents, tax_cents=fake.tax_cents,
                        total_cents=fake.total_cents, confidence=fake.confidence)
        msg.header.stamp = Time(sec=fake.header.stamp.sec, nanosec=fake.header.stamp.nanosec)
        msg.lines = [m.CartLine(sku=x.sku, name=x.name, quantity=x.quantity,
                                unit_price_cents=x.unit_price_cents,
                                line_total_cents=x.line_total_cents, confidence=x.confidence)
                     for x in fake.lines]
        return msg

    def receipt(self, fake):
        self.receipts.publish(self._receipt(fake))

    def review(self, fake):
        m = self.msgs
        msg = m.ReviewRequest(receipt_id=fake.receipt_id, store_id=fake.store_id,
                              visit_code=fake.visit_code)
        msg.events = [m.DoubtfulEvent(event_id=e.event_id, reason_code=e.reason_code,
                                      shelf_id=e.shelf_id, candidate_visits=e.candidate_visits,
                                      candidate_scores=e.candidate_scores,
                                      clip_refs=e.clip_refs) for e in fake.events]
        self.reviews.publish(msg)

    def close(self):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.node.destroy_node()
        self.rclpy.shutdown()


class OutboxFeed:
    """--no-ros: items go straight into an outbox drained by an in-process sender."""

    def __init__(self, directory, keys, endpoint):
        from jwo_cloud.uplink import UplinkSender
        from jwo_nodes.core.outbox import NewItem, Outbox
        self.NewItem = NewItem
        self.outbox = Outbox(Path(directory) / 'outbox.sqlite3')
        self.sender = UplinkSender(self.outbox, endpoint, keys.store_secret, keys.server_public,
                                   window=128, clip_root=str(directory))
        self.sender.start()

    def receipt(self, fake):
        items = convert.receipt_items(fake, 'demo', time.time_ns(), 'USD', 0)
        self.outbox.add([self.NewItem(*i) for i in items])
        self.sender.wake()

    def review(self, fake):
        items = convert.review_items(fake, 'demo', time.time_ns())
        self.outbox.add([self.NewItem(*i) for i in items])
        self.sender.wake()

    def close(self):
        self.sender.stop()
        self.outbox.close()


def final_receipt(n):
    return testing.fake_receipt(n, status=0)


def bare_puts(client, bucket_name, bodies):
    """Sequential boto3 put_object of (key, bytes); per-put seconds."""
    times = []
    for key, body in bodies:
        start = time.perf_counter()
        client.put_object(Bucket=bucket_name, Key=key, Body=body)
        times.append(time.perf_counter() - start)
    return times


def receipt_body(n):
    from jwo_cloud.wire import pb
    (_, _, _, payload), = convert.receipt_items(final_receipt(n), 'demo', 1, 'USD', 0)
    receipt = pb.Envelope.FromString(payload).receipt
    document = wire.to_dict(receipt)
    document['uplink'] = {'item_id': f'receipt:{receipt.receipt_id}', 'created_ns': 1}
    return json.dumps(document, indent=1, sort_keys=True).encode()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--receipts', type=int, default=1000)
    parser.add_argument('--inflight', type=int, default=300,
                        help='receipts published ahead of the bucket at most (throughput run)')
    parser.add_argument('--latency-receipts', type=int, default=200)
    parser.add_argument('--rate', type=float, default=20.0, help='latency run: receipts/s')
    parser.add_argument('--clips', type=int, default=10)
    parser.add_argument('--clip-mb', type=float, default=4.0)
    parser.add_argument('--no-ros', action='store_true', help='feed the outbox directly')
    parser.add_argument('--keep', action='store_true', help='keep the temporary directory')
    args = parser.parse_args(argv)

    directory = Path(tempfile.mkdtemp(prefix='jwo-bench-'))
    keys = testing.make_keys(directory / 'keys')
    moto = Moto(directory)
    moto.client.create_bucket(Bucket='jwo-bench')
    moto.client.create_bucket(Bucket='jwo-bare')
    bucket = S3Bucket('jwo-bench', endpoint_url=moto.endpoint)
    recorder = Recorder()
    ingest = Ingest(bucket, keys.server_secret, keys.enrolled, directory / 'spool',
                    bind='tcp://127.0.0.1:0')
    ingest.on_written = recorder
    endpoint = ingest.start()
    feed = None
    results = {}
    try:
        feed = OutboxFeed(directory, keys, endpoint) if args.no_ros else \
            RosFeed(directory, keys, endpoint, 50 + os.getpid() % 50)
        # Warm-up (connections, discovery, first objects).
        warm = [layout.receipt_key('demo', final_receipt(900_000 + n).receipt_id) for n in range(20)]
        for n in range(20):
            feed.receipt(final_receipt(900_000 + n))
        recorder.wait_for(warm, 60)

        # 1. Receipts/s.
        keys_ = [layout.receipt_key('demo', f'R{n:05d}') for n in range(args.receipts)]
        published = {}
        start = time.time_ns()
        for n in range(args.receipts):
            while n - recorder.count(keys_[:n]) > args.inflight:
                time.sleep(0.002)
            published[keys_[n]] = time.time_ns()
            feed.receipt(final_receipt(n))
        recorder.wait_for(keys_, 300)
        elapsed = (max(recorder.written[k] for k in keys_) - start) / 1e9
        results['receipts_per_s'] = args.receipts / elapsed
        bare = bare_puts(moto.client, 'jwo-bare', [(k, receipt_body(n)) for n, k in enumerate(keys_)])
        results['bare_receipts_per_s'] = len(bare) / sum(bare)

        # 2. Latency, paced.
        lat_keys, latencies = [], []
        base = 500_000
        for n in range(args.latency_receipts):
            key = layout.receipt_key('demo', f'R{base + n:05d}')
            lat_keys.append(key)
            published[key] = time.time_ns()
            feed.receipt(final_receipt(base + n))
            time.sleep(1.0 / args.rate)
        recorder.wait_for(lat_keys, 60)
        latencies = [(recorder.written[k] - published[k]) / 1e6 for k in lat_keys]
        bare = bare_puts(moto.client, 'jwo-bare',
                         [(k + '.lat', receipt_body(base + n)) for n, k in enumerate(lat_keys)])
        bare_ms = [t * 1000 for t in bare]
        results.update(latency_p50_ms=percentile(latencies, 50),
                       latency_p99_ms=percentile(latencies, 99),
                       bare_put_p50_ms=percentile(bare_ms, 50),
                       bare_put_p99_ms=percentile(bare_ms, 99))

        # 3. Clips.
        size = int(args.clip_mb * 1024 * 1024)
        clip_keys, clip_files = [], []
        for n in range(args.clips):
            path = directory / 'clips' / f'{n}.webm'
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(os.urandom(size))
            clip_files.append(path)
            clip_keys.append(layout.clip_key('demo', wire.clip_id(f'clips/{n}.webm')))
        start = time.time_ns()
        for n in range(args.clips):
            feed.review(testing.fake_review(700_000 + n, [f'clips/{n}.webm']))
        recorder.wait_for(clip_keys, 600)
        elapsed = (max(recorder.written[k] for k in clip_keys) - start) / 1e9
        total_mb = args.clips * size / 1e6
        results['clip_mb_per_s'] = total_mb / elapsed
        bare = bare_puts(moto.client, 'jwo-bare', [(f'clip/{n}', p.read_bytes())
                                                   for n, p in enumerate(clip_files)])
        results['bare_clip_mb_per_s'] = total_mb / sum(bare)
        results['ingest_counters'] = ingest.counters()
    finally:
        if feed is not None:
            feed.close()
        ingest.stop()
        moto.stop()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)

    r = results
    path = 'outbox-fed (no ROS)' if args.no_ros else 'ROS publish -> uplink_node'
    print(f'jwo edge-to-cloud on loopback: {path} -> ZeroMQ/CURVE -> ingest -> moto S3 '
          f'({os.cpu_count()} cores)')
    print(f'receipts/s      {r["receipts_per_s"]:9.1f}   bare boto3 put {r["bare_receipts_per_s"]:9.1f}'
          f'   ratio {r["receipts_per_s"] / r["bare_receipts_per_s"]:.2f}   ({args.receipts} receipts)')
    print(f'clip MB/s       {r["clip_mb_per_s"]:9.1f}   bare boto3 put {r["bare_clip_mb_per_s"]:9.1f}'
          f'   ratio {r["clip_mb_per_s"] / r["bare_clip_mb_per_s"]:.2f}   '
          f'({args.clips} x {args.clip_mb} MB, 1 MiB chunks)')
    print(f'latency p50 ms  {r["latency_p50_ms"]:9.1f}   bare boto3 put {r["bare_put_p50_ms"]:9.1f}'
          f'   ratio {r["latency_p50_ms"] / r["bare_put_p50_ms"]:.2f}   '
          f'({args.latency_receipts} receipts at {args.rate:g}/s, publish -> object written)')
    print(f'latency p99 ms  {r["latency_p99_ms"]:9.1f}   bare boto3 put {r["bare_put_p99_ms"]:9.1f}'
          f'   ratio {r["latency_p99_ms"] / r["bare_put_p99_ms"]:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
