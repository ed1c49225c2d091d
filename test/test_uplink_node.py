"""uplink_node as a real process on an isolated ROS graph: receipts, review requests and
their clips, and FINAL receipts' evidence published on ROS reach the bucket through the ingest; a node killed with
kill -9 while the cloud is down loses nothing; a receipt's token hash from its gate
follows it to the cloud whichever of the two the node hears first."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'cloud'))

from conftest import BIN, wait_until  # noqa: E402
from jwo_cloud import layout, payer, testing, wire  # noqa: E402
from jwo_cloud.bucket import DirBucket  # noqa: E402
from jwo_cloud.ingest import Ingest  # noqa: E402

rclpy = pytest.importorskip('rclpy')
msgs = pytest.importorskip('jwo.msg')


class Uplink:
    """uplink_node started like the launcher does (console script when installed)."""

    def __init__(self, tmp_path, keys, endpoint, *extra):
        self.log_path = tmp_path / f'uplink-{time.monotonic_ns()}.log'
        command = ([str(BIN / 'uplink_node')] if (BIN / 'uplink_node').exists()
                   else [sys.executable, '-m', 'jwo_nodes.nodes.uplink_node'])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO / 'cloud'), str(REPO), os.environ.get('PYTHONPATH', '')]))
        self.process = subprocess.Popen(
            [*command, '--ros-args', '--params-file', str(REPO / 'config/params/uplink_node.yaml'),
             '-p', f'store_config:={REPO / "config/stores/demo.yaml"}',
             '-p', f'outbox_path:={tmp_path / "outbox.sqlite3"}',
             '-p', f'ingest_endpoint:={endpoint}',
             '-p', f'store_secret_key_file:={keys.store_secret}',
             '-p', f'ingest_public_key_file:={keys.server_public}',
             '-p', f'clip_root:={tmp_path / "clips"}',
             '-p', 'ack_timeout_s:=2.0', '-p', 'backoff_max_s:=0.5', *extra],
            stdout=open(self.log_path, 'w'), stderr=subprocess.STDOUT, env=env,
            start_new_session=True)

    def log(self):
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGINT):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def ros():
    rclpy.init()
    node = rclpy.create_node('uplink_test_publisher')
    from jwo_nodes.ros_common import DURABLE_EVENT_QOS
    receipts = node.create_publisher(msgs.Receipt, '/jwo/receipts', DURABLE_EVENT_QOS)
    reviews = node.create_publisher(msgs.ReviewRequest, '/jwo/review/requests', DURABLE_EVENT_QOS)
    yield node, receipts, reviews
    node.destroy_node()
    rclpy.shutdown()


def receipt(n, needs_review):
    from builtin_interfaces.msg import Time
    msg = msgs.Receipt(receipt_id=f'R{n:04d}', store_id='demo', visit_code=f'V{n:04d}',
                       status=msgs.Receipt.NEEDS_REVIEW if needs_review else msgs.Receipt.FINAL,
                       subtotal_cents=447, tax_cents=0, total_cents=447, confidence=0.6)
    msg.header.stamp = msg.exit_stamp = Time(sec=1_700_000_000 + n, nanosec=0)
    msg.lines = [msgs.CartLine(sku='COLA-330', name='Cola 330 ml can', quantity=3,
                               unit_price_cents=149, line_total_cents=447, confidence=0.6)]
    if needs_review:
        msg.reasons = [msgs.ReviewReason(code='ambiguous_attribution', event_id=f'E{n}')]
    return msg


def review_request(n, clip_ref):
    msg = msgs.ReviewRequest(receipt_id=f'R{n:04d}', store_id='demo', visit_code=f'V{n:04d}')
    msg.events = [msgs.DoubtfulEvent(event_id=f'E{n}', reason_code='ambiguous_attribution',
                                     shelf_id='S1', bin_ids=['S1-B1'], delta_grams=[-1050.0],
                                     candidate_visits=[f'V{n:04d}', 'V9999'],
                                     candidate_scores=[0.6, 0.4], proposed_sku='COLA-330',
                                     proposed_quantity=3, camera_ids=['cam_front'],
                                     clip_refs=[clip_ref])]
    return msg


def publish_visits(receipts, reviews, numbers, deadline_s=15):
    assert wait_until(lambda: receipts.get_subscription_count() > 0
                      and reviews.get_subscription_count() > 0, deadline_s), 'uplink not subscribed'
    for n in numbers:
        receipts.publish(receipt(n, n % 2 == 1))
        if n % 2 == 1:
            reviews.publish(review_request(n, f'cam_front/{n}.webm'))


def stored_keys(bucket) -> list:
    """The bucket's keys but the review queue's index (the ingest's own bookkeeping)."""
    return sorted(key for key in bucket.list('') if key != layout.QUEUE_INDEX)


def expected_keys(numbers):
    keys = {layout.catalogue_key('demo')}
    keys |= {layout.receipt_key('demo', f'R{n:04d}') for n in numbers}
    keys |= {layout.pending_key('demo', f'R{n:04d}') for n in numbers if n % 2}
    keys |= {layout.clip_key('demo', wire.clip_id(f'cam_front/{n}.webm')) for n in numbers if n % 2}
    return sorted(keys)


def make_clips(tmp_path, numbers):
    (tmp_path / 'clips' / 'cam_front').mkdir(parents=True, exist_ok=True)
    for n in numbers:
        (tmp_path / 'clips' / 'cam_front' / f'{n}.webm').write_bytes(os.urandom(150_000 + n))


def free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def started_ingest(tmp_path):
    """(keys, bucket, ingest) of a cloud ingest on a free loopback port, writing to a
    directory bucket under tmp_path."""
    keys = testing.make_keys(tmp_path / 'keys')
    bucket = DirBucket(tmp_path / 'bucket')
    ingest = Ingest(bucket, keys.server_secret, keys.enrolled, tmp_path / 'spool', bind='tcp://127.0.0.1:0')
    ingest.start()
    return keys, bucket, ingest


def test_uplink_node_delivers_to_the_bucket(tmp_path, ros):
    node, receipts, reviews = ros
    from jwo_nodes.ros_common import DURABLE_EVENT_QOS
    evidence = node.create_publisher(msgs.ReviewRequest, '/jwo/receipts/evidence', DURABLE_EVENT_QOS)
    keys, bucket, ingest = started_ingest(tmp_path)
    numbers = range(1, 7)
    make_clips(tmp_path, numbers)
    uplink = Uplink(tmp_path, keys, ingest.endpoint)
    try:
        publish_visits(receipts, reviews, numbers)
        assert wait_until(lambda: evidence.get_subscription_count() > 0, 15), 'uplink not subscribed'
        finals = [n for n in numbers if n % 2 == 0]
        for n in finals:   # the events behind a FINAL receipt: fusion was sure, no clips
            msg = review_request(n, '')
            msg.events[0].reason_code, msg.events[0].clip_refs = '', []
            evidence.publish(msg)
        expected = sorted(expected_keys(numbers) + [layout.evidence_key('demo', f'R{n:04d}') for n in finals])
        assert wait_until(lambda: stored_keys(bucket) == expected, 20), (stored_keys(bucket), uplink.log())
        assert json.loads(bucket.get(layout.evidence_key('demo', 'R0002')))['events'][0]['event_id'] == 'E2'
        document = json.loads(bucket.get(layout.receipt_key('demo', 'R0001')))
        assert document['currency'] == 'USD' and document['status'] == 'NEEDS_REVIEW'
        assert document['stamp_ns'] == 1_700_000_001_000_000_000
        clip = bucket.get(layout.clip_key('demo', wire.clip_id('cam_front/3.webm')))
        assert clip == (tmp_path / 'clips/cam_front/3.webm').read_bytes()
        # A republished receipt is recognised by the outbox: no new item, no new object.
        receipts.publish(receipt(2, False))
        time.sleep(0.5)
        assert stored_keys(bucket) == expected
    finally:
        assert uplink.stop() == 0, uplink.log()
        ingest.stop()


def test_uplink_node_killed_while_cloud_is_down_loses_nothing(tmp_path, ros):
    _, receipts, reviews = ros
    keys = testing.make_keys(tmp_path / 'keys')
    endpoint = f'tcp://127.0.0.1:{free_port()}'
    numbers = range(1, 11)
    make_clips(tmp_path, numbers)
    uplink = Uplink(tmp_path, keys, endpoint)
    publish_visits(receipts, reviews, numbers)

    def stored():
        try:
            with sqlite3.connect(f'file:{tmp_path / "outbox.sqlite3"}?mode=ro', uri=True) as db:
                return db.execute('SELECT COUNT(*) FROM items').fetchone()[0]
        except sqlite3.Error:
            return 0
    assert wait_until(lambda: stored() == 1 + 10 + 5 + 5, 15), uplink.log()   # the catalogue, receipts, reviews, clips
    uplink.stop(signal.SIGKILL)

    bucket = DirBucket(tmp_path / 'bucket')
    ingest = Ingest(bucket, keys.server_secret, keys.enrolled, tmp_path / 'spool', bind=endpoint)
    ingest.start()
    uplink = Uplink(tmp_path, keys, endpoint)
    try:
        assert wait_until(lambda: stored_keys(bucket) == expected_keys(numbers), 20), (
            stored_keys(bucket), uplink.log())
        # The ingest counts an object after writing it: the listing can see it first. The
        # restarted uplink sent its catalogue once more (written over the first).
        assert wait_until(lambda: ingest.counters()['objects_written'] == len(expected_keys(numbers)) + 1, 5), \
            ingest.counters()
    finally:
        assert uplink.stop() == 0, uplink.log()
        ingest.stop()


def test_a_receipts_token_hash_reaches_the_cloud_whichever_comes_first(tmp_path, ros):
    node, receipts, _ = ros
    from jwo_nodes.ros_common import DURABLE_EVENT_QOS
    access = node.create_publisher(msgs.VisitAccess, '/jwo/gates/G1/access', DURABLE_EVENT_QOS)
    keys, bucket, ingest = started_ingest(tmp_path)
    uplink = Uplink(tmp_path, keys, ingest.endpoint)
    tokens = {n: f'token-of-visit-{n}' for n in (1, 2)}

    def gate_access(n):
        msg = msgs.VisitAccess(gate_id='G1', visit_code=f'V{n:04d}',
                               token_sha256=list(bytes.fromhex(payer.token_sha256(tokens[n]))))
        access.publish(msg)

    def paid_receipt(n):
        msg = receipt(n, False)
        msg.entry_gate_id = 'G1'
        receipts.publish(msg)
    try:
        assert wait_until(lambda: access.get_subscription_count() > 0
                          and receipts.get_subscription_count() > 0, 15), uplink.log()
        gate_access(1)      # at the entry, as in a store
        paid_receipt(1)
        paid_receipt(2)     # the receipt first (durable topics replayed after a restart)
        gate_access(2)
        for n, token in tokens.items():
            assert wait_until(lambda: payer.find(bucket, token) is not None
                              and payer.find(bucket, token).token_sha256, 20), (n, uplink.log())
            assert payer.find(bucket, token).receipt_id == f'R{n:04d}'
        # The ingest queues a delivery just after linking the hash: the page can see it first.
        assert wait_until(lambda: len(list(bucket.list(layout.DELIVERY_PENDING))) == 2, 5)
    finally:
        assert uplink.stop() == 0, uplink.log()
        ingest.stop()


def test_missing_key_file_is_one_clear_error(tmp_path):
    keys = testing.make_keys(tmp_path / 'keys')
    keys.store_secret = tmp_path / 'nowhere.key_secret'
    uplink = Uplink(tmp_path, keys, 'tcp://127.0.0.1:9')
    assert uplink.process.wait(20) == 2
    assert 'error:' in uplink.log() and 'nowhere.key_secret' in uplink.log()
