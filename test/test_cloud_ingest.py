"""Uplink -> ingest -> bucket over ZeroMQ + CURVE, on loopback: a directory bucket and a
real S3-API server (moto). Enrolment, refusal of unknown keys, and garbage at the ingest."""
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'cloud'))

from jwo_cloud import convert, keys, layout, testing, wire  # noqa: E402
from jwo_cloud.bucket import DirBucket, S3Bucket  # noqa: E402
from jwo_cloud.ingest import Ingest, validate  # noqa: E402
from jwo_cloud.testing import wait_until  # noqa: E402
from jwo_cloud.uplink import UplinkSender  # noqa: E402
from jwo_cloud.wire import pb  # noqa: E402
from jwo_nodes.core.outbox import NewItem, Outbox  # noqa: E402


@pytest.fixture
def cloud_keys(tmp_path):
    return testing.make_keys(tmp_path / 'keys')


@pytest.fixture
def running(tmp_path, cloud_keys):
    """start(bucket) -> Ingest listening on a free loopback port; stopped afterwards."""
    started = []

    def start(bucket, **options):
        ingest = Ingest(bucket, cloud_keys.server_secret, cloud_keys.enrolled,
                        tmp_path / f'spool{len(started)}', bind='tcp://127.0.0.1:0', **options)
        ingest.start()
        started.append(ingest)
        return ingest
    yield start
    for ingest in started:
        ingest.stop()


def make_sender(outbox, endpoint, cloud_keys, store_secret=None, **options):
    options.setdefault('ack_timeout_s', 2.0)
    options.setdefault('backoff_max_s', 0.5)
    return UplinkSender(outbox, endpoint, store_secret or cloud_keys.store_secret,
                        cloud_keys.server_public, **options)


def enqueue(outbox, first, count, clips=(), final_every=3):
    for n in range(first, first + count):
        status = 0 if n % final_every == 0 else 1
        items = convert.receipt_items(testing.fake_receipt(n, status=status), 'demo', 1, 'USD', 825)
        if status == 1:
            items += convert.review_items(testing.fake_review(n, clips), 'demo', 1)
        outbox.add([NewItem(*item) for item in items])


def run_path(tmp_path, bucket, running, cloud_keys):
    clip_a = tmp_path / 'a.webm'
    clip_a.write_bytes(os.urandom(2_500_000))
    clip_b = tmp_path / 'b.mp4'
    clip_b.write_bytes(b'')   # an empty clip is a clip too
    ingest = running(bucket)
    order = []
    ingest.on_written = order.append
    outbox = Outbox(tmp_path / 'outbox.db')
    enqueue(outbox, 0, 12, clips=[str(clip_a), str(clip_b)])
    sender = make_sender(outbox, ingest.endpoint, cloud_keys, chunk_bytes=256 * 1024)
    sender.start()
    try:
        assert wait_until(lambda: outbox.counts()['pending'] == 0, 30), (outbox.counts(), sender.counters)
    finally:
        sender.stop()
    keys_now = sorted(bucket.list(''))
    receipts = [k for k in keys_now if '/receipts/' in k]
    pending = [k for k in keys_now if k.startswith('review/pending/')]
    clips = [k for k in keys_now if '/clips/' in k]
    assert len(receipts) == 12 and len(pending) == 8 and len(clips) == 2, keys_now
    assert outbox.counts() == {'pending': 0, 'done': 12 + 8 + 2, 'rejected': 0}
    clip_key = layout.clip_key('demo', wire.clip_id(str(clip_a)))
    assert hashlib.sha256(bucket.get(clip_key)).digest() == hashlib.sha256(clip_a.read_bytes()).digest()
    assert bucket.head(clip_key)['content_type'] == 'video/webm'
    receipt = json.loads(bucket.get(layout.receipt_key('demo', 'R00001')))
    assert receipt['status'] == 'NEEDS_REVIEW' and receipt['total_cents'] == 538
    assert receipt['lines'][0]['sku'] == 'COLA-330' and receipt['tax_rate_bp'] == 825
    entry = json.loads(bucket.get(layout.pending_key('demo', 'R00001')))
    assert entry['request']['events'][0]['clip_keys'][0] == clip_key
    # Order within a visit: the receipt, then its clips, then the review entry.
    for n in (1, 2, 4):
        mine = [k for k in order if f'R{n:05d}' in k or '/clips/' in k]
        assert mine.index(layout.receipt_key('demo', f'R{n:05d}')) < mine.index(
            layout.pending_key('demo', f'R{n:05d}'))
    # The clips went with the first visit that referenced them, before its review entry
    # (a later visit sharing a clip does not wait for it: the UI says "not uploaded yet").
    assert all(order.index(k) < order.index(layout.pending_key('demo', 'R00001')) for k in clips)
    assert ingest.counters()['objects_written'] == 22
    return ingest, outbox


