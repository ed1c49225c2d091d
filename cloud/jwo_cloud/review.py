"""Settling visits in doubt: the visit as a reviewer sees it, the reviewer's choice per
event, the decision, the labelled data it leaves, the reviewers' figures, and the
reviewer accounts.

The web UI (review_web.py) and the CLI (``jwo-cloud review ...``) both use this; the
queue and its claims are review_queue.py.

**One decision per visit.** A decision creates ``stores/<s>/final/<receipt_id>.json``
with a conditional create (S3 ``PutObject`` with ``If-None-Match: *``; ``link(2)`` in a
directory bucket). The bucket lets exactly one create win: the second reviewer gets
``AlreadySettled`` (HTTP 412 from S3) and nothing is overwritten. Then ``finish``
writes the visit's labelled data, takes it out of the queue's index and deletes its
queue entry; a visit whose final receipt exists with those steps undone (a crash in
between) is finished when it is next opened or the index is rebuilt.

**Events and choices.** Each event in doubt is one weight change. Fusion proposed who
made it (a visit, or nobody) and what it was (a count of a product); the reviewer may
choose otherwise. A take by this visit adds its count to this visit's receipt, a
put-back takes it off, a change made by another visit or by nobody changes nothing
here, so changing a choice changes the receipt by the difference (``rechoose``).

Money is integer cents. Prices come from the proposed receipt (the price at the visit)
or, for a product it does not list, from the store's catalogue: never typed in. A
confirmed receipt keeps the store's figures; a corrected one is re-totalled: line total
= quantity x unit price, tax = subtotal x tax_rate_bp / 10000 rounded half up (the
store's rate travels with the receipt).
"""
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from jwo_cloud import catalogue, delivery, layout, payer, review_queue
from jwo_cloud.bucket import Bucket
from jwo_cloud.catalogue import Catalogue, Product
from jwo_cloud.review_queue import NotPending, ReviewError
from jwo_common import money

MAX_QUANTITY = 999
NS = 1_000_000_000
_REVIEWER_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$')
NOBODY = 'nobody'
THIS_VISIT = 'this'


class AlreadySettled(ReviewError):
    def __init__(self, final: dict):
        by = (final or {}).get('review', {}).get('reviewer', 'someone')
        super().__init__(f'this visit was already settled by {by}')
        self.final = final


class InvalidDecision(ReviewError):
    pass


@dataclass(frozen=True)
class EventChoice:
    """What one weight change was: the visit that made it ('' for nobody) and the
    product and count ('' sku: not known)."""
    visit_code: str
    sku: str
    quantity: int

    def effect(self, visit_code: str, sign: int) -> dict:
        """What it does to the cart of ``visit_code``: sku -> count to add."""
        if self.visit_code != visit_code or not self.sku:
            return {}
        return {self.sku: sign * self.quantity}

    def document(self) -> dict:
        return {'visit': self.visit_code, 'sku': self.sku, 'quantity': self.quantity}

    def encode(self) -> str:
        """The ``parse`` form of this choice."""
        who = self.visit_code or NOBODY
        return f'{who}:{self.sku}:{self.quantity}' if self.sku else who

    @classmethod
    def parse(cls, text: str, this_visit: str) -> 'EventChoice':
        """``WHO[:SKU:QUANTITY]``, WHO being ``this``, ``nobody`` or a visit code (the
        CLI's --event)."""
        who, _, what = text.partition(':')
        visit = {THIS_VISIT: this_visit, NOBODY: ''}.get(who, who)
        if not what:
            return cls(visit, '', 0)
        sku, _, quantity = what.partition(':')
        try:
            return cls(visit, sku, int(quantity or 1))
        except ValueError:
            raise InvalidDecision(f'{text!r}: the quantity is not a whole number')


def sign_of(event: dict) -> int:
    """+1 for a take (the weight fell: the item goes into the cart), -1 for a put-back."""
    return 1 if sum(event.get('delta_grams', [])) <= 0 else -1


def proposed_choice(event: dict) -> EventChoice:
    """What the visit's receipt takes an event as: a dispute's events what the review
    before decided; else fusion's proposal, its product on the visit it gave the change
    to (the likeliest candidate where the store does not say)."""
    if event.get('decided'):
        decided = event['decided']
        return EventChoice(decided['visit'], decided['sku'], int(decided['quantity']))
    candidates = event.get('candidate_visits', [])
    visit = event.get('proposed_visit') or (candidates[0] if candidates else '')
    sku = event.get('proposed_sku', '')
    return EventChoice(visit, sku, int(event.get('proposed_quantity', 0)) if sku else 0)


