"""The store side of the uplink: takes items from the durable outbox and sends them to
the cloud ingest over ZeroMQ (DEALER, CURVE client), one ack per item.

- At most ``window`` items in flight, at most one per visit: the items of a visit reach
  the cloud in the order they were published.
- An item is done only when the ingest answers OK (its object is in the bucket); a
  RETRY answer or no answer within ``ack_timeout_s`` puts it back with exponential
  backoff (``backoff_min_s`` doubling up to ``backoff_max_s``, with jitter). The first OK
  after failures makes everything due at once (the cloud is back).
- Clips (kind 'clip') are streamed in ``chunk_bytes`` pieces, one in flight; the offset
  the ingest confirmed is saved in the outbox, so a restarted uplink resumes there. A
  clip file not there yet (the clip writer is still at it) is looked for again until
  ``clip_wait_s`` after the item was stored, the rest of its visit waiting behind it;
  then it is counted as ``clip_missing`` and set aside (rejected).
- The socket only queues to an authenticated, connected ingest (ZMQ_IMMEDIATE): while
  the ingest is unreachable nothing piles up in memory; the outbox holds it all.
- A refused handshake (key not enrolled, wrong ingest key) ends a ZeroMQ connection for
  good, so the socket is made again after a growing delay: enrolling the store later
  needs no restart of the uplink.

Pure of ROS: the uplink node feeds the outbox and calls ``wake()``.
"""
import hashlib
import logging
import os
import random
import threading
import time
from dataclasses import dataclass

import zmq
from google.protobuf.message import DecodeError
from zmq.utils.monitor import recv_monitor_message

from jwo_cloud import wire
from jwo_cloud.keys import load_pair, load_public
from jwo_cloud.wire import pb

log = logging.getLogger('jwo_cloud.uplink')

# How often a clip file that is not there yet is looked for.
_CLIP_POLL_NS = 500_000_000


@dataclass
class _Flight:
    seq: int
    item_id: str
    visit_key: str
    kind: str
    attempts: int
    deadline: float
    offset: int = 0
    template: object = None   # clip: the Envelope without data
    path: str = ''
    size: int = 0
    sha256: str = ''


