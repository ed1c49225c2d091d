"""Reliability of the edge-to-cloud path: the ingest down for a while, the uplink killed
mid-transfer, the ingest restarted mid-clip, bucket writes failing. In every case each
item ends up as exactly one object and nothing is lost."""
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLOUD = Path(__file__).resolve().parent.parent / 'cloud'
sys.path.insert(0, str(CLOUD))

from jwo_cloud import convert, layout, review_queue, testing, wire  # noqa: E402
from jwo_cloud.bucket import DirBucket, S3Bucket  # noqa: E402
from jwo_cloud.ingest import Ingest  # noqa: E402
from jwo_cloud.testing import wait_until  # noqa: E402
from jwo_cloud.uplink import UplinkSender  # noqa: E402
from jwo_nodes.core.outbox import NewItem, Outbox  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.fixture
def cloud_keys(tmp_path):
    return testing.make_keys(tmp_path / 'keys')


def new_ingest(bucket, cloud_keys, spool, endpoint):
    ingest = Ingest(bucket, cloud_keys.server_secret, cloud_keys.enrolled, spool, bind=endpoint)
    ingest.start()
    return ingest


def enqueue(outbox, first, count, clips=()):
    """count visits: a NEEDS_REVIEW receipt and its review request (with clips) for odd
    n, a FINAL receipt for even n. Returns the object keys they must become."""
    expected = set()
    for n in range(first, first + count):
        status = n % 2
        items = convert.receipt_items(testing.fake_receipt(n, status=status), 'demo', 1, 'USD', 825)
        expected.add(layout.receipt_key('demo', f'R{n:05d}'))
        if status:
            items += convert.review_items(testing.fake_review(n, clips), 'demo', 1)
            expected.add(layout.pending_key('demo', f'R{n:05d}'))
        outbox.add([NewItem(*item) for item in items])
    expected |= {layout.clip_key('demo', wire.clip_id(ref)) for ref in clips}
    return expected


def all_keys(bucket):
    """The items' objects; the queue's index (checked here) lists the visits in review."""
    keys = sorted(key for key in bucket.list('') if key != layout.QUEUE_INDEX)
    queued = [layout.pending_key(e.store_id, e.receipt_id) for e in review_queue.read(bucket).ordered()]
    assert sorted(queued) == [key for key in keys if key.startswith(layout.PENDING_PREFIX)]
    return keys


def test_ingest_down_for_a_while_everything_arrives_once(tmp_path, cloud_keys):
    clip = tmp_path / 'clip.webm'
    clip.write_bytes(os.urandom(600_000))
    endpoint = f'tcp://127.0.0.1:{free_port()}'
    outbox = Outbox(tmp_path / 'outbox.db')
    expected = enqueue(outbox, 0, 20, clips=[str(clip)])
    sender = UplinkSender(outbox, endpoint, cloud_keys.store_secret, cloud_keys.server_public,
                          ack_timeout_s=1.0, backoff_max_s=1.0, chunk_bytes=128 * 1024)
    sender.start()
    with testing.moto_s3('jwo-outage') as s3:
        bucket = S3Bucket('jwo-outage', endpoint_url=s3)
        ingest = None
        try:
            time.sleep(1.5)   # the store keeps selling while the cloud is unreachable
            expected |= enqueue(outbox, 20, 10)
            sender.wake()
            assert outbox.counts()['done'] == 0 and sender.counters['not_connected'] > 0
            ingest = new_ingest(bucket, cloud_keys, tmp_path / 'spool', endpoint)
            assert wait_until(lambda: outbox.counts()['pending'] == 0, 30), outbox.counts()
            assert all_keys(bucket) == sorted(expected)     # exactly one object per item
            assert outbox.counts() == {'pending': 0, 'done': 30 + 15 + 1, 'rejected': 0}
            data = bucket.get(layout.clip_key('demo', wire.clip_id(str(clip))))
            assert data == clip.read_bytes()
        finally:
            sender.stop()
            if ingest is not None:
                ingest.stop()