def test_directory_bucket_end_to_end(tmp_path, running, cloud_keys):
    bucket = DirBucket(tmp_path / 'bucket')
    ingest, _ = run_path(tmp_path, bucket, running, cloud_keys)
    assert not any((tmp_path / 'bucket' / '.tmp').iterdir())


def test_s3_bucket_end_to_end_and_redelivery_is_idempotent(tmp_path, running, cloud_keys):
    with testing.moto_s3('jwo-ingest') as endpoint:
        bucket = S3Bucket('jwo-ingest', endpoint_url=endpoint)
        ingest, outbox = run_path(tmp_path, bucket, running, cloud_keys)
        before = sorted(bucket.list(''))
        # Deliver every item again (what a lost ack causes): same objects, no new ones.
        for kind in ('receipt', 'review'):
            for n in (1, 2):
                envelope = pb.Envelope.FromString(outbox.get(f'{kind}:R{n:05d}').payload)
                assert ingest.process('demo', envelope).status == pb.OK
        assert sorted(bucket.list('')) == before
        assert ingest.counters()['duplicates'] >= 4


def test_unknown_key_is_refused_until_enrolled(tmp_path, running, cloud_keys):
    ingest = running(DirBucket(tmp_path / 'bucket'))
    _, stranger_secret = keys.keygen(tmp_path / 'stranger', 'store')
    stranger_public = tmp_path / 'stranger' / 'store.key'
    outbox = Outbox(tmp_path / 'outbox.db')
    enqueue(outbox, 0, 3)
    sender = make_sender(outbox, ingest.endpoint, cloud_keys, store_secret=stranger_secret)
    sender.start()
    try:
        assert wait_until(lambda: ingest.counters()['zap_denied_unknown_key'] >= 2, 10)
        assert outbox.counts()['done'] == 0 and ingest.counters()['frames_received'] == 0
        # Enrolled as another store: connected, but envelopes for store demo are refused
        # (and kept by the store, since this is not the items' fault).
        keys.enroll(cloud_keys.enrolled, 'demo2', stranger_public)
        assert wait_until(lambda: ingest.counters()['rejected_unauthorized'] > 0, 10)
        assert outbox.counts()['done'] == 0 and outbox.counts()['rejected'] == 0
        # The right enrolment takes effect without restarting either side.
        keys.revoke(cloud_keys.enrolled, 'demo2')
        keys.enroll(cloud_keys.enrolled, 'demo', stranger_public)
        assert wait_until(lambda: outbox.counts()['pending'] == 0, 15), outbox.counts()
        assert outbox.counts()['done'] == 5 and sender.counters['reconnects'] >= 1
    finally:
        sender.stop()


def test_revoked_key_is_refused_on_an_open_connection(tmp_path, running, cloud_keys):
    ingest = running(DirBucket(tmp_path / 'bucket'))
    outbox = Outbox(tmp_path / 'outbox.db')
    enqueue(outbox, 0, 1, final_every=1)
    sender = make_sender(outbox, ingest.endpoint, cloud_keys)
    sender.start()
    try:
        assert wait_until(lambda: outbox.counts()['done'] == 1, 10)
        keys.revoke(cloud_keys.enrolled, 'demo')
        import time
        time.sleep(1.1)
        enqueue(outbox, 1, 1, final_every=1)
        sender.wake()
        assert wait_until(lambda: ingest.counters()['rejected_unauthorized'] >= 1, 10)
        assert outbox.counts() == {'pending': 1, 'done': 1, 'rejected': 0}
    finally:
        sender.stop()


def raw_dealer(context, cloud_keys, secret=None):
    public, secret_key = keys.load_pair(secret or cloud_keys.store_secret)
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.curve_publickey, socket.curve_secretkey = public, secret_key
    socket.curve_serverkey = keys.load_public(cloud_keys.server_public)
    socket.rcvtimeo = 5000
    return socket


