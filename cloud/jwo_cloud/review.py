"""Settling visits in doubt: the review queue in the bucket, the decision, reviewers.

The web UI (review_web.py) and the CLI (``jwo-cloud review ...``) both use this.

**One decision per visit.** A decision creates ``stores/<s>/final/<receipt_id>.json``
with a conditional create (S3 ``PutObject`` with ``If-None-Match: *``; ``link(2)`` in a
directory bucket). The bucket lets exactly one create win: the second reviewer gets
``AlreadySettled`` (HTTP 412 from S3) and nothing is overwritten. Only then is the queue
entry deleted; an entry whose final receipt exists (a crash between the two steps, a
redelivered review request) is skipped and cleaned up when the queue is listed.

Money is integer cents. A confirmed receipt keeps the store's figures; a corrected one
is re-totalled: line total = quantity x unit price, tax = subtotal x tax_rate_bp / 10000
rounded half up (the store's rate travels with the receipt).
"""
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from pathlib import Path

from jwo_cloud import layout
from jwo_cloud.bucket import Bucket

ACTIONS = ('confirm', 'correct')
EVENT_DECISIONS = ('', 'this_visit', 'other_visit', 'no_item')
_SKU = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$')
MAX_QUANTITY = 999
MAX_UNIT_PRICE_CENTS = 10_000_000


class ReviewError(Exception):
    pass


class AlreadySettled(ReviewError):
    def __init__(self, final: dict):
        by = (final or {}).get('review', {}).get('reviewer', 'someone')
        super().__init__(f'this visit was already settled by {by}')
        self.final = final


class NotPending(ReviewError):
    pass


class InvalidDecision(ReviewError):
    pass


def _load(bucket: Bucket, key: str):
    data = bucket.get(key)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def pending(bucket: Bucket) -> list:
    """Summaries of the visits waiting for a reviewer, oldest first."""
    visits = []
    for key in list(bucket.list(layout.PENDING_PREFIX)):
        ids = layout.parse_pending_key(key)
        if ids is None:
            continue
        store_id, receipt_id = ids
        if bucket.head(layout.final_key(store_id, receipt_id)) is not None:
            bucket.delete(key)   # settled: finish what the decision started
            continue
        entry = _load(bucket, key)
        if entry is None:
            continue
        receipt = _load(bucket, layout.receipt_key(store_id, receipt_id)) or {}
        events = entry.get('request', {}).get('events', [])
        visits.append({
            'store_id': store_id, 'receipt_id': receipt_id,
            'visit_code': entry.get('visit_code', ''), 'queued_ns': entry.get('queued_ns', 0),
            'events': len(events),
            'reasons': sorted({e.get('reason_code', '') for e in events} |
                              {r.get('code', '') for r in receipt.get('reasons', [])} - {''}),
            'total_cents': receipt.get('total_cents'), 'currency': receipt.get('currency', ''),
            'receipt_arrived': bool(receipt)})
    return sorted(visits, key=lambda v: (v['queued_ns'], v['store_id'], v['receipt_id']))


def load_visit(bucket: Bucket, store_id: str, receipt_id: str) -> dict:
    """Everything a reviewer looks at: the queue entry, the proposed receipt, the
    clips (whether uploaded) and the final receipt when it is settled."""
    final = _load(bucket, layout.final_key(store_id, receipt_id))
    entry = _load(bucket, layout.pending_key(store_id, receipt_id))
    receipt = _load(bucket, layout.receipt_key(store_id, receipt_id))
    if entry is None and final is None:
        raise NotPending(f'no visit {store_id}/{receipt_id} in the review queue')
    clips = {}
    for event in (entry or {}).get('request', {}).get('events', []):
        for clip_id, key in zip(event.get('clip_ids', []), event.get('clip_keys', [])):
            if clip_id not in clips:
                head = bucket.head(key)
                clips[clip_id] = {'clip_id': clip_id, 'key': key, 'present': head is not None,
                                  'content_type': (head or {}).get('content_type', ''),
                                  'size': (head or {}).get('size', 0)}
    return {'store_id': store_id, 'receipt_id': receipt_id, 'entry': entry,
            'receipt': receipt, 'final': final, 'clips': clips}


