"""The store's durable outbox: what must reach the cloud, kept on disk until the cloud
acknowledged it. No rclpy, no network; plain values in and out.

SQLite in WAL mode with ``synchronous=FULL``: ``add`` returns only after the WAL is
fsync'd, so an item the caller was told about survives kill -9 and power loss. The file
and its directory are fsync'd when created.

Items are opaque payloads with an idempotency key (``item_id``, unique: adding it again
is a no-op) and a ``visit_key``. Within a visit, items go out in the order they were
added: ``due`` offers only the oldest unfinished item of each visit. The sender reports
back with ``mark_done`` / ``mark_rejected`` / ``defer`` (retry later) / ``set_progress``
(how far a streamed item got, so a restart resumes there).

States: pending -> done (acknowledged) | rejected (the cloud refused it for good; kept
for an operator, never retried, does not hold up its visit). Done items are kept for
``retention_ns`` so a republished item is still recognised as a duplicate, then purged.

``link_access`` joins a visit's token hash (from its gate, at ENTRY) with its receipt
(from fusion, at the exit), whichever comes first (after a restart the durable topics
replay them in any order), and adds the item that tells the cloud, once, when both are
known.
"""
import contextlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

PENDING = 'pending'
DONE = 'done'
REJECTED = 'rejected'

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    visit_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    progress INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    finished_ns INTEGER,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS items_pending ON items (state, visit_key, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS visit_access (
    gate_id TEXT NOT NULL,
    visit_code TEXT NOT NULL,
    token_sha256 BLOB,
    receipt_id TEXT,
    visit_key TEXT,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (gate_id, visit_code)
);
"""
_VERSION = '1'


@dataclass(frozen=True)
class NewItem:
    item_id: str
    visit_key: str
    kind: str
    payload: bytes


@dataclass(frozen=True)
class Item:
    seq: int
    item_id: str
    visit_key: str
    kind: str
    payload: bytes
    state: str
    progress: int
    attempts: int
    next_attempt_ns: int
    created_ns: int
    last_error: str


@dataclass(frozen=True)
class AccessLink:
    """A visit's receipt and the hash of its shopper's token, both known."""
    receipt_id: str
    visit_key: str
    token_sha256: bytes


class OutboxError(Exception):
    pass


class Outbox:
    """One outbox file. Thread-safe: one connection, one lock (the uplink node adds from
    its ROS callbacks while the sender thread reads and acknowledges)."""

    def __init__(self, path, clock=time.time_ns):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                       isolation_level=None, timeout=30.0)
            self._db.execute('PRAGMA journal_mode=WAL')
            mode = self._db.execute('PRAGMA journal_mode').fetchone()[0]
            if mode.lower() != 'wal':
                raise OutboxError(f'{self.path}: cannot use WAL journal (got {mode})')
            self._db.execute('PRAGMA synchronous=FULL')
            # F_FULLFSYNC where the platform has it (macOS); Linux fsync is full already.
            self._db.execute('PRAGMA fullfsync=ON')
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                             (_VERSION,))
            version = self._db.execute(
                "SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
            if version != _VERSION:
                raise OutboxError(f'{self.path}: outbox schema {version}, expected {_VERSION}')
        except sqlite3.DatabaseError as error:
            raise OutboxError(f'{self.path}: {error}') from error
        if created:
            _fsync_dir(self.path.parent)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self):
        """A cursor in one transaction, committed (and fsync'd) when the block ends."""
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute('BEGIN IMMEDIATE')
            try:
                yield cursor
                cursor.execute('COMMIT')
            except BaseException:
                cursor.execute('ROLLBACK')
                raise

    def _write(self, statements) -> list:
        """Runs (sql, args) pairs in one transaction: their row counts."""
        with self._transaction() as cursor:
            counts = []
            for sql, args in statements:
                cursor.execute(sql, args)
                counts.append(cursor.rowcount)
            return counts

    @staticmethod
    def _insert(item: NewItem, now_ns: int):
        return ('INSERT OR IGNORE INTO items (item_id, visit_key, kind, payload, created_ns) '
                'VALUES (?, ?, ?, ?, ?)',
                (item.item_id, item.visit_key, item.kind, sqlite3.Binary(item.payload), now_ns))

    def add(self, items: Iterable[NewItem]) -> int:
        """Adds items in one transaction, durably, in the given order. An item whose
        item_id is already in the outbox (pending, done or rejected) is skipped.
        Returns how many were new."""
        now = self._clock()
        return sum(self._write([self._insert(item, now) for item in items]))

    def link_access(self, gate_id: str, visit_code: str, item_of: Callable[[AccessLink], NewItem],
                    token_sha256: Optional[bytes] = None, receipt_id: Optional[str] = None,
                    visit_key: Optional[str] = None) -> bool:
        """Records what has arrived of the visit that entered at gate_id as visit_code:
        its token hash, or its receipt (receipt_id and visit_key). Once both are known,
        adds ``item_of(link)`` in the same transaction (a repeat finds its item id there
        and adds nothing). Whether it added the item."""
        now = self._clock()
        with self._transaction() as cursor:
            cursor.execute(
                'INSERT INTO visit_access (gate_id, visit_code, token_sha256, receipt_id, visit_key, '
                'updated_ns) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gate_id, visit_code) DO UPDATE SET '
                'token_sha256=COALESCE(excluded.token_sha256, token_sha256), '
                'receipt_id=COALESCE(excluded.receipt_id, receipt_id), '
                'visit_key=COALESCE(excluded.visit_key, visit_key), updated_ns=excluded.updated_ns',
                (gate_id, visit_code, None if token_sha256 is None else sqlite3.Binary(token_sha256),
                 receipt_id, visit_key, now))
            token, receipt, key = cursor.execute(
                'SELECT token_sha256, receipt_id, visit_key FROM visit_access '
                'WHERE gate_id=? AND visit_code=?', (gate_id, visit_code)).fetchone()
            if token is None or receipt is None:
                return False
            cursor.execute(*self._insert(item_of(AccessLink(receipt, key, bytes(token))), now))
            return cursor.rowcount == 1

    def due(self, now_ns: int, busy_visits: Iterable[str] = (), limit: int = 64) -> list:
        """The oldest pending item of each visit, when its retry time has come and its
        visit is not busy (an item of it in flight), oldest first."""
        busy = set(busy_visits)
        with self._lock:
            rows = self._db.execute(
                'SELECT seq, item_id, visit_key, kind, payload, state, progress, attempts, '
                'next_attempt_ns, created_ns, last_error FROM items '
                "WHERE seq IN (SELECT MIN(seq) FROM items WHERE state='pending' "
                'GROUP BY visit_key) AND next_attempt_ns <= ? ORDER BY seq LIMIT ?',
                (now_ns, limit + len(busy))).fetchall()
        items = [Item(*row[:4], bytes(row[4]), *row[5:]) for row in rows]
        return [item for item in items if item.visit_key not in busy][:limit]

    def get(self, item_id: str) -> Optional[Item]:
        with self._lock:
            row = self._db.execute(
                'SELECT seq, item_id, visit_key, kind, payload, state, progress, attempts, '
                'next_attempt_ns, created_ns, last_error FROM items WHERE item_id = ?',
                (item_id,)).fetchone()
        return None if row is None else Item(*row[:4], bytes(row[4]), *row[5:])

    def mark_done(self, seq: int) -> None:
        self._write([("UPDATE items SET state='done', finished_ns=?, last_error='' "
                      "WHERE seq=? AND state='pending'", (self._clock(), seq))])

    def mark_rejected(self, seq: int, error: str) -> None:
        self._write([("UPDATE items SET state='rejected', finished_ns=?, last_error=? "
                      "WHERE seq=? AND state='pending'", (self._clock(), error[:1000], seq))])

    def defer(self, seq: int, next_attempt_ns: int, error: str, *, failed: bool = True) -> None:
        """Not offered again before next_attempt_ns. failed: one more failed attempt;
        False: the item waits for something on the store (its attempts, which set the
        backoff, stay as they are)."""
        self._write([('UPDATE items SET attempts=attempts+?, next_attempt_ns=?, last_error=? '
                      "WHERE seq=? AND state='pending'",
                      (int(failed), next_attempt_ns, error[:1000], seq))])

    def retry_now(self) -> int:
        """Makes every pending item due at once (the cloud is reachable again)."""
        return self._write([("UPDATE items SET next_attempt_ns=0 "
                             "WHERE state='pending' AND next_attempt_ns > 0", ())])[0]

    def requeue_rejected(self) -> int:
        """Makes rejected items pending again (an operator fixed the cause)."""
        return self._write([("UPDATE items SET state='pending', attempts=0, next_attempt_ns=0, "
                             "finished_ns=NULL WHERE state='rejected'", ())])[0]

    def rejected(self, limit: int = 100) -> list:
        """(item_id, last_error) of rejected items, oldest first."""
        with self._lock:
            return self._db.execute("SELECT item_id, last_error FROM items WHERE state='rejected' "
                                    'ORDER BY seq LIMIT ?', (limit,)).fetchall()

    def set_progress(self, seq: int, progress: int) -> None:
        self._write([("UPDATE items SET progress=? WHERE seq=? AND state='pending'",
                      (progress, seq))])

    def counts(self) -> dict:
        with self._lock:
            rows = self._db.execute('SELECT state, COUNT(*) FROM items GROUP BY state').fetchall()
        result = {PENDING: 0, DONE: 0, REJECTED: 0}
        result.update(dict(rows))
        return result

    def purge(self, retention_ns: int) -> int:
        """Deletes done items finished more than retention_ns ago, and what
        link_access recorded of visits that long ago. The number of items deleted."""
        cutoff = self._clock() - retention_ns
        return self._write([("DELETE FROM items WHERE state='done' AND finished_ns < ?", (cutoff,)),
                            ('DELETE FROM visit_access WHERE updated_ns < ?', (cutoff,))])[0]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
