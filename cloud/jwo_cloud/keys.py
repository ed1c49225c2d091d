"""CURVE keys and who may talk to the ingest.

A key pair is two files in ZeroMQ's certificate format (zmq.auth): ``<name>.key`` (the
public key, safe to copy) and ``<name>.key_secret`` (both keys, mode 0600, never leaves
the machine it was made on). The ingest has one pair; every store has its own.

Enrolment puts a store's *public* certificate into the ingest's enrolled directory as
``<store_id>.key``. The ZAP handler here (ZeroMQ's authentication protocol, RFC 27)
answers the ingest's socket for every connection: a client key found in that directory
is accepted and the connection's User-Id becomes the store id; any other key is refused
and counted. The directory is re-read when it changes, so enrolling or revoking a store
needs no restart; the ingest also checks every message against the enrolled keys (the
ZAP reply carries the key as connection property ``X-Key``), so a revoked key is refused
within a second even on a connection made before. Stores hold no cloud (S3) credentials: only their own key pair and
the ingest's public key.
"""
import os
import re
import struct
import threading
import time
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

ZAP_ENDPOINT = 'inproc://zeromq.zap.01'
DOMAIN = 'jwo'
_STORE_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$')


class KeyFileError(Exception):
    pass


def keygen(directory, name: str, force: bool = False) -> tuple:
    """Writes <directory>/<name>.key and .key_secret; returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public = directory / f'{name}.key'
    secret = directory / f'{name}.key_secret'
    if not force and (public.exists() or secret.exists()):
        raise KeyFileError(f'{public} exists (use --force to replace it)')
    public_key, secret_key = zmq.curve_keypair()
    # zmq.auth's own writer, so zmq.auth.load_certificate reads them back.
    from zmq.auth.certs import _write_key_file
    _write_key_file(str(public), banner='jwo CURVE public key', public_key=public_key)
    old = os.umask(0o077)
    try:
        _write_key_file(str(secret), banner='jwo CURVE secret key -- keep it on this machine',
                        public_key=public_key, secret_key=secret_key)
    finally:
        os.umask(old)
    os.chmod(secret, 0o600)
    return public, secret


def load_public(path) -> bytes:
    public, _ = zmq.auth.load_certificate(str(path))
    if not public:
        raise KeyFileError(f'{path}: no public key')
    return public


def load_pair(secret_path) -> tuple:
    """(public, secret) from a .key_secret file."""
    try:
        public, secret = zmq.auth.load_certificate(str(secret_path))
    except (OSError, ValueError) as error:
        raise KeyFileError(f'{secret_path}: {error}') from error
    if not secret:
        raise KeyFileError(f'{secret_path}: not a secret key file')
    return public, secret


def enroll(enrolled_dir, store_id: str, public_key_file) -> Path:
    """Copies a store's public certificate into the enrolled directory."""
    if not _STORE_ID.match(store_id):
        raise KeyFileError(f'invalid store id {store_id!r}')
    public, secret = zmq.auth.load_certificate(str(public_key_file))
    if secret:
        raise KeyFileError(f'{public_key_file} holds a secret key: enrol the public .key file')
    enrolled_dir = Path(enrolled_dir)
    enrolled_dir.mkdir(parents=True, exist_ok=True)
    target = enrolled_dir / f'{store_id}.key'
    for other_id, other_key in enrolled_keys(enrolled_dir).items():
        if other_key == public and other_id != store_id:
            raise KeyFileError(f'that key is already enrolled as store {other_id}')
    from zmq.auth.certs import _write_key_file
    tmp = enrolled_dir / f'.{store_id}.key.tmp'
    _write_key_file(str(tmp), banner=f'jwo store {store_id}', public_key=public,
                    metadata={'store_id': store_id})
    os.replace(tmp, target)
    return target


def revoke(enrolled_dir, store_id: str) -> bool:
    target = Path(enrolled_dir) / f'{store_id}.key'
    if target.exists():
        target.unlink()
        return True
    return False


def enrolled_keys(enrolled_dir) -> dict:
    """{store_id: public key (z85 bytes)} of the enrolled directory."""
    keys = {}
    directory = Path(enrolled_dir)
    if not directory.is_dir():
        return keys
    for path in sorted(directory.glob('*.key')):
        store_id = path.stem
        if not _STORE_ID.match(store_id):
            continue
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError):
            continue
        if public:
            keys[store_id] = public
    return keys


class ZapHandler:
    """Answers ZAP requests of one zmq context in a thread: CURVE clients whose key is
    enrolled get User-Id = store id, everything else is refused and counted."""

    def __init__(self, context: zmq.Context, enrolled_dir, on_event=None):
        self._context = context
        self._dir = Path(enrolled_dir)
        self._on_event = on_event or (lambda name, detail: None)
        self._by_key = {}
        self._stamp = None
        self._checked = 0.0
        self._reload_lock = threading.Lock()
        self.counters = {'zap_accepted': 0, 'zap_denied_unknown_key': 0,
                         'zap_denied_bad_request': 0}
        self._socket = context.socket(zmq.REP)
        self._socket.linger = 0
        self._socket.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='jwo-zap', daemon=True)
        self._thread.start()

    def is_enrolled(self, store_id: str, key: str) -> bool:
        """Whether the z85 key is enrolled as store_id now (re-read at most once a second)."""
        now = time.monotonic()
        if now - self._checked > 1.0:
            self._checked = now
            self._reload()
        return bool(key) and self._by_key.get(key.encode()) == store_id

    def _reload(self) -> None:
        with self._reload_lock:
            self._reload_locked()

    def _reload_locked(self) -> None:
        try:
            stamp = (self._dir.stat().st_mtime_ns,
                     tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self._dir.glob('*.key'))))
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            self._by_key = {key: store for store, key in enrolled_keys(self._dir).items()}

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                request = self._socket.recv_multipart()
            except zmq.ZMQError:
                break
            self._socket.send_multipart(self._answer(request))
        self._socket.close()

    def _answer(self, request: list) -> list:
        if len(request) < 6:
            self.counters['zap_denied_bad_request'] += 1
            request_id = request[1] if len(request) > 1 else b''
            return [b'1.0', request_id, b'400', b'bad request', b'', b'']
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        if version != b'1.0' or mechanism != b'CURVE' or len(credentials) != 1:
            self.counters['zap_denied_bad_request'] += 1
            self._on_event('zap_denied_bad_request', address.decode(errors='replace'))
            return [b'1.0', request_id, b'400', b'CURVE only', b'', b'']
        self._reload()
        key = z85.encode(credentials[0])
        store_id = self._by_key.get(key)
        if store_id is None:
            self.counters['zap_denied_unknown_key'] += 1
            self._on_event('zap_denied_unknown_key', address.decode(errors='replace'))
            return [b'1.0', request_id, b'400', b'unknown key', b'', b'']
        self.counters['zap_accepted'] += 1
        metadata = b'\x05X-Key' + struct.pack('!I', len(key)) + key
        return [b'1.0', request_id, b'200', b'OK', store_id.encode(), metadata]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
