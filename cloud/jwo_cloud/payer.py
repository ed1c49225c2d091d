"""A visit's receipt as the shopper who paid sees it: found by the hash of the token the
gate handed them, its versions, and their disputes. No web framework here.

**Found by the token's hash.** The ingest keeps ``access/<sha256 hex>.json`` (which
receipt a token opens) and ``stores/<s>/access/<receipt_id>.json`` (the hash of a
receipt's token, to address its deliveries). The token itself is never stored: the
receipt page hashes what the shopper's link holds and looks that up.

**Versions.** A visit's receipt is final in rounds: round 0 is the store's receipt (final
at the ingest, or once a reviewer settled it); each dispute is a round after it,
reviewed as a visit of its own (``layout.dispute_id``) whose receipt is the version
disputed and whose settled receipt is the next version. Version n is round n-1's final
receipt. Only the last round can be open, so a visit is disputed again only once the
earlier dispute is settled, at most ``MAX_DISPUTES`` times.
"""
import json
from dataclasses import dataclass
from typing import Optional

from jwo_cloud import layout, review_queue, wire
from jwo_cloud.bucket import Bucket
from jwo_common.visit_token import token_hash

DISPUTED = 'disputed'
MAX_DISPUTES = 5
MAX_DISPUTE_TEXT = 500
# What of a final receipt its payer gets (the reviewers' notes and names stay inside).
PUBLIC_FIELDS = ('store_id', 'entry_ns', 'exit_ns', 'lines', 'savings', 'savings_cents',
                 'subtotal_cents', 'tax_cents', 'total_cents', 'currency')
PUBLIC_LINE_FIELDS = ('sku', 'name', 'quantity', 'unit_price_cents', 'line_total_cents',
                      'sold_by_weight', 'grams')


class DisputeError(Exception):
    pass


def token_sha256(token: str) -> str:
    """The hex SHA-256 of a token, as the gate hashes it."""
    return token_hash(token).hex()


@dataclass(frozen=True)
class Round:
    receipt_id: str             # the store's receipt id (round 0) or a dispute id
    receipt: Optional[dict]     # what the round reviews: the store's receipt, the version disputed
    final: Optional[dict]       # the final receipt the round came to (None while open)


@dataclass(frozen=True)
class Version:
    number: int                 # 1 for the first final receipt
    receipt: dict


@dataclass(frozen=True)
class PayerVisit:
    store_id: str
    receipt_id: str
    token_sha256: str           # hex; '' until the store sent it
    rounds: tuple               # of Round, round 0 first
    # The last round's queue entry exists (False while it is settled, or a dispute's
    # was cut short before it was queued).
    queued: bool

    @property
    def current(self) -> Optional[Version]:
        """The newest final receipt."""
        for number in range(len(self.rounds), 0, -1):
            final = self.rounds[number - 1].final
            if final is not None:
                return Version(number, final)
        return None

    @property
    def in_review(self) -> bool:
        return self.rounds[-1].final is None

    @property
    def shown(self) -> dict:
        """What the page shows: the newest final receipt, else the store's receipt."""
        current = self.current
        return current.receipt if current else self.rounds[0].receipt


def public_receipt(receipt_id: str, version: Version) -> dict:
    """A final receipt as its payer gets it (the page, a delivery)."""
    doc = version.receipt
    return {**{k: doc.get(k) for k in PUBLIC_FIELDS}, 'receipt_id': receipt_id, 'status': 'FINAL',
            'version': version.number,
            'lines': [{k: line.get(k) for k in PUBLIC_LINE_FIELDS} for line in doc.get('lines', [])],
            'savings': [{'name': s.get('name', ''), 'cents': s['cents']} for s in doc.get('savings', [])]}


def load(bucket: Bucket, store_id: str, receipt_id: str) -> Optional[PayerVisit]:
    """The visit of a store's receipt id, None when its receipt has not arrived."""
    receipt = bucket.get_json(layout.receipt_key(store_id, receipt_id))
    if receipt is None:
        return None
    final = bucket.get_json(layout.final_key(store_id, receipt_id))
    rounds = [Round(receipt_id, receipt, final or (receipt if receipt.get('status') == 'FINAL' else None))]
    for number in range(1, MAX_DISPUTES + 1):
        dispute = layout.dispute_id(receipt_id, number)
        disputed = bucket.get_json(layout.receipt_key(store_id, dispute))
        if disputed is None:
            break
        rounds.append(Round(dispute, disputed, bucket.get_json(layout.final_key(store_id, dispute))))
    access = bucket.get_json(layout.visit_access_key(store_id, receipt_id)) or {}
    last = rounds[-1]
    queued = last.final is None and bucket.head(layout.pending_key(store_id, last.receipt_id)) is not None
    return PayerVisit(store_id, receipt_id, access.get('token_sha256', ''), tuple(rounds), queued)


