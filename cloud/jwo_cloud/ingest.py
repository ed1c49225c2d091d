"""The cloud ingest: receives envelopes from store uplinks over ZeroMQ + CURVE, checks
them, writes objects to the bucket and acknowledges each item only once its object is
written.

Threads: one socket thread owns the ROUTER socket (receives, checks, answers); N
writer threads do the bucket and spool I/O. An item goes to writer
``crc32(store, visit) % N``, so the items of one visit (and redeliveries of one item)
are written one at a time, in order, while different visits write in parallel.

Never crashes on input: a frame that is not exactly one part, larger than
``max_frame_bytes``, not a protobuf Envelope, or not a valid one is rejected (REJECTED
ack), counted and logged (throttled); a connection whose key is not enrolled is refused
by the ZAP handler and counted there. libzmq itself drops a connection that sends a
frame above ``hard_max_bytes`` (ZMQ_MAXMSGSIZE) before it is ever buffered.
"""
import hashlib
import json
import logging
import os
import queue
import threading
import time
import zlib
from pathlib import Path

import zmq
from google.protobuf.message import DecodeError

from jwo_cloud import catalogue, delivery, layout, payer, review_queue, wire
from jwo_cloud.bucket import Bucket, BucketError
from jwo_cloud.keys import DOMAIN, ZapHandler, load_pair
from jwo_cloud.wire import pb
from jwo_common.money import weighed_price_cents

log = logging.getLogger('jwo_cloud.ingest')

DEFAULT_BIND = 'tcp://127.0.0.1:7700'
DEFAULT_MAX_FRAME = 4 * 1024 * 1024 + 64 * 1024   # a 4 MiB clip chunk and its envelope
DEFAULT_MAX_CLIP = 4 * 1024 * 1024 * 1024
MAX_CATALOGUE_PRODUCTS = 100_000
_CONTENT_TYPE_OK = set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+-/;= ')