def rechoose(quantities: dict, events: list, was: dict, now: dict, visit_code: str) -> dict:
    """The receipt's quantities (sku -> count) once each event in ``now`` (event id ->
    EventChoice) is taken as that instead of as ``was``; never below zero."""
    result = dict(quantities)
    for event in events:
        event_id = event['event_id']
        if event_id not in now:
            continue
        sign = sign_of(event)
        for sku, count in was[event_id].effect(visit_code, sign).items():
            result[sku] = result.get(sku, 0) - count
        for sku, count in now[event_id].effect(visit_code, sign).items():
            result[sku] = result.get(sku, 0) + count
    return {sku: max(0, count) for sku, count in result.items()}


@dataclass(frozen=True)
class ClipState:
    clip_id: str
    key: str
    present: bool
    content_type: str
    size: int


@dataclass(frozen=True)
class Totals:
    # The edge's promotion savings that still hold (see Visit.totals).
    savings: list
    savings_cents: int
    # The lines less the savings.
    subtotal_cents: int
    tax_cents: int
    total_cents: int


@dataclass
class Visit:
    """Everything a reviewer looks at: the queue entry, the proposed receipt, the final
    receipt once settled, the clips (whether uploaded) and the store's catalogue."""
    store_id: str
    receipt_id: str
    entry: Optional[dict]
    receipt: Optional[dict]
    final: Optional[dict]
    clips: dict                 # clip_id -> ClipState
    catalogue: Catalogue

    @property
    def visit_code(self) -> str:
        return (self.receipt or self.entry or {}).get('visit_code', '')

    @property
    def events(self) -> list:
        return (self.entry or {}).get('request', {}).get('events', [])

    def proposed_quantities(self) -> dict:
        quantities = {}
        for line in (self.receipt or {}).get('lines', []):
            quantities[line['sku']] = quantities.get(line['sku'], 0) + int(line['quantity'])
        return quantities

    def proposed_choices(self) -> dict:
        return {event['event_id']: proposed_choice(event) for event in self.events}

    def product(self, sku: str) -> Optional[Product]:
        """A product by SKU as the receipt prices it, else as the catalogue does."""
        for line in (self.receipt or {}).get('lines', []):
            if line['sku'] == sku:
                return Product(sku, line.get('name', ''), 0.0, 0.0,
                                          int(line['unit_price_cents']))
        return self.catalogue.products.get(sku)

    def lines(self, quantities: dict) -> list:
        """Receipt lines for sku -> count: the proposed lines' order first, priced by
        ``product``; InvalidDecision for a SKU the store does not sell or a bad count."""
        proposed = {line['sku']: line for line in (self.receipt or {}).get('lines', [])}
        order = list(proposed) + [sku for sku in quantities if sku not in proposed]
        lines = []
        for sku in order:
            try:
                quantity = int(quantities.get(sku, 0))
            except (TypeError, ValueError):
                raise InvalidDecision(f'{sku}: the quantity is not a whole number')
            if not 0 <= quantity <= MAX_QUANTITY:
                raise InvalidDecision(f'{sku}: the quantity must be 0..{MAX_QUANTITY}')
            if quantity == 0:
                continue
            weighed = proposed.get(sku, {})
            if weighed.get('sold_by_weight'):
                # By weight: the pieces the shelf weighed, their mean weight for a corrected count.
                grams = round(weighed['grams'] * quantity / max(1, int(weighed['quantity'])))
                lines.append({'sku': sku, 'name': weighed['name'], 'quantity': quantity,
                              'unit_price_cents': weighed['unit_price_cents'], 'sold_by_weight': True,
                              'grams': grams,
                              'line_total_cents': money.weighed_price_cents(grams, weighed['unit_price_cents'])})
                continue
            product = self.product(sku)
            if product is None:
                raise InvalidDecision(f'{sku} is not in the store\'s catalogue')
            lines.append({'sku': sku, 'name': product.name, 'quantity': quantity,
                          'unit_price_cents': product.price_cents,
                          'line_total_cents': quantity * product.price_cents})
        return lines

    def totals(self, lines: list) -> Totals:
        """The totals of the final lines: the proposed receipt's when they are its lines;
        after a correction, the lines less each promotion saving of the edge whose SKUs
        all kept their proposed counts (the cloud has no promotion engine: a promotion
        that a correction newly earns or breaks is not re-applied)."""
        receipt = self.receipt or {}
        savings = receipt.get('savings', [])
        if _line_counts(lines) == _line_counts(receipt.get('lines', [])):
            return Totals(list(savings), receipt.get('savings_cents', 0), receipt['subtotal_cents'],
                          receipt['tax_cents'], receipt['total_cents'])
        now, was = dict(_line_counts(lines)), dict(_line_counts(receipt.get('lines', [])))
        kept = [saving for saving in savings if all(now.get(sku) == was.get(sku) for sku in saving['skus'])]
        saved = sum(saving['cents'] for saving in kept)
        subtotal = sum(line['line_total_cents'] for line in lines) - saved
        tax = money.tax_cents(subtotal, receipt.get('tax_rate_bp', 0))
        return Totals(kept, saved, subtotal, tax, subtotal + tax)

    def check_choice(self, event_id: str, choice: EventChoice) -> None:
        event = next((e for e in self.events if e['event_id'] == event_id), None)
        if event is None:
            raise InvalidDecision(f'no event {event_id!r} in this visit')
        if choice.visit_code not in ('', self.visit_code, *event.get('candidate_visits', [])):
            raise InvalidDecision(f'event {event_id}: {choice.visit_code} was not near the bin')
        if choice.sku and self.product(choice.sku) is None:
            raise InvalidDecision(f'event {event_id}: {choice.sku} is not in the store\'s catalogue')
        if not 0 <= choice.quantity <= MAX_QUANTITY:
            raise InvalidDecision(f'event {event_id}: the quantity must be 0..{MAX_QUANTITY}')