def find(bucket: Bucket, token: str) -> Optional[PayerVisit]:
    """The visit a shopper's token opens; None for a token no visit has."""
    where = bucket.get_json(layout.access_key(token_sha256(token)))
    return load(bucket, where['store_id'], where['receipt_id']) if where else None


def link(bucket: Bucket, store_id: str, receipt_id: str, token_hex: str) -> bool:
    """Records that the token with this hash opens this receipt (the ingest, from the
    store's access item; repeatable). False when the hash already opens another one."""
    where = {'store_id': store_id, 'receipt_id': receipt_id}
    key = layout.access_key(token_hex)
    if not bucket.put(key, _json(where), if_none_match=True) and bucket.get_json(key) != where:
        return False
    bucket.put(layout.visit_access_key(store_id, receipt_id), _json({'token_sha256': token_hex}))
    return True


def open_dispute(bucket: Bucket, visit: PayerVisit, sku: str, text: str, now_ns: int) -> str:
    """The payer disputes a line of the newest final receipt: a new round goes into the
    review queue, with the reason ``disputed`` naming the line and the evidence the
    cloud holds. Returns the dispute's id; DisputeError when it cannot be disputed now."""
    current = visit.current
    if visit.in_review or current is None:
        raise DisputeError('This receipt is being checked: it can be disputed once it is final.')
    line = next((line for line in current.receipt.get('lines', []) if line['sku'] == sku), None)
    if line is None:
        raise DisputeError('There is no such line on the receipt.')
    number = len(visit.rounds)
    dispute = layout.dispute_id(visit.receipt_id, number)
    if number > MAX_DISPUTES or not wire.is_safe_id(dispute):
        raise DisputeError('This receipt cannot be disputed again here: please ask the store.')
    text = ' '.join(text.split())[:MAX_DISPUTE_TEXT]
    disputed = {k: v for k, v in current.receipt.items() if k not in ('review', 'uplink')}
    disputed.update(
        receipt_id=dispute, status='NEEDS_REVIEW',
        reasons=[{'code': DISPUTED, 'event_id': '',
                  'detail': f'{line["name"]} ({sku}) x{line["quantity"]}' + (f': "{text}"' if text else '')}],
        dispute={'receipt_id': visit.receipt_id, 'number': number, 'version': current.number,
                 'sku': sku, 'text': text, 'disputed_ns': now_ns})
    if not bucket.put(layout.receipt_key(visit.store_id, dispute), _json(disputed), if_none_match=True):
        raise DisputeError('This receipt is being checked: it can be disputed once it is final.')
    queue_dispute(bucket, visit.store_id, visit.rounds[-1], Round(dispute, disputed, None), now_ns)
    return dispute


def queue_dispute(bucket: Bucket, store_id: str, before: Round, dispute: Round, now_ns: int) -> None:
    """The dispute's queue entry and its row in the queue's index (repeatable: a dispute
    cut short between its receipt and its entry is queued when its page is next opened).
    The evidence is the round before's: its events in doubt (clips, tracks,
    candidates), each showing what that round decided, so the reviewer starts from the
    receipt disputed. A receipt FINAL from the store was never reviewed: its events
    are the ones the store sent with it (no clips), each showing fusion's proposal."""
    settled = bucket.get_json(layout.settled_entry_key(store_id, before.receipt_id))
    request = (settled.get('request') if settled
               else bucket.get_json(layout.evidence_key(store_id, before.receipt_id))) or {}
    decided = ((before.final or {}).get('review') or {}).get('event_decisions', {})
    events = [{**event, 'decided': decided[event['event_id']]} if event['event_id'] in decided else event
              for event in request.get('events', [])]
    receipt = dispute.receipt
    entry = {'store_id': store_id, 'receipt_id': dispute.receipt_id, 'visit_code': receipt.get('visit_code', ''),
             'receipt_key': layout.receipt_key(store_id, dispute.receipt_id), 'queued_ns': now_ns,
             'dispute': receipt['dispute'],
             'request': {'receipt_id': dispute.receipt_id, 'store_id': store_id,
                         'visit_code': receipt.get('visit_code', ''), 'stamp_ns': receipt.get('exit_ns', 0),
                         'events': events}}
    bucket.put(layout.pending_key(store_id, dispute.receipt_id), _json(entry), if_none_match=True)
    review_queue.enqueue(bucket, review_queue.entry_of(entry, receipt))


def repair(bucket: Bucket, visit: PayerVisit, now_ns: int) -> None:
    """Queues a dispute that was cut short before its queue entry was written."""
    if len(visit.rounds) > 1 and visit.in_review and not visit.queued:
        queue_dispute(bucket, visit.store_id, visit.rounds[-2], visit.rounds[-1], now_ns)


def _json(document) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True).encode()