def validate(envelope, store_id: str, max_clip_bytes: int = DEFAULT_MAX_CLIP) -> str:
    """Why the envelope is not acceptable from this store, '' when it is."""
    if envelope.schema_version != wire.SCHEMA_VERSION:
        return f'schema version {envelope.schema_version}, expected {wire.SCHEMA_VERSION}'
    if envelope.store_id != store_id:
        return f'store {envelope.store_id!r} but the key is enrolled as {store_id!r}'
    if not envelope.visit_key or len(envelope.visit_key) > 300:
        return 'no visit_key'
    kind = envelope.WhichOneof('body')
    if kind == 'receipt':
        receipt = envelope.receipt
        problem = _id_problem(receipt.receipt_id, envelope.item_id, wire.RECEIPT, 'receipt')
        if problem:
            return problem
        if receipt.store_id != store_id:
            return 'receipt of another store'
        if receipt.status not in (pb.FINAL, pb.NEEDS_REVIEW):
            return 'receipt status is neither FINAL nor NEEDS_REVIEW'
        for n, line in enumerate(receipt.lines):
            if line.sold_by_weight:
                if line.grams <= 0 or line.line_total_cents != weighed_price_cents(line.grams, line.unit_price_cents):
                    return f'line {n}: line_total_cents != grams * unit_price_cents / 1000'
            elif line.line_total_cents != line.quantity * line.unit_price_cents:
                return f'line {n}: line_total_cents != quantity * unit_price_cents'
        if any(saving.cents <= 0 for saving in receipt.savings):
            return 'a saving that takes nothing off'
        if receipt.savings_cents != sum(saving.cents for saving in receipt.savings):
            return 'savings_cents is not the sum of the savings'
        if receipt.subtotal_cents != sum(line.line_total_cents for line in receipt.lines) - receipt.savings_cents:
            return 'subtotal_cents is not the sum of the lines less the savings'
        if receipt.total_cents != receipt.subtotal_cents + receipt.tax_cents:
            return 'total_cents != subtotal_cents + tax_cents'
        return ''
    if kind == 'review_request':
        return _request_problem(envelope.review_request, envelope.item_id, wire.REVIEW, store_id)
    if kind == 'receipt_evidence':
        evidence = envelope.receipt_evidence
        if any(event.clip_refs or event.clip_ids for event in evidence.events):
            return 'receipt evidence with clips (they are cut only for review requests)'
        return _request_problem(evidence, envelope.item_id, wire.EVIDENCE, store_id)
    if kind == 'receipt_access':
        access = envelope.receipt_access
        if len(access.token_sha256) != 32:
            return 'token_sha256 is not 32 bytes'
        return _id_problem(access.receipt_id, envelope.item_id, wire.ACCESS, 'receipt access')
    if kind == 'catalogue':
        products = envelope.catalogue.products
        if envelope.item_id != wire.catalogue_item_id(envelope.catalogue, envelope.created_ns):
            return 'item_id does not match the catalogue'
        if len(products) > MAX_CATALOGUE_PRODUCTS:
            return f'more than {MAX_CATALOGUE_PRODUCTS} products'
        skus = [product.sku for product in products]
        if len(set(skus)) != len(skus) or not all(wire.is_safe_id(sku) for sku in skus):
            return 'catalogue SKUs are not unique safe ids'
        if any(product.price_cents < 0 for product in products):
            return 'a catalogue price is negative'
        return ''
    if kind == 'clip_chunk':
        chunk = envelope.clip_chunk
        if not wire.is_safe_id(chunk.clip_id):
            return f'invalid clip_id {chunk.clip_id!r}'
        if envelope.item_id != wire.item_id(wire.CLIP, chunk.clip_id):
            return 'item_id does not match the clip'
        if chunk.total_size > max_clip_bytes:
            return f'clip of {chunk.total_size} bytes is over the limit of {max_clip_bytes}'
        end = chunk.offset + len(chunk.data)
        if end > chunk.total_size or chunk.last != (end == chunk.total_size):
            return 'chunk offset/size/last do not add up'
        if len(chunk.sha256) != 64 or any(c not in '0123456789abcdef' for c in chunk.sha256):
            return 'sha256 is not a hex digest'
        if len(chunk.content_type) > 100 or not set(chunk.content_type) <= _CONTENT_TYPE_OK:
            return 'invalid content_type'
        return ''
    return 'envelope has no body'


def _request_problem(request, item_id: str, kind: str, store_id: str) -> str:
    """Why a ReviewRequest (a review, or a FINAL receipt's evidence) sent as ``kind``
    is not acceptable, '' when it is."""
    what = 'review request' if kind == wire.REVIEW else 'receipt evidence'
    problem = _id_problem(request.receipt_id, item_id, kind, what)
    if problem:
        return problem
    if request.store_id != store_id:
        return f'{what} of another store'
    for event in request.events:
        if len(event.clip_ids) != len(event.clip_refs):
            return f'event {event.event_id}: clip_ids and clip_refs differ in length'
        if any(not wire.is_safe_id(c) for c in event.clip_ids):
            return f'event {event.event_id}: invalid clip id'
        if len(event.candidate_scores) not in (0, len(event.candidate_visits)):
            return f'event {event.event_id}: candidate_scores and candidate_visits differ'
        if any(not len(t.stamps_ns) == len(t.x) == len(t.y) for t in event.tracks):
            return f'event {event.event_id}: a track\'s stamps and positions differ in length'
    return ''


def _id_problem(receipt_id: str, item_id: str, kind: str, what: str) -> str:
    """Why an item about one receipt is misnamed, '' when it is not."""
    if not _is_store_receipt_id(receipt_id):
        return f'invalid receipt_id {receipt_id!r}'
    if item_id != wire.item_id(kind, receipt_id):
        return f'item_id does not match the {what}'
    return ''