def _line_counts(lines: list) -> list:
    return sorted((line['sku'], int(line['quantity'])) for line in lines if int(line['quantity']))


def load_visit(bucket: Bucket, store_id: str, receipt_id: str, with_clips: bool = True) -> Visit:
    """The visit from the bucket: queue entry, receipt, final receipt, catalogue and,
    with_clips, a HEAD of each clip."""
    final = bucket.get_json(layout.final_key(store_id, receipt_id))
    entry = bucket.get_json(layout.pending_key(store_id, receipt_id))
    receipt = bucket.get_json(layout.receipt_key(store_id, receipt_id))
    if entry is None and final is None:
        raise NotPending(f'no visit {store_id}/{receipt_id} in the review queue')
    clips = {}
    for event in (entry or {}).get('request', {}).get('events', []) if with_clips else []:
        for clip_id, key in zip(event.get('clip_ids', []), event.get('clip_keys', [])):
            if clip_id not in clips:
                head = bucket.head(key) or {}
                clips[clip_id] = ClipState(clip_id, key, bool(head), head.get('content_type', ''),
                                           head.get('size', 0))
    known = catalogue.load(bucket, store_id) or Catalogue.of_receipt(store_id, receipt or {})
    return Visit(store_id, receipt_id, entry, receipt, final, clips, known)