def test_bucket_failures_are_retried_and_never_acked(tmp_path, cloud_keys):
    clip = tmp_path / 'clip.mp4'
    clip.write_bytes(os.urandom(300_000))
    bucket = testing.FlakyBucket(DirBucket(tmp_path / 'bucket'))
    bucket.failing.set()
    ingest = new_ingest(bucket, cloud_keys, tmp_path / 'spool', 'tcp://127.0.0.1:0')
    outbox = Outbox(tmp_path / 'outbox.db')
    expected = enqueue(outbox, 0, 6, clips=[str(clip)])
    sender = UplinkSender(outbox, ingest.endpoint, cloud_keys.store_secret,
                          cloud_keys.server_public, ack_timeout_s=2.0, backoff_min_s=0.05,
                          backoff_max_s=0.3, chunk_bytes=100_000)
    sender.start()
    try:
        assert wait_until(lambda: bucket.failed_writes >= 10, 10)
        counts = ingest.counters()
        assert counts['acked_ok'] == 0 and counts['bucket_errors'] >= 10
        assert outbox.counts()['done'] == 0 and all_keys(bucket) == []
        assert wait_until(lambda: sender.counters['retries'] >= 10, 5)
        assert outbox.counts()['done'] == 0 and ingest.counters()['acked_ok'] == 0
        bucket.failing.clear()
        assert wait_until(lambda: outbox.counts()['pending'] == 0, 15), outbox.counts()
        assert all_keys(bucket) == sorted(expected)
        assert bucket.get(layout.clip_key('demo', wire.clip_id(str(clip)))) == clip.read_bytes()
    finally:
        sender.stop()
        ingest.stop()


def uplink_process(tmp_path, cloud_keys, endpoint, log_name):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(CLOUD), str(CLOUD.parent), os.environ.get('PYTHONPATH', '')]))
    return subprocess.Popen(
        [sys.executable, '-m', 'jwo_cloud', 'uplink', '--outbox', str(tmp_path / 'outbox.db'),
         '--endpoint', endpoint, '--store-key', str(cloud_keys.store_secret),
         '--ingest-key', str(cloud_keys.server_public), '--chunk-bytes', str(32 * 1024),
         '--ack-timeout-s', '2', '--backoff-max-s', '0.5', '--exit-when-empty'],
        env=env, stdout=open(tmp_path / log_name, 'w'), stderr=subprocess.STDOUT)


def test_uplink_killed_mid_transfer_resumes(tmp_path, cloud_keys):
    clip = tmp_path / 'big.webm'
    clip.write_bytes(os.urandom(6 * 1024 * 1024))     # 192 chunks of 32 KiB
    bucket = DirBucket(tmp_path / 'bucket')
    ingest = new_ingest(bucket, cloud_keys, tmp_path / 'spool', 'tcp://127.0.0.1:0')
    outbox = Outbox(tmp_path / 'outbox.db')
    expected = enqueue(outbox, 0, 8, clips=[str(clip)])
    outbox.close()
    try:
        first = uplink_process(tmp_path, cloud_keys, ingest.endpoint, 'uplink1.log')
        assert wait_until(lambda: ingest.counters()['acked_progress'] >= 20, 20), \
            (tmp_path / 'uplink1.log').read_text()
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        outbox = Outbox(tmp_path / 'outbox.db')
        progress = outbox.get(f'clip:{wire.clip_id(str(clip))}').progress
        assert 0 < progress < clip.stat().st_size, 'killed mid-clip'
        outbox.close()
        second = uplink_process(tmp_path, cloud_keys, ingest.endpoint, 'uplink2.log')
        assert second.wait(60) == 0, (tmp_path / 'uplink2.log').read_text()
        assert all_keys(bucket) == sorted(expected)
        stored = bucket.get(layout.clip_key('demo', wire.clip_id(str(clip))))
        assert hashlib.sha256(stored).digest() == hashlib.sha256(clip.read_bytes()).digest()
        # Resumed where the ingest had got to, not from the start.
        assert ingest.counters()['clip_bytes'] == clip.stat().st_size
    finally:
        ingest.stop()