class UplinkSender:
    def __init__(self, outbox, endpoint: str, store_secret_file, ingest_public_file, *,
                 window: int = 64, ack_timeout_s: float = 10.0, backoff_min_s: float = 0.2,
                 backoff_max_s: float = 30.0, chunk_bytes: int = 1 << 20, clip_root: str = '',
                 clip_wait_s: float = 30.0, retention_s: float = 7 * 86400, on_event=None):
        self.outbox = outbox
        self.endpoint = endpoint
        self._public, self._secret = load_pair(store_secret_file)
        self._server = load_public(ingest_public_file)
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.chunk_bytes = chunk_bytes
        self.clip_root = clip_root
        self.clip_wait_ns = int(clip_wait_s * 1e9)
        self.retention_ns = int(retention_s * 1e9)
        self._on_event = on_event or (lambda name, detail: log.warning('%s: %s', name, detail))
        self.counters = {name: 0 for name in (
            'sent', 'acked', 'chunks_sent', 'clip_bytes_sent', 'retries', 'timeouts',
            'rejected', 'clip_missing', 'not_connected', 'stale_acks', 'bad_acks',
            'handshake_failed', 'reconnects', 'unauthorized')}
        self._flights = {}
        self._failing = False
        self._stop = threading.Event()
        self._thread = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._context = zmq.Context()
        self._socket = None
        self._monitor = None
        self._reconnect_at = None
        self._reconnect_delay = 1.0
        self._last_purge = 0.0
        self._retry_fill_at = 0.0

    # -- lifecycle --------------------------------------------------------------------
    def _connect(self) -> None:
        socket = self._context.socket(zmq.DEALER)
        socket.linger = 0
        socket.curve_secretkey = self._secret
        socket.curve_publickey = self._public
        socket.curve_serverkey = self._server
        socket.immediate = True
        socket.reconnect_ivl = 100
        socket.reconnect_ivl_max = 1000
        socket.sndhwm = max(1000, 4 * self.window)
        self._monitor = socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        socket.connect(self.endpoint)
        self._socket = socket

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._socket.close(linger=0)
            self._socket = self._monitor = None

    def _read_monitor(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event['event'] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._reconnect_delay = 1.0
                continue
            self.counters['handshake_failed'] += 1
            if event['event'] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                why = f'the ingest refused this store key (status {event["value"]}): not enrolled?'
            else:
                why = 'CURVE handshake failed: wrong ingest public key?'
            self._on_event('handshake_failed', f'{self.endpoint}: {why}; '
                           f'trying again in {self._reconnect_delay:.0f} s')
            if self._reconnect_at is None:
                self._reconnect_at = time.monotonic() + self._reconnect_delay
                self._reconnect_delay = min(self._reconnect_delay * 2, max(self.backoff_max_s, 1.0))

    def _maybe_reconnect(self) -> bool:
        if self._reconnect_at is None or time.monotonic() < self._reconnect_at:
            return False
        self._reconnect_at = None
        for flight in list(self._flights.values()):
            self._defer(flight, 'reconnecting')
        self._close_socket()
        self._connect()
        self.counters['reconnects'] += 1
        return True

    def start(self) -> None:
        self._connect()
        self._thread = threading.Thread(target=self._run, name='jwo-uplink', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(5.0)
        self._close_socket()
        self._context.term()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def wake(self) -> None:
        """New items are in the outbox: look at once instead of at the next tick."""
        try:
            os.write(self._wake_w, b'x')
        except (BlockingIOError, OSError):
            pass

    def in_flight(self) -> int:
        return len(self._flights)

    # -- loop -------------------------------------------------------------------------
    def _poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        return poller

    def _run(self) -> None:
        poller = self._poller()
        while not self._stop.is_set():
            try:
                if self._maybe_reconnect():
                    poller = self._poller()
                self._fill()
                timeout_ms = 100
                if self._flights:
                    soonest = min(f.deadline for f in self._flights.values())
                    timeout_ms = max(1, min(timeout_ms, int((soonest - time.monotonic()) * 1000)))
                events = dict(poller.poll(timeout_ms))
                if self._wake_r in events:
                    try:
                        os.read(self._wake_r, 65536)
                    except BlockingIOError:
                        pass
                if self._monitor in events:
                    self._read_monitor()
                if self._socket in events:
                    self._read_acks()
                self._expire()
                self._maybe_purge()
            except Exception:   # keep going: the outbox holds everything
                log.exception('uplink loop error')
                time.sleep(0.5)

    def _fill(self) -> None:
        free = self.window - len(self._flights)
        if free <= 0 or time.monotonic() < self._retry_fill_at:
            return
        busy = {flight.visit_key for flight in self._flights.values()}
        for item in self.outbox.due(time.time_ns(), busy, free):
            if item.item_id in self._flights:
                continue
            if not self._start(item):
                # Not connected to an (authenticated) ingest: try again shortly.
                self.counters['not_connected'] += 1
                self._retry_fill_at = time.monotonic() + 0.1
                return

    def _start(self, item) -> bool:
        flight = _Flight(item.seq, item.item_id, item.visit_key, item.kind, item.attempts,
                         deadline=0.0, offset=item.progress)
        if item.kind != wire.CLIP:
            if not self._send(item.payload):
                return False
            self._flights[item.item_id] = flight
            flight.deadline = time.monotonic() + self.ack_timeout_s
            self.counters['sent'] += 1
            return True
        envelope = pb.Envelope()
        envelope.ParseFromString(item.payload)
        flight.template = envelope
        flight.path = wire.clip_path(envelope.clip_chunk.clip_ref, self.clip_root)
        try:
            flight.size, flight.sha256 = _file_digest(flight.path)
        except OSError as error:
            now_ns = time.time_ns()
            if isinstance(error, FileNotFoundError) and now_ns - item.created_ns < self.clip_wait_ns:
                # Not written yet: clip writers rename a clip into place whole, so a
                # file that is there is complete.
                self.outbox.defer(item.seq, now_ns + _CLIP_POLL_NS,
                                  f'waiting for {flight.path}', failed=False)
                return True
            self.counters['clip_missing'] += 1
            self._on_event('clip_missing', f'{flight.path}: {error}')
            self.outbox.mark_rejected(item.seq, f'clip file unreadable: {error}')
            return True
        if flight.offset > flight.size:
            flight.offset = 0
        self._flights[item.item_id] = flight
        if not self._send_chunk(flight):
            del self._flights[item.item_id]
            return False
        self.counters['sent'] += 1
        return True

    def _send(self, payload: bytes) -> bool:
        try:
            self._socket.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _send_chunk(self, flight: _Flight) -> bool:
        try:
            with open(flight.path, 'rb') as handle:
                handle.seek(flight.offset)
                data = handle.read(self.chunk_bytes)
        except OSError as error:
            self.counters['clip_missing'] += 1
            self._on_event('clip_missing', f'{flight.path}: {error}')
            self.outbox.mark_rejected(flight.seq, f'clip file unreadable: {error}')
            self._flights.pop(flight.item_id, None)
            return True
        envelope = pb.Envelope()
        envelope.CopyFrom(flight.template)
        chunk = envelope.clip_chunk
        chunk.offset = flight.offset
        chunk.data = data
        chunk.total_size = flight.size
        chunk.sha256 = flight.sha256
        chunk.last = flight.offset + len(data) >= flight.size
        if not self._send(envelope.SerializeToString()):
            return False
        flight.deadline = time.monotonic() + self.ack_timeout_s
        self.counters['chunks_sent'] += 1
        self.counters['clip_bytes_sent'] += len(data)
        return True

    def _read_acks(self) -> None:
        for _ in range(10000):
            try:
                frame = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            ack = pb.Ack()
            try:
                ack.ParseFromString(frame)
            except DecodeError:
                self.counters['bad_acks'] += 1
                continue
            self._handle_ack(ack)

    def _handle_ack(self, ack) -> None:
        flight = self._flights.get(ack.item_id)
        if flight is None or (flight.kind == wire.CLIP and ack.offset != flight.offset):
            self.counters['stale_acks'] += 1
            if ack.status == pb.REJECTED and not ack.item_id:
                self._on_event('rejected', f'ingest rejected a frame: {ack.detail}')
            return
        if ack.status == pb.OK:
            del self._flights[ack.item_id]
            self.outbox.mark_done(flight.seq)
            self.counters['acked'] += 1
            if self._failing:
                self._failing = False
                self.outbox.retry_now()
        elif ack.status == pb.PROGRESS:
            if self._failing:
                self._failing = False
                self.outbox.retry_now()
            flight.offset = min(ack.next_offset, flight.size)
            self.outbox.set_progress(flight.seq, flight.offset)
            if not self._send_chunk(flight):
                self._defer(flight, 'not connected')
        elif ack.status == pb.REJECTED:
            del self._flights[ack.item_id]
            self.outbox.mark_rejected(flight.seq, ack.detail or 'rejected')
            self.counters['rejected'] += 1
            self._on_event('rejected', f'{flight.item_id}: {ack.detail}')
        elif ack.status == pb.UNAUTHORIZED:
            self._defer(flight, ack.detail or 'unauthorized')
            self.counters['unauthorized'] += 1
            self._on_event('unauthorized', f'{self.endpoint}: {ack.detail}; connecting again '
                           f'in {self._reconnect_delay:.0f} s')
            if self._reconnect_at is None:
                self._reconnect_at = time.monotonic() + self._reconnect_delay
                self._reconnect_delay = min(self._reconnect_delay * 2, max(self.backoff_max_s, 1.0))
        else:   # RETRY, or anything this version does not know
            self._defer(flight, ack.detail or 'retry')

    def _defer(self, flight: _Flight, why: str) -> None:
        self._flights.pop(flight.item_id, None)
        self._failing = True
        self.counters['retries'] += 1
        delay = min(self.backoff_max_s, self.backoff_min_s * 2 ** min(flight.attempts, 30))
        delay *= 0.5 + random.random() / 2
        self.outbox.defer(flight.seq, time.time_ns() + int(delay * 1e9), why)

    def _expire(self) -> None:
        now = time.monotonic()
        for flight in [f for f in self._flights.values() if f.deadline <= now]:
            self.counters['timeouts'] += 1
            self._defer(flight, f'no ack within {self.ack_timeout_s} s')

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self._last_purge > 600:
            self._last_purge = now
            self.outbox.purge(self.retention_ns)


def _file_digest(path: str) -> tuple:
    digest = hashlib.sha256()
    size = 0
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
