"""Fusion's inputs on disk, so that a fusion_node killed at any moment comes back with
its visits, carts and pending decisions. No rclpy here.

FusionCore is deterministic given its inputs and the wall clock each came with, so the
journal keeps exactly those: one JSON line per call of the core (gate event, weight
change, ID-check decision, shelf or gate status, positions, tick) with its ``now`` (wall ns), written before the
core acts on it. On start the lines are replayed into a fresh core and the replay's
outputs are dropped, except the receipts it issues that were never marked published
(the process died between the two): those are handed back to be published now.

Durability. Each line goes to the kernel with one write() before the core sees the
input, so kill -9 loses nothing. fsync decides what survives a power cut:
* gate events, weight changes and ID-check decisions are fsync'd as soon as what the core made of them at
  once (the first look at a cart) is out, before anything else: they are rare and carry
  money; so are restarts and published marks. (A power cut in between loses no more
  than one that came a moment earlier: the visits then open go to review.);
* positions, statuses and ticks at most every ``sync_interval_s``: losing the last
  fraction of a second of them only makes a decision less sure;
* everything is fsync'd before a receipt is handed out, so the replay issues every
  published receipt again, the same, and its published mark suppresses it.
A torn or unreadable tail (a power cut mid-write) ends the replay and is cut off.

Published receipts. The node marks each receipt published after publishing it; one the
replay issues without a mark is published again with the same id and content (the
cloud ingest keeps receipts by id, so a crash between the two counts it once).

Duplicates. A gate event, weight change or ID-check decision whose id was seen before is dropped before it
is journaled: a restarted fusion gets up to RESENT_DEPTH of each publisher's events
again from its transient-local history.

Restarts. After a replay that found inputs, the visits still waiting for their receipts
go to review (FusionCore.mark_restarted: what happened while fusion was down is lost);
the restart is a line too, so a later replay marks the same visits.

Compaction. Once the journal has grown by ``compact_after_bytes`` and every receipt is
marked published, it is rewritten (temporary file, fsync, rename) as the ids seen and
the core's saved state (FusionCore.saved_state: visits, carts, the bin ledger, pending
inputs and decisions, recent positions), so it stays small however long the store is
never empty, and a restart replays minutes, not a day. The state is a pickle tagged
with a fingerprint of the fusion code: a journal whose state another version of jwo
wrote is refused (JournalError) rather than misread; upgrade while the store is closed,
or move the journal away (the visits then open go without receipts).
"""
import base64
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Optional

from jwo_nodes.core.config import StoreConfig
from jwo_nodes.core.fusion.core import FusionCore
from jwo_nodes.core.fusion.types import (ID_DECISIONS, ChangeInput, FusionSettings, GateInput, IdDecisionInput,
                                         IdVerdict, Outputs, SeenIds, TrackInput)
from jwo_nodes.core.held_item import HeldItem

FORMAT = 'jwo-fusion-journal'
VERSION = 1
COMPACT_AFTER_BYTES = 4 << 20


class JournalError(Exception):
    """A journal that is not this store's, or is in use by another process."""


@dataclass
class Recovery:
    """What a start found in the journal."""
    inputs: int = 0            # input lines replayed
    torn_bytes: int = 0        # bytes cut off its end (a torn or unreadable tail)
    receipts: list = dataclasses.field(default_factory=list)   # issued, never marked published
    restarted: list = dataclasses.field(default_factory=list)  # codes of the visits sent to review
    failed: list = dataclasses.field(default_factory=list)     # (line, error) of inputs the core failed on


