"""The review queue's index: one object, ``review/queue.json``, that lists every visit
waiting for a reviewer with what the queue page shows of it, and who has claimed it.

A queue page is one GET of this object, however long the queue. Every change is a
read-change-write with a conditional replace (S3 ``If-Match`` on the etag read; an
``flock``-guarded compare in a directory bucket), tried again on a conflict, so
concurrent writers (ingest threads adding visits, reviewers claiming and settling them)
never lose one another's changes, and of two reviewers claiming one visit exactly one
gets it.

The queue entries themselves (``review/pending/...``) stay the source of truth:
``rebuild`` makes the index again from them (``jwo-cloud review reindex``; ``serve``
does it when the index is missing). The ingest adds a visit after writing its entry,
and acks only once both are written, so a redelivery repairs a lost index update; a
decision takes the visit out after writing its final receipt, and a visit page that
finds a final receipt finishes that step for a decision that crashed half-way.
"""
import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional

from jwo_cloud import layout
from jwo_cloud.bucket import Bucket, BucketError

NS = 1_000_000_000
# A claim lasts this long unless its reviewer settles, releases or renews it.
CLAIM_S = 300
PAGE_SIZE = 20
# Conditional replaces lost to concurrent writers before giving up (with jittered waits
# of a few milliseconds each: a claim or an added visit takes one round trip).
_MAX_TRIES = 60


class ReviewError(Exception):
    pass


class NotPending(ReviewError):
    pass


class ClaimedByOther(ReviewError):
    def __init__(self, claim: 'Claim'):
        super().__init__(f'{claim.reviewer} is reviewing this visit')
        self.claim = claim


@dataclass(frozen=True, order=True)
class VisitKey:
    store_id: str
    receipt_id: str


@dataclass(frozen=True)
class Claim:
    reviewer: str
    claimed_ns: int
    expires_ns: int

    def blocks(self, reviewer: str, now_ns: int) -> bool:
        """Whether this claim keeps ``reviewer`` off the visit at now_ns."""
        return self.reviewer != reviewer and self.expires_ns > now_ns


@dataclass(frozen=True)
class QueueEntry:
    """What the queue shows of a visit waiting for review."""
    store_id: str
    receipt_id: str
    visit_code: str
    exit_ns: int
    queued_ns: int
    reasons: tuple
    events: int
    total_cents: Optional[int]
    currency: str
    claim: Optional[Claim] = None

    @property
    def key(self) -> VisitKey:
        return VisitKey(self.store_id, self.receipt_id)

    def order(self) -> tuple:
        """Oldest exit first (the shopper who left first waits longest for a receipt)."""
        return (self.exit_ns, self.store_id, self.receipt_id)

    def document(self) -> dict:
        return {**asdict(self), 'reasons': list(self.reasons)}

    @classmethod
    def from_document(cls, doc: dict) -> 'QueueEntry':
        claim = doc.get('claim')
        return cls(doc['store_id'], doc['receipt_id'], doc.get('visit_code', ''),
                   int(doc.get('exit_ns', 0)), int(doc.get('queued_ns', 0)),
                   tuple(doc.get('reasons', ())), int(doc.get('events', 0)),
                   doc.get('total_cents'), doc.get('currency', ''),
                   Claim(**claim) if claim else None)


def entry_of(pending: dict, receipt: Optional[dict]) -> QueueEntry:
    """The index entry of a queue entry (as the ingest writes it) and its receipt."""
    request = pending.get('request', {})
    events = request.get('events', [])
    receipt = receipt or {}
    reasons = ({e.get('reason_code', '') for e in events}
               | {r.get('code', '') for r in receipt.get('reasons', [])}) - {''}
    return QueueEntry(
        store_id=pending['store_id'], receipt_id=pending['receipt_id'],
        visit_code=pending.get('visit_code', ''),
        exit_ns=int(receipt.get('exit_ns') or request.get('stamp_ns') or 0),
        queued_ns=int(pending.get('queued_ns', 0)), reasons=tuple(sorted(reasons)),
        events=len(events), total_cents=receipt.get('total_cents'),
        currency=receipt.get('currency', ''))