def _tax(subtotal_cents: int, tax_rate_bp: int) -> int:
    """Half up, in integers (negative subtotals mirror positive ones)."""
    sign = -1 if subtotal_cents < 0 else 1
    return sign * ((abs(subtotal_cents) * tax_rate_bp + 5000) // 10000)


def _clean_lines(lines) -> list:
    clean = []
    for n, line in enumerate(lines):
        sku = str(line.get('sku', '')).strip()
        if not _SKU.match(sku):
            raise InvalidDecision(f'line {n + 1}: invalid sku {sku!r}')
        try:
            quantity = int(line.get('quantity'))
            unit = int(line.get('unit_price_cents'))
        except (TypeError, ValueError):
            raise InvalidDecision(f'line {n + 1} ({sku}): quantity and unit price must be whole numbers')
        if not 0 <= quantity <= MAX_QUANTITY:
            raise InvalidDecision(f'line {n + 1} ({sku}): quantity must be 0..{MAX_QUANTITY}')
        if not 0 <= unit <= MAX_UNIT_PRICE_CENTS:
            raise InvalidDecision(f'line {n + 1} ({sku}): unit price out of range')
        if quantity == 0:
            continue
        clean.append({'sku': sku, 'name': str(line.get('name', ''))[:200], 'quantity': quantity,
                      'unit_price_cents': unit, 'line_total_cents': quantity * unit})
    merged = {}
    for line in clean:   # one line per sku and price
        key = (line['sku'], line['unit_price_cents'])
        if key in merged:
            merged[key]['quantity'] += line['quantity']
            merged[key]['line_total_cents'] += line['line_total_cents']
        else:
            merged[key] = dict(line)
    return list(merged.values())


def decide(bucket: Bucket, store_id: str, receipt_id: str, reviewer: str, action: str,
           lines=None, event_decisions=None, note: str = '') -> dict:
    """Settles a visit: writes its final receipt (once) and takes it off the queue."""
    if action not in ACTIONS:
        raise InvalidDecision(f'action must be one of {ACTIONS}')
    final_key = layout.final_key(store_id, receipt_id)
    entry = _load(bucket, layout.pending_key(store_id, receipt_id))
    if entry is None:
        final = _load(bucket, final_key)
        if final is not None:
            raise AlreadySettled(final)
        raise NotPending(f'no visit {store_id}/{receipt_id} in the review queue')
    receipt = _load(bucket, layout.receipt_key(store_id, receipt_id))
    if receipt is None:
        raise NotPending(f'the receipt of {store_id}/{receipt_id} has not arrived yet')
    proposed = [{k: line[k] for k in ('sku', 'name', 'quantity', 'unit_price_cents',
                                      'line_total_cents')} for line in receipt.get('lines', [])]
    events = {e.get('event_id') for e in entry.get('request', {}).get('events', [])}
    decisions = {}
    for event_id, value in (event_decisions or {}).items():
        if event_id not in events or value not in EVENT_DECISIONS:
            raise InvalidDecision(f'invalid decision {value!r} for event {event_id!r}')
        if value:
            decisions[event_id] = value
    if action == 'confirm':
        final_lines = proposed
        subtotal, tax = receipt['subtotal_cents'], receipt['tax_cents']
    else:
        final_lines = _clean_lines(lines or [])
        subtotal = sum(line['line_total_cents'] for line in final_lines)
        if final_lines == [p for p in proposed if p['quantity'] != 0]:
            tax = receipt['tax_cents'] if subtotal == receipt['subtotal_cents'] else \
                _tax(subtotal, receipt.get('tax_rate_bp', 0))
        else:
            tax = _tax(subtotal, receipt.get('tax_rate_bp', 0))
    final = {
        'receipt_id': receipt_id, 'store_id': store_id,
        'visit_code': receipt.get('visit_code', ''), 'status': 'FINAL',
        'entry_ns': receipt.get('entry_ns', 0), 'exit_ns': receipt.get('exit_ns', 0),
        'lines': final_lines, 'subtotal_cents': subtotal, 'tax_cents': tax,
        'total_cents': subtotal + tax, 'currency': receipt.get('currency', ''),
        'tax_rate_bp': receipt.get('tax_rate_bp', 0),
        'review': {'reviewer': reviewer, 'decided_ns': time.time_ns(), 'action': action,
                   'note': note[:2000], 'event_decisions': decisions,
                   'proposed_total_cents': receipt.get('total_cents'),
                   'proposed_lines': proposed,
                   'receipt_key': layout.receipt_key(store_id, receipt_id)}}
    body = json.dumps(final, indent=1, sort_keys=True).encode()
    if not bucket.put(final_key, body, if_none_match=True):
        raise AlreadySettled(_load(bucket, final_key))
    bucket.delete(layout.pending_key(store_id, receipt_id))
    return final


# -- reviewers -------------------------------------------------------------------------
_ITERATIONS = 200_000
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$')


def _hash(password: str, salt: bytes, iterations: int) -> str:
    return hashlib.pbkdf2_hmac('sha256', password.encode(), salt, iterations).hex()


def add_reviewer(path, name: str, password: str) -> None:
    """Adds or replaces a reviewer in the reviewers file (PBKDF2-SHA256 hashes)."""
    if not _NAME.match(name):
        raise ReviewError(f'invalid reviewer name {name!r}')
    if len(password) < 8:
        raise ReviewError('a password needs at least 8 characters')
    path = Path(path)
    reviewers = json.loads(path.read_text()) if path.exists() else {}
    salt = secrets.token_bytes(16)
    reviewers[name] = {'salt': salt.hex(), 'iterations': _ITERATIONS,
                       'hash': _hash(password, salt, _ITERATIONS)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    old = os.umask(0o077)
    try:
        tmp.write_text(json.dumps(reviewers, indent=1, sort_keys=True))
    finally:
        os.umask(old)
    os.replace(tmp, path)


def check_reviewer(path, name: str, password: str) -> bool:
    try:
        reviewers = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    record = reviewers.get(name)
    if record is None:
        _hash(password, b'x' * 16, _ITERATIONS)   # same time for unknown names
        return False
    expected = _hash(password, bytes.fromhex(record['salt']), int(record['iterations']))
    return hmac.compare_digest(expected, record['hash'])
