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
                            line_total_cents=q * u, confidence=0.8, sold_by_weight=False, grams=0,
                            age_restricted=False, id_verified=False) for s, name, q, u in lines]
    subtotal = sum(line.line_total_cents for line in cart)
    tax = (subtotal * 825 + 5000) // 10000
    exit_ns = 1_700_000_000_000_000_000 + n * 1_000_000_000
    return SimpleNamespace(
        header=SimpleNamespace(stamp=stamp(exit_ns)), receipt_id=f'R{n:05d}', store_id=store_id,
        visit_code=f'V{n:05d}', entry_stamp=stamp(exit_ns - 120_000_000_000),
        exit_stamp=stamp(exit_ns), lines=cart, savings=[], savings_cents=0, subtotal_cents=subtotal, tax_cents=tax,
        total_cents=subtotal + tax, status=status,
        reasons=[SimpleNamespace(code='ambiguous_attribution', event_id=f'E{n}-1',
                                 detail='two shoppers at S1')] if status == 1 else [],
        confidence=0.55)


def fake_priced_receipt():
    """A receipt with a 2-for-2.50 on its colas and apples by weight (328 cents a kg)."""
    receipt = fake_receipt(5, lines=[('COLA-330', 'Cola 330 ml can', 2, 149)])
    receipt.lines.append(SimpleNamespace(sku='APPLE-1', name='Apples (loose)', quantity=3, unit_price_cents=328,
                                         line_total_cents=177, confidence=1.0, sold_by_weight=True, grams=541,
                                         age_restricted=False, id_verified=False))
    receipt.savings = [SimpleNamespace(promotion_id='cola-2-for-250', name='Any 2 colas for 2.50',
                                       skus=['COLA-330'], cents=48)]
    receipt.savings_cents = 48
    receipt.subtotal_cents = 298 + 177 - 48
    receipt.tax_cents = (receipt.subtotal_cents * 825 + 5000) // 10000
    receipt.total_cents = receipt.subtotal_cents + receipt.tax_cents
    return receipt


def fake_store(store_id: str = 'demo'):
    """A jwo_nodes StoreConfig look-alike: four products on one shelf, one gate."""
    products = {sku: SimpleNamespace(sku=sku, name=name, unit_grams=grams, tolerance_grams=tolerance,
                                     price_cents=price, price_per_kg_cents=None, age_restricted=False)
                for sku, name, grams, tolerance, price in (
                    ('COLA-330', 'Cola 330 ml can', 350.0, 6.0, 149),
                    ('CHOC-100', 'Dark chocolate 100 g', 108.0, 3.0, 199),
                    ('GUM-10', 'Chewing gum', 32.0, 2.0, 129),
                    ('MILK-1L', 'Milk 1 l', 1050.0, 10.0, 139))}
    bins = tuple(SimpleNamespace(id=f'S1-B{n + 1}', sku=sku, x=2.0 + n, y=1.2)
                 for n, sku in enumerate(products))
    return SimpleNamespace(store_id=store_id, name='Test store', currency='USD', tax_rate_bp=825,
                           products=products, shelves={'S1': SimpleNamespace(id='S1', bins=bins)},
                           gates={'G1': SimpleNamespace(id='G1', x=0.6, y=4.0, radius_m=0.8)})


def fake_review(n: int, clip_refs=(), store_id: str = 'demo'):
    exit_ns = 1_700_000_000_000_000_000 + n * 1_000_000_000
    event = SimpleNamespace(
        event_id=f'E{n}-1', reason_code='ambiguous_attribution', shelf_id='S1',
        bin_ids=['S1-B1'], delta_grams=[-700.0], window_start=stamp(exit_ns - 60_000_000_000),
        window_end=stamp(exit_ns - 59_000_000_000), candidate_visits=[f'V{n:05d}', 'V99999'],
        candidate_scores=[0.55, 0.45], proposed_sku='COLA-330', proposed_quantity=2,
        camera_ids=['cam_front'], clip_refs=list(clip_refs),
        candidate_skus=['COLA-330', 'MILK-1L'], candidate_quantities=[2, 1],
        candidate_unit_grams=[350.0, 1050.0], candidate_product_scores=[0.9, 0.1],
        proposed_visit=f'V{n:05d}', tracks=[])
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp(exit_ns)), receipt_id=f'R{n:05d}',
                           store_id=store_id, visit_code=f'V{n:05d}', events=[event])


def fake_evidence(n: int, store_id: str = 'demo'):
    """The events behind a FINAL receipt as fusion_node publishes them (receipts/evidence):
    fake_review's event, fusion sure of it, without clips."""
    evidence = fake_review(n, (), store_id)
    evidence.events[0].reason_code = ''
    evidence.events[0].candidate_visits, evidence.events[0].candidate_scores = [f'V{n:05d}'], [1.0]
    return evidence


class BucketWrapper(Bucket):
    """Passes every call to the bucket it wraps (subclasses add to some)."""

    def __init__(self, inner: Bucket):
        self.inner = inner
        self.url = inner.url

    def put(self, key, data, content_type='application/json', if_none_match=False, metadata=None,
            if_match=None):
        return self.inner.put(key, data, content_type, if_none_match, metadata, if_match)

    def put_file(self, key, path, content_type, metadata=None):
        return self.inner.put_file(key, path, content_type, metadata)

    def get(self, key, byte_range=None):
        return self.inner.get(key, byte_range)

    def get_object(self, key):
        return self.inner.get_object(key)

    def head(self, key):
        return self.inner.head(key)

    def list(self, prefix):
        return self.inner.list(prefix)

    def delete(self, key):
        return self.inner.delete(key)

    def location(self, key_prefix=''):
        return self.inner.location(key_prefix)