class FusionJournal:
    """A FusionCore whose inputs are journaled in <state_dir>/fusion-<store_id>.jsonl.

    The input methods are FusionCore's; on_gate_event, on_weight_change and on_id_decision return None
    for an event seen before (and do nothing else). ``recovery`` says what the start
    found; its receipts must be published, and every receipt handed out marked with
    ``published`` once it is. Raises JournalError, or OSError when the state folder
    cannot be used."""

    def __init__(self, store: StoreConfig, settings: FusionSettings, state_dir, now_ns: int, *,
                 sync_interval_s: float = 0.2, compact_after_bytes: int = COMPACT_AFTER_BYTES):
        self.core = FusionCore(store, settings)
        self._header = {'k': 'journal', 'format': FORMAT, 'version': VERSION, 'store_id': store.store_id}
        self._sync_interval_s = sync_interval_s
        self._compact_after_bytes = compact_after_bytes
        folder = Path(state_dir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f'fusion-{store.store_id}.jsonl'
        self._lock_fd = _lock(folder / f'fusion-{store.store_id}.lock')
        self._seen = SeenIds()
        self._unpublished = set()      # receipt ids handed out, not yet marked published
        self._last_input_wall = None   # the wall clock the newest input came with
        self._fd = None
        self._grown = 0                # bytes appended since the journal was last written whole
        self._dirty = False
        self._durable_due = False      # the last input is to be fsync'd before anything else
        self._synced_at = time.monotonic()
        try:
            self.recovery = self._replay(now_ns)
        except BaseException:
            self.close()
            raise
        self._known_at_start = self._seen.ids()

    # -- inputs (FusionCore's) -----------------------------------------------------

    def on_gate_event(self, event: GateInput, wall_ns: int) -> Optional[Outputs]:
        if event.event_id in self._seen:
            return None
        return self._input({'k': 'gate', 'now': wall_ns, 'event': dataclasses.asdict(event)}, durable=True)

    def on_weight_change(self, change: ChangeInput, wall_ns: int) -> Optional[Outputs]:
        if change.event_id in self._seen:
            return None
        return self._input({'k': 'change', 'now': wall_ns, 'event': dataclasses.asdict(change)}, durable=True)

    def on_id_decision(self, decision: IdDecisionInput, wall_ns: int) -> Optional[Outputs]:
        if decision.decision_id in self._seen:
            return None
        return self._input({'k': 'id_decision', 'now': wall_ns,
                            'decision': {**dataclasses.asdict(decision), 'verdict': decision.verdict.value}},
                           durable=True)

    def on_shelf_status(self, shelf_id: str, processed_until_ns: int, wall_ns: int) -> Outputs:
        return self._input({'k': 'status', 'now': wall_ns, 'shelf': shelf_id, 'until': processed_until_ns})

    def on_gate_status(self, gate_id: str, processed_until_ns: int, last_event_id: str, wall_ns: int) -> Outputs:
        return self._input({'k': 'gate_status', 'now': wall_ns, 'gate': gate_id, 'until': processed_until_ns,
                            'last': last_event_id})

    def on_positions(self, stamp_ns: int, tracks: list, wall_ns: int) -> Outputs:
        return self._input({'k': 'positions', 'now': wall_ns, 'stamp': stamp_ns,
                            'tracks': [[t.track_id, t.visit_code, t.x, t.y, t.hand, t.confidence,
                                        astuple(t.hand_item) if t.hand_item else None] for t in tracks]})

    def advance(self, wall_ns: int) -> Outputs:
        return self._input({'k': 'tick', 'now': wall_ns})

    def solved_carts(self) -> list:
        """FusionCore.solved_carts, called once the input's outputs are out: first makes
        that input durable. (Derived from the inputs: nothing to journal.)"""
        if self._durable_due:
            self._sync()
        return self.core.solved_carts()

    # -- bookkeeping -----------------------------------------------------------------

    def published(self, receipt_id: str) -> None:
        """Marks a receipt published: a replay does not hand it out again."""
        self._write({'k': 'published', 'id': receipt_id}, sync=True)
        self._unpublished.discard(receipt_id)
        self._compact_if_due()

    def resent(self, event_id: str) -> bool:
        """Whether the event was known before this start (a publisher re-sending its
        history to the restarted fusion), not seen twice since."""
        return event_id in self._known_at_start

    def close(self) -> None:
        """Syncs and closes the journal (again: nothing)."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the journal -----------------------------------------------------------------

    def _input(self, record: dict, durable: bool = False) -> Outputs:
        """Journals an input and hands it to the core. ``durable``: fsync'd by the
        next solved_carts() or input, whichever comes first."""
        self._write(record, sync=self._durable_due)
        self._durable_due = durable
        out = self._apply(record)
        if out.receipts:
            self._sync()
            self._unpublished.update(r.receipt_id for r in out.receipts)
        self._compact_if_due()
        return out

    def _apply(self, record: dict) -> Outputs:
        """Hands one input line to the core: the same values live and in a replay."""
        kind, now = record['k'], record['now']
        self._last_input_wall = now
        if kind == 'gate':
            event = GateInput(**record['event'])
            self._seen.add(event.gate_id, event.event_id)
            return self.core.on_gate_event(event, now)
        if kind == 'change':
            fields = record['event']
            change = ChangeInput(**{**fields, 'bin_ids': tuple(fields['bin_ids']),
                                    'delta_grams': tuple(fields['delta_grams'])})
            self._seen.add(change.shelf_id, change.event_id)
            return self.core.on_weight_change(change, now)
        if kind == 'id_decision':
            decision = IdDecisionInput(**{**record['decision'], 'verdict': IdVerdict(record['decision']['verdict'])})
            self._seen.add(ID_DECISIONS, decision.decision_id)
            return self.core.on_id_decision(decision, now)
        if kind == 'status':
            return self.core.on_shelf_status(record['shelf'], record['until'], now)
        if kind == 'gate_status':
            return self.core.on_gate_status(record['gate'], record['until'], record['last'], now)
        if kind == 'positions':
            # A line of a journal from before hands' items were read has no item.
            tracks = [TrackInput(track_id, code, x, y, tuple(hand) if hand is not None else None, confidence,
                                 HeldItem(*item[0]) if item and item[0] else None)
                      for track_id, code, x, y, hand, confidence, *item in record['tracks']]
            return self.core.on_positions(record['stamp'], tracks, now)
        if kind == 'tick':
            return self.core.advance(now)
        raise ValueError(f'unknown line kind {kind!r}')

    def _replay(self, now_ns: int) -> Recovery:
        recovery = Recovery()
        data = self.path.read_bytes() if self.path.exists() else b''
        lines = data.split(b'\n')[:-1]   # the part after the last newline is torn
        header = _parse(lines[0]) if lines else None
        if header is None:
            self._rewrite([])            # new, or torn before its header was whole
            recovery.torn_bytes = len(data)
            return recovery
        if header != self._header:
            raise JournalError(f'{self.path}: the journal of {header}, not {self._header}: '
                               'move it away or use another state_dir')
        issued = {}
        down_since = None
        offset = len(lines[0]) + 1
        for number, line in enumerate(lines[1:], start=2):
            record = _parse(line)
            if record is None:
                break
            offset += len(line) + 1
            kind = record['k']
            if kind == 'published':
                issued.pop(record['id'], None)
            elif kind == 'seen':
                self._seen = SeenIds(record['ids'])
            elif kind == 'state':
                if record['code'] != code_fingerprint():
                    raise JournalError(f'{self.path}: its saved state was written by another version of '
                                       'jwo fusion: replay it with that version, or move it away')
                try:
                    self.core.load_state(base64.b64decode(record['core']))
                except Exception as error:    # whatever a damaged pickle raises
                    raise JournalError(f'{self.path}: line {number}: its saved state cannot be read '
                                       f'({type(error).__name__}: {error}): move the journal away') from error
                down_since = self._last_input_wall = record['now']
            elif kind == 'restart':
                self.core.mark_restarted(record['down'], record['now'])
                down_since = record['now']
            else:
                recovery.inputs += 1
                down_since = record['now']
                try:
                    out = self._apply(record)
                except Exception as error:
                    # The live core failed on this input too, and the process with it:
                    # skipping it beats failing at every start.
                    recovery.failed.append((number, f'{type(error).__name__}: {error}'))
                    continue
                issued.update((r.receipt_id, r) for r in out.receipts)
        recovery.torn_bytes = len(data) - offset
        if recovery.torn_bytes:
            os.truncate(self.path, offset)
        self._open_for_append(offset)
        self.core.problems.clear()       # reported before the restart
        recovery.receipts = list(issued.values())
        self._unpublished = set(issued)
        if down_since is not None:
            self._write({'k': 'restart', 'down': down_since, 'now': now_ns}, sync=True)
            recovery.restarted = self.core.mark_restarted(down_since, now_ns)
        return recovery

    def _compact_if_due(self) -> None:
        if self._grown >= self._compact_after_bytes and not self._unpublished:
            self._rewrite([{'k': 'seen', 'ids': self._seen.document()},
                           {'k': 'state', 'code': code_fingerprint(), 'now': self._last_input_wall,
                            'core': base64.b64encode(self.core.saved_state()).decode()}])

    def _rewrite(self, records: list) -> None:
        """Replaces the journal with the header and these lines, atomically."""
        temporary = self.path.with_name(self.path.name + '.tmp')
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b''.join(_line(r) for r in [self._header, *records]))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        _fsync_dir(self.path.parent)
        if self._fd is not None:
            os.close(self._fd)
        self._open_for_append(0)

    def _open_for_append(self, grown: int) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._grown = grown

    def _write(self, record: dict, sync: bool = False) -> None:
        line = _line(record)
        _write_all(self._fd, line)
        self._grown += len(line)
        self._dirty = True
        if sync or time.monotonic() - self._synced_at >= self._sync_interval_s:
            self._sync()

    def _sync(self) -> None:
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._durable_due = False
        self._synced_at = time.monotonic()


@functools.cache
def code_fingerprint() -> str:
    """A digest of the fusion package's source: a saved state is read back only by the
    code that wrote it."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob('*.py')):
        digest.update(path.name.encode() + b'\0' + path.read_bytes())
    return digest.hexdigest()[:16]


def _line(record: dict) -> bytes:
    return (json.dumps(record, separators=(',', ':')) + '\n').encode()


def _parse(line: bytes) -> Optional[dict]:
    """The record of a whole line; None for a torn or damaged one."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and 'k' in record else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(path: Path) -> int:
    """An exclusive lock on the journal (the kernel drops it when the process dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f'{path}: another fusion_node uses this journal')
    return fd