@dataclass(frozen=True)
class QueueFilter:
    store_id: str = ''
    reason: str = ''
    # Only visits whose shopper left at least this long ago.
    min_age_s: int = 0

    def admits(self, entry: QueueEntry, now_ns: int) -> bool:
        return ((not self.store_id or entry.store_id == self.store_id)
                and (not self.reason or self.reason in entry.reasons)
                and now_ns - entry.exit_ns >= self.min_age_s * NS)


@dataclass(frozen=True)
class QueuePage:
    entries: tuple
    number: int          # 1-based
    pages: int
    matching: int        # visits the filter admits
    waiting: int         # visits in the queue
    stores: tuple        # every store and reason in the queue, for the filter's choices
    reasons: tuple


@dataclass
class QueueIndex:
    entries: dict = field(default_factory=dict)    # VisitKey -> QueueEntry
    changed: bool = False

    @classmethod
    def from_bytes(cls, data: bytes) -> 'QueueIndex':
        doc = json.loads(data)
        entries = (QueueEntry.from_document(e) for e in doc.get('visits', []))
        return cls({e.key: e for e in entries})

    def to_bytes(self) -> bytes:
        return json.dumps({'version': 1, 'visits': [e.document() for e in self.ordered()]},
                          separators=(',', ':')).encode()

    def ordered(self) -> list:
        return sorted(self.entries.values(), key=QueueEntry.order)

    def get(self, key: VisitKey) -> Optional[QueueEntry]:
        return self.entries.get(key)

    def with_visit_code(self, store_id: str, visit_code: str) -> Optional[QueueEntry]:
        return next((e for e in self.entries.values()
                     if e.store_id == store_id and e.visit_code == visit_code), None)

    def page(self, wanted: QueueFilter, number: int, now_ns: int, size: int = PAGE_SIZE) -> QueuePage:
        matching = [e for e in self.ordered() if wanted.admits(e, now_ns)]
        pages = max(1, -(-len(matching) // size))
        number = min(max(1, number), pages)
        return QueuePage(
            tuple(matching[(number - 1) * size:number * size]), number, pages, len(matching),
            len(self.entries), tuple(sorted({e.store_id for e in self.entries.values()})),
            tuple(sorted({r for e in self.entries.values() for r in e.reasons})))

    def next_for(self, reviewer: str, wanted: QueueFilter, now_ns: int,
                 skip: Optional[VisitKey] = None) -> Optional[QueueEntry]:
        """The oldest visit the filter admits that no other reviewer holds."""
        return next((e for e in self.ordered()
                     if e.key != skip and wanted.admits(e, now_ns)
                     and not (e.claim and e.claim.blocks(reviewer, now_ns))), None)

    # -- changes (each marks the index to be written) --------------------------------
    def add(self, entry: QueueEntry) -> None:
        if entry.key not in self.entries:
            self.entries[entry.key] = entry
            self.changed = True

    def remove(self, key: VisitKey) -> None:
        if self.entries.pop(key, None) is not None:
            self.changed = True

    def claim(self, key: VisitKey, reviewer: str, now_ns: int, claim_s: float) -> Claim:
        entry = self.entries.get(key)
        if entry is None:
            raise NotPending(f'{key.store_id}/{key.receipt_id} is not waiting for review')
        if entry.claim and entry.claim.blocks(reviewer, now_ns):
            raise ClaimedByOther(entry.claim)
        # A reviewer renewing a claim keeps its start: the time to settle runs from it.
        mine = entry.claim if entry.claim and entry.claim.reviewer == reviewer else None
        claim = Claim(reviewer, mine.claimed_ns if mine else now_ns, now_ns + int(claim_s * NS))
        self.entries[key] = replace(entry, claim=claim)
        self.changed = True
        return claim

    def release(self, key: VisitKey, reviewer: str) -> None:
        entry = self.entries.get(key)
        if entry is not None and entry.claim and entry.claim.reviewer == reviewer:
            self.entries[key] = replace(entry, claim=None)
            self.changed = True


def read(bucket: Bucket) -> QueueIndex:
    """The index as it is now: one GET."""
    data = bucket.get(layout.QUEUE_INDEX)
    return QueueIndex.from_bytes(data) if data is not None else QueueIndex()


def update(bucket: Bucket, change: Callable):
    """Applies ``change(index)`` to the index and writes it back only if it still is the
    version read (conditional replace; created with a conditional create), reading
    again and re-applying on a conflict. Returns what ``change`` returned; its
    exceptions (nothing written) go to the caller."""
    for _ in range(_MAX_TRIES):
        stored = bucket.get_object(layout.QUEUE_INDEX)
        index = QueueIndex.from_bytes(stored.data) if stored is not None else QueueIndex()
        result = change(index)
        if not index.changed:
            return result
        data = index.to_bytes()
        written = (bucket.put(layout.QUEUE_INDEX, data, if_match=stored.etag) if stored is not None
                   else bucket.put(layout.QUEUE_INDEX, data, if_none_match=True))
        if written:
            return result
        time.sleep(random.uniform(0.001, 0.02))
    raise BucketError(f'{layout.QUEUE_INDEX}: changed by others {_MAX_TRIES} times in a row')


def enqueue(bucket: Bucket, entry: QueueEntry) -> None:
    update(bucket, lambda index: index.add(entry))


def dequeue(bucket: Bucket, key: VisitKey) -> None:
    update(bucket, lambda index: index.remove(key))


def claim(bucket: Bucket, key: VisitKey, reviewer: str, now_ns: int,
          claim_s: float = CLAIM_S) -> Claim:
    """Claims (or renews the claim on) one visit; ClaimedByOther while another
    reviewer's claim runs, NotPending when it is not in the queue."""
    return update(bucket, lambda index: index.claim(key, reviewer, now_ns, claim_s))


def claim_next(bucket: Bucket, reviewer: str, wanted: QueueFilter, now_ns: int,
               claim_s: float = CLAIM_S, skip: Optional[VisitKey] = None) -> Optional[QueueEntry]:
    """Claims the oldest visit the filter admits that nobody else holds (one round trip,
    so two reviewers asking at once get different visits); None when there is none."""
    def change(index: QueueIndex):
        entry = index.next_for(reviewer, wanted, now_ns, skip)
        if entry is None:
            return None
        return replace(entry, claim=index.claim(entry.key, reviewer, now_ns, claim_s))
    return update(bucket, change)


def release(bucket: Bucket, key: VisitKey, reviewer: str) -> None:
    update(bucket, lambda index: index.release(key, reviewer))


def retire(bucket: Bucket, store_id: str, receipt_id: str, entry: dict) -> None:
    """A settled visit's queue entry leaves the queue, kept under review/settled/: the
    evidence a dispute of the visit's receipt is reviewed with."""
    bucket.put(layout.settled_entry_key(store_id, receipt_id),
               json.dumps(entry, indent=1, sort_keys=True).encode())
    bucket.delete(layout.pending_key(store_id, receipt_id))


def rebuild(bucket: Bucket) -> int:
    """Makes the index again from the queue entries in the bucket (a LIST and two GETs
    per visit), keeping the claims that run; queue entries of settled visits are
    removed. Returns the number of visits waiting."""
    started_ns = time.time_ns()
    scanned = {}
    for key in list(bucket.list(layout.PENDING_PREFIX)):
        ids = layout.parse_pending_key(key)
        if ids is None:
            continue
        store_id, receipt_id = ids
        pending = bucket.get_json(key)
        if pending is None:
            continue
        if bucket.head(layout.final_key(store_id, receipt_id)) is not None:
            retire(bucket, store_id, receipt_id, pending)   # settled: finish what the decision started
            continue
        entry = entry_of(pending, bucket.get_json(layout.receipt_key(store_id, receipt_id)))
        scanned[entry.key] = entry

    def change(index: QueueIndex) -> int:
        # Visits the ingest added while this scanned stay in.
        added = {k: e for k, e in index.entries.items() if e.queued_ns >= started_ns}
        rebuilt = {k: replace(e, claim=index.entries[k].claim) if k in index.entries else e
                   for k, e in scanned.items()}
        index.entries = {**rebuilt, **added}
        index.changed = True
        return len(index.entries)
    return update(bucket, change)