def decide(bucket: Bucket, visit: Visit, reviewer: str, quantities: Optional[dict] = None,
           choices: Optional[dict] = None, note: str = '', claimed_ns: Optional[int] = None) -> dict:
    """Settles a visit (as load_visit read it): writes its final receipt (once) and
    finishes (labels, queue).

    quantities: sku -> count on the final receipt (None: as proposed); choices: event
    id -> EventChoice where the reviewer said what an event was (the others keep
    fusion's proposal in the labels); claimed_ns: when the reviewer took the visit up,
    for the time to settle."""
    store_id, receipt_id = visit.store_id, visit.receipt_id
    if visit.entry is None:
        raise AlreadySettled(visit.final)
    if visit.receipt is None:
        raise NotPending(f'the receipt of {store_id}/{receipt_id} has not arrived yet')
    chosen = visit.proposed_choices()
    for event_id, choice in (choices or {}).items():
        visit.check_choice(event_id, choice)
        chosen[event_id] = choice
    proposed_lines = [{k: line[k] for k in ('sku', 'name', 'quantity', 'unit_price_cents',
                                            'line_total_cents')} for line in visit.receipt['lines']]
    lines = visit.lines(visit.proposed_quantities() if quantities is None else quantities)
    totals = visit.totals(lines)
    agrees = _line_counts(lines) == _line_counts(proposed_lines)
    decided_ns = time.time_ns()
    receipt = visit.receipt
    final = {
        'receipt_id': receipt_id, 'store_id': store_id, 'visit_code': visit.visit_code,
        'status': 'FINAL', 'entry_ns': receipt.get('entry_ns', 0), 'exit_ns': receipt.get('exit_ns', 0),
        'lines': lines, **asdict(totals), 'currency': receipt.get('currency', ''),
        'tax_rate_bp': receipt.get('tax_rate_bp', 0),
        'review': {'reviewer': reviewer, 'decided_ns': decided_ns,
                   'action': 'confirm' if agrees else 'correct', 'note': note[:2000],
                   'claimed_ns': claimed_ns,
                   'seconds_to_settle': (round((decided_ns - claimed_ns) / NS, 3)
                                         if claimed_ns else None),
                   'event_decisions': {e: c.document() for e, c in chosen.items()},
                   'proposed_total_cents': receipt.get('total_cents'),
                   'proposed_lines': proposed_lines,
                   'receipt_key': layout.receipt_key(store_id, receipt_id)}}
    body = json.dumps(final, indent=1, sort_keys=True).encode()
    if not bucket.put(layout.final_key(store_id, receipt_id), body, if_none_match=True):
        raise AlreadySettled(bucket.get_json(layout.final_key(store_id, receipt_id)))
    finish(bucket, final, visit.entry)
    return final


def finish(bucket: Bucket, final: dict, entry: dict) -> None:
    """The steps after a final receipt is written: its labelled data, out of the index,
    the queue entry retired, the new version to its payer. Each may be repeated."""
    store_id, receipt_id = final['store_id'], final['receipt_id']
    rows = labels_of(final, entry)
    bucket.put(layout.labels_key(store_id, receipt_id),
               ''.join(json.dumps(row, sort_keys=True) + '\n' for row in rows).encode(),
               content_type='application/x-ndjson')
    review_queue.dequeue(bucket, review_queue.VisitKey(store_id, receipt_id))
    review_queue.retire(bucket, store_id, receipt_id, entry)
    dispute = layout.parse_dispute_id(receipt_id)
    delivery.enqueue(bucket, store_id, dispute.receipt_id if dispute else receipt_id)


def labels_of(final: dict, entry: dict) -> list:
    """A settled visit as labelled data for fusion: one 'visit' row (proposed and final
    lines, who settled it, how long it took) and one 'event' row per event in doubt
    (fusion's evidence, its proposal and the reviewer's decision)."""
    decision = final['review']
    events = entry.get('request', {}).get('events', [])
    ids = {'store_id': final['store_id'], 'receipt_id': final['receipt_id'],
           'visit_code': final['visit_code']}
    reasons = {e.get('reason_code', '') for e in events} | ({payer.DISPUTED} if 'dispute' in entry else set())
    rows = [{'kind': 'visit', **ids, 'exit_ns': final['exit_ns'], 'reasons': sorted(reasons - {''}),
             'reviewer': decision['reviewer'], 'decided_ns': decision['decided_ns'],
             'seconds_to_settle': decision['seconds_to_settle'],
             'agrees': decision['action'] == 'confirm',
             'proposed_lines': decision['proposed_lines'], 'final_lines': final['lines'],
             'proposed_total_cents': decision['proposed_total_cents'],
             'final_total_cents': final['total_cents']}]
    for event in events:
        proposed = proposed_choice(event).document()
        decided = decision['event_decisions'].get(event['event_id'], proposed)
        rows.append({'kind': 'event', **ids,
                     **{k: event.get(k) for k in (
                         'event_id', 'reason_code', 'shelf_id', 'bin_ids', 'delta_grams',
                         'window_start_ns', 'window_end_ns', 'candidate_visits',
                         'candidate_scores', 'candidate_products')},
                     'proposed': proposed, 'decided': decided, 'agrees': decided == proposed})
    return rows


# -- reviewer figures ------------------------------------------------------------------
@dataclass(frozen=True)
class SettleFigures:
    visits: int
    median_s: Optional[float]
    p90_s: Optional[float]
    # Share of visits settled as proposed (the receipt's lines unchanged).
    agreement: Optional[float]