def test_garbage_is_rejected_counted_and_ingest_keeps_serving(tmp_path, running, cloud_keys):
    bucket = DirBucket(tmp_path / 'bucket')
    ingest = running(bucket, max_frame_bytes=1 << 20)
    context = zmq.Context()
    try:
        socket = raw_dealer(context, cloud_keys)
        socket.connect(ingest.endpoint)

        def answer(*frames):
            socket.send_multipart(list(frames))
            return pb.Ack.FromString(socket.recv())

        good = convert.receipt_items(testing.fake_receipt(1), 'demo', 1)[0][3]
        assert answer(b'\xff\xff\xff\xff').status == pb.REJECTED                 # not protobuf
        assert answer(good, b'extra').status == pb.REJECTED                    # two parts
        assert answer(b'').status == pb.REJECTED                               # empty
        assert answer(os.urandom(2 << 20)).status == pb.REJECTED               # oversized
        wrong = pb.Envelope.FromString(good)
        wrong.schema_version = 7
        assert answer(wrong.SerializeToString()).status == pb.REJECTED
        wrong = pb.Envelope.FromString(good)
        wrong.store_id = wrong.receipt.store_id = 'someone-else'
        ack = answer(wrong.SerializeToString())
        assert ack.status == pb.UNAUTHORIZED and ack.detail.startswith("store 'someone-else'")
        ack = answer(good)
        assert ack.status == pb.OK and ack.object_key == layout.receipt_key('demo', 'R00001')
        counts = ingest.counters()
        assert counts['rejected_bad_protobuf'] == 1 and counts['rejected_malformed'] == 2
        assert counts['rejected_oversized'] == 1 and counts['rejected_invalid'] == 1
        assert counts['rejected_unauthorized'] == 1

        # Above the hard limit libzmq drops the connection before buffering the frame.
        huge = raw_dealer(context, cloud_keys)
        huge.connect(ingest.endpoint)
        huge.send(b'\0' * (ingest.hard_max_bytes + 1))
        # A client without CURVE never gets through the handshake.
        plain = context.socket(zmq.DEALER)
        plain.linger = 0
        plain.connect(ingest.endpoint)
        plain.send(good)
        other = convert.receipt_items(testing.fake_receipt(2), 'demo', 1)[0][3]
        assert answer(other).status == pb.OK
        assert ingest.counters()['frames_received'] == 8
        assert len(list(bucket.list('stores/'))) == 2
    finally:
        context.destroy(linger=0)


def test_a_final_receipts_evidence_is_kept_beside_it_not_queued(tmp_path):
    bucket = DirBucket(tmp_path / 'bucket')
    ingest = testing.local_ingest(bucket, tmp_path)
    testing.seed_paid_visit(ingest, 1, 'tok-1')
    (item, visit, kind, payload), = convert.evidence_items(testing.fake_evidence(1), 'demo', 5)
    assert (item, visit, kind) == ('evidence:R00001', 'visit:V00001', wire.EVIDENCE)
    envelope = pb.Envelope.FromString(payload)
    key = layout.evidence_key('demo', 'R00001')
    assert ingest.process('demo', envelope).object_key == key
    assert ingest.process('demo', envelope).status == pb.OK            # a redelivery
    stored = json.loads(bucket.get(key))
    assert [(e['event_id'], e['reason_code'], e['proposed_visit'], e['clip_ids']) for e in stored['events']] == [
        ('E1-1', '', 'V00001', [])]
    assert stored['uplink'] == {'item_id': 'evidence:R00001', 'created_ns': 5}
    assert list(bucket.list('review/')) == [] and ingest.counters()['duplicates'] == 1
    # Refused: another item id, a dispute's receipt id, clips (cut only for reviews).
    wrong = pb.Envelope.FromString(payload)
    wrong.item_id = 'review:R00001'
    assert validate(wrong, 'demo') == 'item_id does not match the receipt evidence'
    wrong = pb.Envelope.FromString(payload)
    wrong.receipt_evidence.receipt_id = wrong.item_id = layout.dispute_id('R00001', 1)
    assert validate(wrong, 'demo').startswith('invalid receipt_id')
    wrong = pb.Envelope.FromString(payload)
    wrong.receipt_evidence.events[0].clip_refs.append('clips/a.webm')
    wrong.receipt_evidence.events[0].clip_ids.append(wire.clip_id('clips/a.webm'))
    assert validate(wrong, 'demo').startswith('receipt evidence with clips')
