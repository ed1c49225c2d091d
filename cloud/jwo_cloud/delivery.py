"""Final receipts to the shoppers who paid: an outbox in the bucket and a deliverer that
empties it through an adapter.

**Once per version, nothing lost.** Whenever a visit's receipt becomes final (FINAL at
the ingest, settled by a reviewer, settled again after a dispute) and the store sent the
hash of the visit's token, ``enqueue`` creates ``delivery/pending/<s>/<receipt>/<version>``
(a conditional create: doing it again is a no-op). The ingest, the review console and
``jwo-cloud review decide`` only write that object; the ``Deliverer`` of ``jwo-cloud
serve`` lists the pending ones, delivers each through its ``Adapter``, then creates
``delivery/sent/...`` and deletes the pending object. A failed delivery is tried again
with a backoff that doubles up to ``backoff_max_s``, a receipt's later versions behind
its earlier one; a restart finds everything still pending in the bucket. A crash between
a delivery and its ``sent`` object delivers it again: receivers drop repeats by
``delivery_id``.

**What is delivered**: ``{"delivery_id": "<store>/<receipt>/<version>", "token_sha256":
hex, "version": n, "receipt": {...}}``, the receipt as its payer sees it
(payer.public_receipt), addressed by the token's hash: the payer's app knows the token
it was handed, so it knows the hash; the cloud never knows the token.

Adapters: ``WebhookAdapter`` POSTs that JSON with ``X-Jwo-Signature: sha256=<hex
HMAC-SHA256 of the body under the shared secret>``; ``FileAdapter`` appends it as one
JSON line (fsync'd).
"""
import hashlib
import hmac
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from jwo_cloud import layout, payer
from jwo_cloud.bucket import Bucket, BucketError

log = logging.getLogger('jwo_cloud.delivery')

SIGNATURE_HEADER = 'X-Jwo-Signature'
DELIVERY_HEADER = 'X-Jwo-Delivery'
MIN_SECRET_BYTES = 16


class DeliveryFailed(Exception):
    pass


class DeliveryConfigError(Exception):
    pass


@dataclass(frozen=True)
class DeliverySettings:
    poll_s: float = 1.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 300.0
    timeout_s: float = 10.0


def enqueue(bucket: Bucket, store_id: str, receipt_id: str) -> Optional[int]:
    """Queues the newest final version of a store's receipt for its payer (repeatable);
    the version, None while there is nothing to deliver (no final receipt, or no token
    hash yet: what brings the other calls this again)."""
    visit = payer.load(bucket, store_id, receipt_id)
    current = visit.current if visit else None
    if current is None or not visit.token_sha256:
        return None
    if bucket.head(layout.delivery_sent_key(store_id, receipt_id, current.number)) is None:
        document = {'delivery_id': f'{store_id}/{receipt_id}/{current.number}',
                    'token_sha256': visit.token_sha256, 'version': current.number,
                    'receipt': payer.public_receipt(receipt_id, current)}
        bucket.put(layout.delivery_pending_key(store_id, receipt_id, current.number),
                   json.dumps(document, sort_keys=True).encode(), if_none_match=True)
    return current.number


class Adapter:
    """Where deliveries go. ``deliver`` returns once the receiver has the delivery, and
    raises DeliveryFailed when it may not have it."""
    name = 'none'

    def deliver(self, delivery: dict) -> None:
        raise NotImplementedError


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: followed, it would turn the POST into a GET."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class WebhookAdapter(Adapter):
    name = 'webhook'

    def __init__(self, url: str, secret: bytes, timeout_s: float = DeliverySettings.timeout_s):
        if not url.startswith(('http://', 'https://')):
            raise DeliveryConfigError(f'webhook {url!r}: not an http:// or https:// URL')
        if len(secret) < MIN_SECRET_BYTES:
            raise DeliveryConfigError(f'the webhook secret needs at least {MIN_SECRET_BYTES} bytes')
        self.url, self._secret, self.timeout_s = url, secret, timeout_s

    def deliver(self, delivery: dict) -> None:
        body = json.dumps(delivery, sort_keys=True, separators=(',', ':')).encode()
        request = urllib.request.Request(self.url, data=body, method='POST', headers={
            'Content-Type': 'application/json', DELIVERY_HEADER: delivery['delivery_id'],
            SIGNATURE_HEADER: signature(self._secret, body)})
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            raise DeliveryFailed(f'{self.url}: HTTP {error.code}') from None
        except (urllib.error.URLError, OSError) as error:
            raise DeliveryFailed(f'{self.url}: {error}') from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f'{self.url}: HTTP {status}')