@dataclass(frozen=True)
class ReviewFigures:
    overall: SettleFigures
    by_reason: dict             # reason code -> SettleFigures (a visit counts for each of its reasons)
    events: int
    # Share of events whose decision is fusion's proposal.
    event_agreement: Optional[float]


def labelled_rows(bucket: Bucket) -> list:
    """Every settled visit's labelled data rows (one LIST, one GET per visit)."""
    rows = []
    for key in list(bucket.list(layout.LABELS_PREFIX)):
        data = bucket.get(key) or b''
        rows += [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return rows


def figures(rows: list) -> ReviewFigures:
    visits = [row for row in rows if row['kind'] == 'visit']
    events = [row for row in rows if row['kind'] == 'event']
    reasons = sorted({reason for row in visits for reason in row['reasons']})
    return ReviewFigures(
        _settle_figures(visits),
        {reason: _settle_figures([row for row in visits if reason in row['reasons']])
         for reason in reasons},
        len(events), _share(events))


def _settle_figures(visits: list) -> SettleFigures:
    seconds = sorted(row['seconds_to_settle'] for row in visits if row['seconds_to_settle'] is not None)
    return SettleFigures(
        len(visits), statistics.median(seconds) if seconds else None,
        seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))] if seconds else None,
        _share(visits))


def _share(rows: list) -> Optional[float]:
    return sum(row['agrees'] for row in rows) / len(rows) if rows else None


# -- reviewers -------------------------------------------------------------------------
class Reviewers:
    """The reviewers file (``reviewers.json``, mode 0600): an argon2id hash (argon2-cffi)
    and a session epoch per reviewer. A session names the epoch it was signed in with,
    so removing a reviewer or setting a new password ends their sessions at once: the
    web UI checks the file (re-read when it changes) on every request."""

    def __init__(self, path):
        self.path = Path(path)
        self._seen = None
        self._records = {}

    def _read(self) -> dict:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            try:
                self._records = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._records = {}
            self._seen = seen
        return self._records

    def _write(self, records: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix('.tmp')
        old = os.umask(0o077)
        try:
            tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
        finally:
            os.umask(old)
        os.replace(tmp, self.path)

    def names(self) -> list:
        return sorted(self._read())

    def add(self, name: str, password: str) -> None:
        """Adds a reviewer or sets a new password (which ends their sessions)."""
        if not _REVIEWER_NAME.match(name):
            raise ReviewError(f'invalid reviewer name {name!r}')
        if len(password) < 8:
            raise ReviewError('a password needs at least 8 characters')
        records = dict(self._read())
        records[name] = {'argon2': _hasher().hash(password), 'epoch': secrets.token_hex(8)}
        self._write(records)

    def remove(self, name: str) -> bool:
        records = dict(self._read())
        if records.pop(name, None) is None:
            return False
        self._write(records)
        return True

    def verify(self, name: str, password: str) -> Optional[str]:
        """The reviewer's session epoch when the password is theirs, else None (in about
        the same time for an unknown name). A PBKDF2 record of an earlier jwo is
        checked as such and replaced by an argon2id one."""
        from argon2.exceptions import InvalidHashError, VerificationError
        record = self._read().get(name)
        hasher = _hasher()
        if record is not None and 'argon2' not in record:
            if not _pbkdf2_matches(record, password):
                return None
        else:
            try:
                hasher.verify(record['argon2'] if record else _dummy_hash(), password)
            except (VerificationError, InvalidHashError):
                return None
            if record is None:
                return None
            if not hasher.check_needs_rehash(record['argon2']):
                return record['epoch']
        upgraded = {'argon2': hasher.hash(password), 'epoch': record.get('epoch') or secrets.token_hex(8)}
        self._write({**self._read(), name: upgraded})
        return upgraded['epoch']

    def epoch(self, name: str) -> Optional[str]:
        """The reviewer's current session epoch; None when there is no such reviewer."""
        record = self._read().get(name)
        return record.get('epoch') if record else None


def _hasher():
    from argon2 import PasswordHasher
    return PasswordHasher()


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Verified against for unknown names, so they take as long as known ones."""
    return _hasher().hash(secrets.token_hex(16))


def _pbkdf2_matches(record: dict, password: str) -> bool:
    expected = hashlib.pbkdf2_hmac('sha256', password.encode(), bytes.fromhex(record['salt']),
                                   int(record['iterations'])).hex()
    return hmac.compare_digest(expected, record['hash'])