def _is_store_receipt_id(receipt_id: str) -> bool:
    """A safe id that is not a dispute's (the cloud names disputes after their receipt)."""
    return wire.is_safe_id(receipt_id) and layout.parse_dispute_id(receipt_id) is None


class _Throttle:
    def __init__(self, interval_s: float = 1.0):
        self._interval = interval_s
        self._last = {}

    def __call__(self, name: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(name, -1e9) >= self._interval:
            self._last[name] = now
            return True
        return False


class Ingest:
    """One ingest endpoint. ``start()`` binds and returns the endpoint it listens on;
    ``stop()`` stops it. ``counters()`` says what it saw."""

    def __init__(self, bucket: Bucket, server_secret_file, enrolled_dir, spool_dir,
                 bind: str = DEFAULT_BIND, max_frame_bytes: int = DEFAULT_MAX_FRAME,
                 hard_max_bytes: int = 0, workers: int = 4,
                 max_clip_bytes: int = DEFAULT_MAX_CLIP):
        self.bucket = bucket
        self._public, self._secret = load_pair(server_secret_file)
        self._enrolled_dir = enrolled_dir
        self._spool = Path(spool_dir)
        self._spool.mkdir(parents=True, exist_ok=True)
        self._bind = bind
        self.max_frame_bytes = max_frame_bytes
        self.hard_max_bytes = hard_max_bytes or 4 * max_frame_bytes
        self._max_clip = max_clip_bytes
        self._n_workers = max(1, workers)
        self._lock = threading.Lock()
        self._counters = {name: 0 for name in (
            'frames_received', 'acked_ok', 'acked_progress', 'acked_retry',
            'rejected_malformed', 'rejected_oversized', 'rejected_bad_protobuf',
            'rejected_invalid', 'rejected_unauthorized', 'objects_written', 'duplicates', 'bucket_errors',
            'clip_bytes', 'clip_resync', 'clip_checksum_mismatch')}
        self._mismatches = {}
        self._throttle = _Throttle()
        self._stop = threading.Event()
        self._threads = []
        self._results = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._jobs = [queue.SimpleQueue() for _ in range(self._n_workers)]
        self.endpoint = None
        self._context = None
        self._zap = None
        self.on_written = None   # optional callback(key) after each object write (benchmarks)

    # -- counters -----------------------------------------------------------------
    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + amount

    def counters(self) -> dict:
        with self._lock:
            values = dict(self._counters)
        if self._zap is not None:
            values.update(self._zap.counters)
        return values

    def _reject(self, name: str, detail: str, peer: str = '') -> None:
        self.count(name)
        if self._throttle(name):
            log.warning('%s: %s%s (total %d)', name, detail, f' from {peer}' if peer else '',
                        self.counters()[name])

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> str:
        self._context = zmq.Context()
        self._zap = ZapHandler(self._context, self._enrolled_dir,
                               on_event=lambda name, peer: self._throttle(name) and
                               log.warning('%s: connection from %s refused', name, peer))
        socket = self._context.socket(zmq.ROUTER)
        socket.linger = 0
        socket.curve_server = True
        socket.curve_publickey = self._public
        socket.curve_secretkey = self._secret
        socket.zap_domain = DOMAIN.encode()
        socket.setsockopt(zmq.MAXMSGSIZE, self.hard_max_bytes)
        socket.sndhwm = 10000
        socket.rcvhwm = 10000
        socket.bind(self._bind)
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._socket = socket
        for n in range(self._n_workers):
            thread = threading.Thread(target=self._writer, args=(n,), name=f'jwo-ingest-w{n}',
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        thread = threading.Thread(target=self._serve, name='jwo-ingest', daemon=True)
        thread.start()
        self._threads.append(thread)
        log.info('ingest listening on %s', self.endpoint)
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()
        for jobs in self._jobs:
            jobs.put(None)
        for thread in self._threads:
            thread.join(5.0)
        if self._zap is not None:
            self._zap.stop()
        if self._context is not None:
            self._context.destroy(linger=0)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- socket thread --------------------------------------------------------------
    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                events = dict(poller.poll(100))
            except zmq.ZMQError:
                break
            if self._wake_r in events:
                try:
                    os.read(self._wake_r, 65536)
                except BlockingIOError:
                    pass
            self._send_results()
            if self._socket in events:
                for _ in range(1000):
                    try:
                        frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        self._receive(frames)
                    except Exception:   # never let one message stop the ingest
                        log.exception('unexpected error handling a frame')
                        self.count('rejected_malformed')
        self._socket.close(linger=0)

    def _send_results(self) -> None:
        while True:
            try:
                identity, ack = self._results.get_nowait()
            except queue.Empty:
                return
            try:
                self._socket.send_multipart([identity, ack.SerializeToString()], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass   # the peer is gone or not keeping up: it will resend

    def _answer(self, identity: bytes, ack) -> None:
        try:
            self._socket.send_multipart([identity, ack.SerializeToString()], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _receive(self, frames) -> None:
        self.count('frames_received')
        identity = frames[0].bytes
        try:
            store_id = frames[-1].get('User-Id')
            key = frames[-1].get('X-Key')
            peer = f'store {store_id} ({frames[-1].get("Peer-Address")})'
        except zmq.ZMQError:
            store_id, key, peer = '', '', 'unknown peer'
        if len(frames) != 2 or len(frames[1]) == 0:
            self._reject('rejected_malformed', f'{len(frames) - 1} parts', peer)
            self._answer(identity, pb.Ack(status=pb.REJECTED, detail='malformed: one part'))
            return
        if len(frames[1]) > self.max_frame_bytes:
            self._reject('rejected_oversized', f'{len(frames[1])} bytes', peer)
            self._answer(identity, pb.Ack(status=pb.REJECTED,
                                          detail=f'frame over {self.max_frame_bytes} bytes'))
            return
        envelope = pb.Envelope()
        try:
            envelope.ParseFromString(frames[1].bytes)
        except (DecodeError, ValueError, RuntimeError) as error:
            self._reject('rejected_bad_protobuf', str(error), peer)
            self._answer(identity, pb.Ack(status=pb.REJECTED, detail='not an Envelope'))
            return
        problem = ''
        if not self._zap.is_enrolled(store_id, key):
            problem = 'this key is no longer enrolled'
        elif envelope.store_id != store_id:
            problem = f'store {envelope.store_id!r} but the key is enrolled as {store_id!r}'
        if problem:
            # Not the item's fault: the store keeps it and connects again later.
            self._reject('rejected_unauthorized', f'{envelope.item_id!r}: {problem}', peer)
            ack = pb.Ack(item_id=envelope.item_id, status=pb.UNAUTHORIZED, detail=problem)
            if envelope.HasField('clip_chunk'):
                ack.offset = envelope.clip_chunk.offset
            self._answer(identity, ack)
            return
        problem = validate(envelope, store_id, self._max_clip)
        if problem:
            self._reject('rejected_invalid', f'{envelope.item_id!r}: {problem}', peer)
            ack = pb.Ack(item_id=envelope.item_id, status=pb.REJECTED, detail=problem)
            if envelope.HasField('clip_chunk'):
                ack.offset = envelope.clip_chunk.offset
            self._answer(identity, ack)
            return
        shard = zlib.crc32(f'{store_id}\0{envelope.visit_key}'.encode()) % self._n_workers
        self._jobs[shard].put((identity, store_id, envelope))

    # -- writer threads -------------------------------------------------------------
    def _writer(self, n: int) -> None:
        jobs = self._jobs[n]
        while True:
            job = jobs.get()
            if job is None or self._stop.is_set():
                return
            identity, store_id, envelope = job
            try:
                ack = self.process(store_id, envelope)
            except Exception:   # a bug must not stop the writer: never ack, let it retry
                log.exception('unexpected error writing %s', envelope.item_id)
                self.count('internal_errors')
                ack = pb.Ack(item_id=envelope.item_id, status=pb.RETRY, detail='internal error')
                if envelope.HasField('clip_chunk'):
                    ack.offset = envelope.clip_chunk.offset
            self._results.put((identity, ack))
            try:
                os.write(self._wake_w, b'x')
            except (BlockingIOError, OSError):
                pass

    def process(self, store_id: str, envelope) -> 'pb.Ack':
        """Writes one valid envelope's object(s); the Ack to send. OK only after the
        write succeeded; RETRY when the bucket failed."""
        kind = envelope.WhichOneof('body')
        try:
            if kind == 'receipt':
                ack = self._receipt(store_id, envelope)
            elif kind == 'review_request':
                ack = self._review(store_id, envelope)
            elif kind == 'receipt_access':
                ack = self._access(store_id, envelope)
            elif kind == 'receipt_evidence':
                ack = self._evidence(store_id, envelope)
            elif kind == 'catalogue':
                ack = self._catalogue(store_id, envelope)
            else:
                ack = self._clip(store_id, envelope)
        except (BucketError, OSError) as error:
            self.count('bucket_errors')
            self.count('acked_retry')
            if self._throttle('bucket_errors'):
                log.warning('bucket write failed for %s: %s (will be retried)',
                            envelope.item_id, error)
            ack = pb.Ack(item_id=envelope.item_id, status=pb.RETRY, detail=str(error)[:500])
            if kind == 'clip_chunk':
                ack.offset = envelope.clip_chunk.offset
            return ack
        self.count({pb.OK: 'acked_ok', pb.PROGRESS: 'acked_progress',
                    pb.REJECTED: 'rejected_invalid', pb.RETRY: 'acked_retry'}[ack.status])
        return ack

    def _written(self, key: str, created: bool) -> None:
        self.count('objects_written' if created else 'duplicates')
        if self.on_written is not None:
            self.on_written(key)

    def _receipt(self, store_id, envelope):
        receipt = envelope.receipt
        key = layout.receipt_key(store_id, receipt.receipt_id)
        document = wire.to_dict(receipt)
        document['uplink'] = {'item_id': envelope.item_id, 'created_ns': envelope.created_ns}
        created = self.bucket.put(key, _json(document), if_none_match=True)
        self._written(key, created)
        # Its token hash comes after it, and delivers it; unless the store sent the hash
        # while this receipt was held back (refused, then sent again by an operator).
        if (receipt.status == pb.FINAL
                and self.bucket.head(layout.visit_access_key(store_id, receipt.receipt_id)) is not None):
            delivery.enqueue(self.bucket, store_id, receipt.receipt_id)
        return pb.Ack(item_id=envelope.item_id, status=pb.OK, object_key=key)

    def _review(self, store_id, envelope):
        review = envelope.review_request
        key = layout.pending_key(store_id, review.receipt_id)
        if self.bucket.head(layout.final_key(store_id, review.receipt_id)) is not None:
            # Settled already: a redelivery must not put it back on the queue.
            self._written(key, False)
            return pb.Ack(item_id=envelope.item_id, status=pb.OK, detail='already settled')
        request = wire.to_dict(review)
        for event in request['events']:
            event['clip_keys'] = [layout.clip_key(store_id, c) for c in event['clip_ids']]
        entry = {'store_id': store_id, 'receipt_id': review.receipt_id,
                 'visit_code': review.visit_code,
                 'receipt_key': layout.receipt_key(store_id, review.receipt_id),
                 'queued_ns': time.time_ns(), 'request': request}
        created = self.bucket.put(key, _json(entry), if_none_match=True)
        # Into the queue's index too, also on a redelivery (the first try may have
        # failed between the two writes); acked only once both are written.
        receipt = self.bucket.get_json(layout.receipt_key(store_id, review.receipt_id))
        review_queue.enqueue(self.bucket, review_queue.entry_of(entry, receipt))
        self._written(key, created)
        return pb.Ack(item_id=envelope.item_id, status=pb.OK, object_key=key)

    def _evidence(self, store_id, envelope):
        # Kept beside the receipt, not queued: a FINAL receipt needs no review; a
        # dispute of it shows these events (payer.queue_dispute).
        evidence = envelope.receipt_evidence
        key = layout.evidence_key(store_id, evidence.receipt_id)
        document = wire.to_dict(evidence)
        document['uplink'] = {'item_id': envelope.item_id, 'created_ns': envelope.created_ns}
        self._written(key, self.bucket.put(key, _json(document), if_none_match=True))
        return pb.Ack(item_id=envelope.item_id, status=pb.OK, object_key=key)

    def _access(self, store_id, envelope):
        access = envelope.receipt_access
        key = layout.visit_access_key(store_id, access.receipt_id)
        created = self.bucket.head(key) is None
        if not payer.link(self.bucket, store_id, access.receipt_id, access.token_sha256.hex()):
            return pb.Ack(item_id=envelope.item_id, status=pb.REJECTED,
                          detail='this token hash already opens another receipt')
        self._written(key, created)
        # The receipt may be final already (FINAL from the store, or settled before
        # this arrived): its payer gets it now.
        delivery.enqueue(self.bucket, store_id, access.receipt_id)
        return pb.Ack(item_id=envelope.item_id, status=pb.OK, object_key=key)

    def _catalogue(self, store_id, envelope):
        document = wire.to_dict(envelope.catalogue)
        document.update(store_id=store_id, created_ns=envelope.created_ns)
        written = catalogue.save(self.bucket, store_id, document)
        key = layout.catalogue_key(store_id)
        self._written(key, written)
        return pb.Ack(item_id=envelope.item_id, status=pb.OK, object_key=key)

    def _clip(self, store_id, envelope):
        chunk = envelope.clip_chunk
        key = layout.clip_key(store_id, chunk.clip_id)
        spool = self._spool / store_id / f'{chunk.clip_id}.part'
        ack = pb.Ack(item_id=envelope.item_id, offset=chunk.offset)
        try:
            size = spool.stat().st_size
        except FileNotFoundError:
            if self.bucket.head(key) is not None:
                self._written(key, False)
                ack.status, ack.object_key = pb.OK, key
                return ack
            size = 0
        if chunk.offset != size:
            self.count('clip_resync')
            ack.status, ack.next_offset = pb.PROGRESS, size
            return ack
        spool.parent.mkdir(parents=True, exist_ok=True)
        with open(spool, 'ab') as handle:
            handle.write(chunk.data)
            handle.flush()
            os.fsync(handle.fileno())
        size += len(chunk.data)
        self.count('clip_bytes', len(chunk.data))
        if not chunk.last:
            ack.status, ack.next_offset = pb.PROGRESS, size
            return ack
        digest = hashlib.sha256()
        with open(spool, 'rb') as handle:
            for block in iter(lambda: handle.read(1 << 20), b''):
                digest.update(block)
        if size != chunk.total_size or digest.hexdigest() != chunk.sha256:
            self.count('clip_checksum_mismatch')
            spool.unlink()
            tries = self._mismatches[key] = self._mismatches.get(key, 0) + 1
            if tries >= 2:
                ack.status, ack.detail = pb.REJECTED, 'clip checksum mismatch (twice)'
            else:   # start over once: the spool may have been torn by a crash
                ack.status, ack.next_offset = pb.PROGRESS, 0
            return ack
        self.bucket.put_file(key, str(spool), chunk.content_type or 'application/octet-stream',
                             metadata={'sha256': chunk.sha256})
        spool.unlink()
        self._mismatches.pop(key, None)
        self._written(key, True)
        ack.status, ack.object_key = pb.OK, key
        return ack


def _json(document) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True).encode()