class FileAdapter(Adapter):
    name = 'file'

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise DeliveryConfigError(f'{self.path}: no folder {self.path.parent}')

    def deliver(self, delivery: dict) -> None:
        try:
            with open(self.path, 'a', encoding='utf-8') as handle:
                handle.write(json.dumps(delivery, sort_keys=True) + '\n')
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise DeliveryFailed(f'{self.path}: {error}') from None


def signature(secret: bytes, body: bytes) -> str:
    """The X-Jwo-Signature of a body: what a receiver compares (hmac.compare_digest)."""
    return 'sha256=' + hmac.new(secret, body, hashlib.sha256).hexdigest()


def read_secret(path) -> bytes:
    """The webhook's shared secret from a file (surrounding whitespace dropped)."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as error:
        raise DeliveryConfigError(f'webhook secret file {path}: {error.strerror}') from None
    if len(secret) < MIN_SECRET_BYTES:
        raise DeliveryConfigError(f'webhook secret file {path}: needs at least {MIN_SECRET_BYTES} bytes')
    return secret


@dataclass
class _Backoff:
    failures: int
    due: float


class Deliverer:
    """Empties the bucket's delivery outbox through an adapter, on a thread of its own
    (``start``/``stop``) or one pass at a time (``run_once``)."""

    def __init__(self, bucket: Bucket, adapter: Adapter, settings: DeliverySettings = DeliverySettings(),
                 clock=time.monotonic):
        self.bucket, self.adapter, self.settings, self._clock = bucket, adapter, settings, clock
        self._backoff = {}          # pending key -> _Backoff
        self._stop = threading.Event()
        self._thread = None
        self.counters = {'delivered': 0, 'failures': 0, 'bucket_errors': 0}

    def run_once(self) -> int:
        """One pass over the pending deliveries, oldest version of a receipt first; the
        number delivered."""
        delivered, held = 0, set()
        for key in sorted(self.bucket.list(layout.DELIVERY_PENDING)):
            receipt = key.rpartition('/')[0]
            backoff = self._backoff.get(key)
            if receipt in held or (backoff and backoff.due > self._clock()):
                held.add(receipt)
                continue
            document = self.bucket.get_json(key)
            if document is None:
                continue
            store_id, receipt_id, version = document['delivery_id'].split('/')
            sent = layout.delivery_sent_key(store_id, receipt_id, int(version))
            if self.bucket.head(sent) is None:
                try:
                    self.adapter.deliver(document)
                except DeliveryFailed as error:
                    self._failed(key, error)
                    held.add(receipt)
                    continue
                self.bucket.put(sent, json.dumps({'adapter': self.adapter.name,
                                                  'sent_ns': time.time_ns()}).encode())
                delivered += 1
                self.counters['delivered'] += 1
            self.bucket.delete(key)
            self._backoff.pop(key, None)
        return delivered

    def _failed(self, key: str, error: DeliveryFailed) -> None:
        backoff = self._backoff.get(key) or _Backoff(0, 0.0)
        backoff.failures += 1
        delay = min(self.settings.backoff_max_s, self.settings.backoff_min_s * 2 ** (backoff.failures - 1))
        backoff.due = self._clock() + delay * random.uniform(0.5, 1.0)
        self._backoff[key] = backoff
        self.counters['failures'] += 1
        log.warning('delivery %s failed (%d times; again in %.1f s at most): %s',
                    key, backoff.failures, delay, error)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except BucketError as error:   # the bucket is down: the outbox waits in it
                self.counters['bucket_errors'] += 1
                log.warning('delivery outbox unreadable: %s', error)
            self._stop.wait(self.settings.poll_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name='jwo-delivery', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.settings.timeout_s + 5.0)
