"""Helpers for the cloud tests and the benchmark: keys in a temporary directory, a real
S3-API server on loopback (moto), a bucket that fails on demand, and stand-ins for the
ROS messages (same attribute names as the jwo messages) so the pure parts run without ROS."""
import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from jwo_cloud import keys
from jwo_cloud.bucket import Bucket, BucketError


@dataclass
class Keys:
    server_secret: Path
    server_public: Path
    store_secret: Path
    store_public: Path
    enrolled: Path


def make_keys(directory, store_id: str = 'demo') -> Keys:
    directory = Path(directory)
    server_public, server_secret = keys.keygen(directory / 'cloud', 'ingest')
    store_public, store_secret = keys.keygen(directory / 'edge', 'store')
    keys.enroll(directory / 'enrolled', store_id, store_public)
    return Keys(server_secret, server_public, store_secret, store_public, directory / 'enrolled')


def stamp(ns: int) -> SimpleNamespace:
    return SimpleNamespace(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def fake_receipt(n: int, store_id: str = 'demo', status: int = 1, lines=None):
    """A jwo/Receipt look-alike; status 1 = NEEDS_REVIEW, 0 = FINAL."""
    lines = lines if lines is not None else [('COLA-330', 'Cola 330 ml can', 2, 149),
                                             ('CHOC-100', 'Dark chocolate 100 g', 1, 199)]
    cart = [SimpleNamespace(sku=s, name=name, quantity=q, unit_price_cents=u,
                            line_total_cents=q * u, confidence=0.8) for s, name, q, u in lines]
    subtotal = sum(line.line_total_cents for line in cart)
    tax = (subtotal * 825 + 5000) // 10000
    exit_ns = 1_700_000_000_000_000_000 + n * 1_000_000_000
    return SimpleNamespace(
        header=SimpleNamespace(stamp=stamp(exit_ns)), receipt_id=f'R{n:05d}', store_id=store_id,
        visit_code=f'V{n:05d}', entry_stamp=stamp(exit_ns - 120_000_000_000),
        exit_stamp=stamp(exit_ns), lines=cart, subtotal_cents=subtotal, tax_cents=tax,
        total_cents=subtotal + tax, status=status,
        reasons=[SimpleNamespace(code='ambiguous_attribution', event_id=f'E{n}-1',
                                 detail='two shoppers at S1')] if status == 1 else [],
        confidence=0.55)


def fake_review(n: int, clip_refs=(), store_id: str = 'demo'):
    exit_ns = 1_700_000_000_000_000_000 + n * 1_000_000_000
    event = SimpleNamespace(
        event_id=f'E{n}-1', reason_code='ambiguous_attribution', shelf_id='S1',
        bin_ids=['S1-B1'], delta_grams=[-700.0], window_start=stamp(exit_ns - 60_000_000_000),
        window_end=stamp(exit_ns - 59_000_000_000), candidate_visits=[f'V{n:05d}', 'V99999'],
        candidate_scores=[0.55, 0.45], proposed_sku='COLA-330', proposed_quantity=2,
        camera_ids=['cam_front'], clip_refs=list(clip_refs),
        candidate_skus=['COLA-330', 'MILK-1L'], candidate_quantities=[2, 1],
        candidate_unit_grams=[350.0, 1050.0], candidate_product_scores=[0.9, 0.1])
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp(exit_ns)), receipt_id=f'R{n:05d}',
                           store_id=store_id, visit_code=f'V{n:05d}', events=[event])


class FlakyBucket(Bucket):
    """Wraps a bucket; while ``failing`` is set every write raises BucketError."""

    def __init__(self, inner: Bucket):
        self.inner = inner
        self.url = inner.url
        self.failing = threading.Event()
        self.failed_writes = 0

    def _check(self):
        if self.failing.is_set():
            self.failed_writes += 1
            raise BucketError('injected bucket failure')

    def put(self, key, data, content_type='application/json', if_none_match=False, metadata=None):
        self._check()
        return self.inner.put(key, data, content_type, if_none_match, metadata)

    def put_file(self, key, path, content_type, metadata=None):
        self._check()
        return self.inner.put_file(key, path, content_type, metadata)

    def get(self, key, byte_range=None):
        return self.inner.get(key, byte_range)

    def head(self, key):
        return self.inner.head(key)

    def list(self, prefix):
        return self.inner.list(prefix)

    def delete(self, key):
        return self.inner.delete(key)

    def location(self, key_prefix=''):
        return self.inner.location(key_prefix)


@contextlib.contextmanager
def moto_s3(bucket_name: str = 'jwo-test'):
    """A real S3-API server (moto's ThreadedMotoServer) on 127.0.0.1 with one bucket;
    yields its endpoint URL. Credentials are dummies, set in the environment."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer
    logging.getLogger('werkzeug').setLevel(logging.ERROR)
    for name, value in (('AWS_ACCESS_KEY_ID', 'testing'), ('AWS_SECRET_ACCESS_KEY', 'testing'),
                        ('AWS_DEFAULT_REGION', 'us-east-1')):
        os.environ.setdefault(name, value)
    server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f'http://{host}:{port}'
    try:
        boto3.client('s3', endpoint_url=endpoint).create_bucket(Bucket=bucket_name)
        yield endpoint
    finally:
        server.stop()


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def seed_visits(bucket: Bucket, directory, numbers, clip: bytes = None,
                clip_name: str = 'cam_front-1.webm', store_id: str = 'demo') -> dict:
    """Writes visits in doubt to the bucket the way the ingest does (receipt, clip,
    review entry) without a network: {n: clip_id}."""
    import hashlib

    from jwo_cloud import convert
    from jwo_cloud.ingest import Ingest
    from jwo_cloud.wire import pb
    directory = Path(directory)
    if not (directory / 'keys' / 'cloud' / 'ingest.key_secret').exists():
        make_keys(directory / 'keys', store_id)
    ingest = Ingest(bucket, directory / 'keys' / 'cloud' / 'ingest.key_secret',
                    directory / 'keys' / 'enrolled', directory / 'spool')
    clip_ids = {}
    for n in numbers:
        refs = [f'/var/jwo/clips/{n}/{clip_name}'] if clip is not None else []
        items = convert.receipt_items(fake_receipt(n, store_id), store_id, 1, 'USD', 825)
        items += convert.review_items(fake_review(n, refs, store_id), store_id, 1)
        for _, _, kind, payload in items:
            envelope = pb.Envelope.FromString(payload)
            if kind == 'clip':
                chunk = envelope.clip_chunk
                chunk.data, chunk.total_size, chunk.last = clip, len(clip), True
                chunk.sha256 = hashlib.sha256(clip).hexdigest()
                clip_ids[n] = chunk.clip_id
            ack = ingest.process(store_id, envelope)
            assert ack.status == pb.OK, ack
    return clip_ids