def test_ingest_restarted_mid_clip_resumes_from_its_spool(tmp_path, cloud_keys):
    clip = tmp_path / 'big.mp4'
    clip.write_bytes(os.urandom(4 * 1024 * 1024))
    bucket = DirBucket(tmp_path / 'bucket')
    endpoint = f'tcp://127.0.0.1:{free_port()}'
    ingest = new_ingest(bucket, cloud_keys, tmp_path / 'spool', endpoint)
    outbox = Outbox(tmp_path / 'outbox.db')
    expected = enqueue(outbox, 1, 1, clips=[str(clip)])
    sender = UplinkSender(outbox, endpoint, cloud_keys.store_secret, cloud_keys.server_public,
                          ack_timeout_s=1.0, backoff_max_s=0.5, chunk_bytes=16 * 1024)
    sender.start()
    try:
        assert wait_until(lambda: ingest.counters()['acked_progress'] >= 30, 20)
        ingest.stop()
        first_bytes = ingest.counters()['clip_bytes']
        assert first_bytes < clip.stat().st_size
        ingest = new_ingest(bucket, cloud_keys, tmp_path / 'spool', endpoint)
        assert wait_until(lambda: outbox.counts()['pending'] == 0, 30), outbox.counts()
        assert all_keys(bucket) == sorted(expected)
        assert bucket.get(layout.clip_key('demo', wire.clip_id(str(clip)))) == clip.read_bytes()
        # The new ingest continued from the spooled part (at most a chunk or two again).
        assert ingest.counters()['clip_bytes'] <= clip.stat().st_size - first_bytes + 2 * 16 * 1024
    finally:
        sender.stop()
        ingest.stop()


def test_clip_written_after_its_review_request_is_waited_for(tmp_path, cloud_keys):
    """The clip writer finishes after the uplink stored the review request: the clip is
    sent when it appears, and the review entry still only after it."""
    bucket = DirBucket(tmp_path / 'bucket')
    ingest = new_ingest(bucket, cloud_keys, tmp_path / 'spool', 'tcp://127.0.0.1:0')
    outbox = Outbox(tmp_path / 'outbox.db')
    ref = 'demo/R00001/E1.cam_front.mp4'
    expected = enqueue(outbox, 1, 1, clips=[ref])
    sender = UplinkSender(outbox, ingest.endpoint, cloud_keys.store_secret,
                          cloud_keys.server_public, clip_root=str(tmp_path / 'clips'),
                          clip_wait_s=30.0)
    sender.start()
    try:
        assert wait_until(lambda: layout.receipt_key('demo', 'R00001') in all_keys(bucket), 10)
        time.sleep(1.5)
        assert all_keys(bucket) == [layout.receipt_key('demo', 'R00001')]   # review waits
        clip = tmp_path / 'clips' / ref
        clip.parent.mkdir(parents=True)
        clip.write_bytes(os.urandom(200_000))
        assert wait_until(lambda: outbox.counts()['pending'] == 0, 15), outbox.counts()
        assert all_keys(bucket) == sorted(expected)
        assert bucket.get(layout.clip_key('demo', wire.clip_id(ref))) == clip.read_bytes()
        assert sender.counters['clip_missing'] == 0 and sender.counters['retries'] == 0
        assert outbox.get(f'clip:{wire.clip_id(ref)}').attempts == 0
    finally:
        sender.stop()
        ingest.stop()


def test_clip_never_written_is_missing_after_clip_wait_s(tmp_path, cloud_keys):
    bucket = DirBucket(tmp_path / 'bucket')
    ingest = new_ingest(bucket, cloud_keys, tmp_path / 'spool', 'tcp://127.0.0.1:0')
    outbox = Outbox(tmp_path / 'outbox.db')
    ref = 'demo/R00001/E1.cam_front.mp4'
    expected = enqueue(outbox, 1, 1, clips=[ref])
    sender = UplinkSender(outbox, ingest.endpoint, cloud_keys.store_secret,
                          cloud_keys.server_public, clip_root=str(tmp_path / 'clips'),
                          clip_wait_s=1.0)
    started = time.monotonic()
    sender.start()
    try:
        assert wait_until(lambda: outbox.counts()['pending'] == 0, 15), outbox.counts()
        assert time.monotonic() - started >= 1.0
        assert sender.counters['clip_missing'] == 1
        assert outbox.counts() == {'pending': 0, 'done': 2, 'rejected': 1}
        # The receipt and the review entry arrive without the clip.
        assert all_keys(bucket) == sorted(expected - {layout.clip_key('demo', wire.clip_id(ref))})
    finally:
        sender.stop()
        ingest.stop()