class FlakyBucket(BucketWrapper):
    """While ``failing`` is set every write raises BucketError."""

    def __init__(self, inner: Bucket):
        super().__init__(inner)
        self.failing = threading.Event()
        self.failed_writes = 0

    def _check(self):
        if self.failing.is_set():
            self.failed_writes += 1
            raise BucketError('injected bucket failure')

    def put(self, key, data, content_type='application/json', if_none_match=False, metadata=None,
            if_match=None):
        self._check()
        return super().put(key, data, content_type, if_none_match, metadata, if_match)

    def put_file(self, key, path, content_type, metadata=None):
        self._check()
        return super().put_file(key, path, content_type, metadata)


class CountingBucket(BucketWrapper):
    """Counts the requests made to the bucket (an S3 bucket bills each one): ``requests``
    is a list of (operation, key) in the order they were made."""

    def __init__(self, inner: Bucket):
        super().__init__(inner)
        self.requests = []
        self._lock = threading.Lock()

    def _count(self, operation: str, key: str) -> None:
        with self._lock:
            self.requests.append((operation, key))

    def put(self, key, data, *args, **kwargs):
        self._count('put', key)
        return super().put(key, data, *args, **kwargs)

    def put_file(self, key, path, *args, **kwargs):
        self._count('put', key)
        return super().put_file(key, path, *args, **kwargs)

    def get(self, key, byte_range=None):
        self._count('get', key)
        return super().get(key, byte_range)

    def get_object(self, key):
        self._count('get', key)
        return super().get_object(key)

    def head(self, key):
        self._count('head', key)
        return super().head(key)

    def list(self, prefix):
        self._count('list', prefix)
        return super().list(prefix)

    def delete(self, key):
        self._count('delete', key)
        return super().delete(key)


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
    class AtomicWritesMotoServer(ThreadedMotoServer):
        """moto checks a PUT's If-Match or If-None-Match and then writes, with no lock
        between: two racing conditional writes of one object can both pass, and one
        update is lost (S3 makes each conditional write atomic). Writes are applied one
        at a time here; reads still run side by side."""

        def _server_entry(self) -> None:
            from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                                       create_backend_app)
            from werkzeug.serving import make_server
            app, writing = DomainDispatcherApplication(create_backend_app), threading.Lock()

            def one_write_at_a_time(environ, start_response):
                if environ['REQUEST_METHOD'] in ('GET', 'HEAD'):
                    return app(environ, start_response)
                with writing:
                    response = app(environ, start_response)
                    try:
                        return list(response)
                    finally:
                        getattr(response, 'close', lambda: None)()
            self._server = make_server(self._ip_address, self._port, one_write_at_a_time, True,
                                       request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    server = AtomicWritesMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
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


def local_ingest(bucket: Bucket, directory, store_id: str = 'demo'):
    """An ingest writing to the bucket, for its ``process`` (no socket), and the store's
    catalogue (fake_store) sent to it."""
    from jwo_cloud import convert
    from jwo_cloud.ingest import Ingest
    from jwo_cloud.wire import pb
    directory = Path(directory)
    if not (directory / 'keys' / 'cloud' / 'ingest.key_secret').exists():
        make_keys(directory / 'keys', store_id)
    ingest = Ingest(bucket, directory / 'keys' / 'cloud' / 'ingest.key_secret',
                    directory / 'keys' / 'enrolled', directory / 'spool')
    (_, _, _, payload), = convert.catalogue_items(fake_store(store_id), time.time_ns())
    assert ingest.process(store_id, pb.Envelope.FromString(payload)).status == pb.OK
    return ingest


def seed_paid_visit(ingest, n: int, token: str, status: int = 0, store_id: str = 'demo') -> str:
    """A visit's receipt (FINAL by default; NEEDS_REVIEW with its review request) and then
    the hash of its shopper's token, through the ingest as the uplink sends them: the
    receipt id."""
    import hashlib

    from jwo_cloud import convert, wire
    from jwo_cloud.wire import pb
    receipt = fake_receipt(n, store_id, status)
    visit = wire.visit_key(receipt.visit_code, receipt.receipt_id)
    items = convert.receipt_items(receipt, store_id, 1, 'USD', 825)
    if status == 1:
        items += convert.review_items(fake_review(n, (), store_id), store_id, 1)
    items.append(convert.access_item(receipt.receipt_id, visit, hashlib.sha256(token.encode()).digest(),
                                     store_id, 1))
    for _, _, _, payload in items:
        ack = ingest.process(store_id, pb.Envelope.FromString(payload))
        assert ack.status == pb.OK, ack
    return receipt.receipt_id


def seed_visits(bucket: Bucket, directory, numbers, clip: bytes = None,
                clip_name: str = 'cam_front-1.webm', store_id: str = 'demo') -> dict:
    """Writes the store's catalogue (fake_store) and visits in doubt to the bucket the
    way the ingest does (receipt, clip, review entry) without a network: {n: clip_id}."""
    import hashlib

    from jwo_cloud import convert
    from jwo_cloud.wire import pb
    ingest = local_ingest(bucket, directory, store_id)
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
