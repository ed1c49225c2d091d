"""Where things are in the bucket (documented in cloud/README.md). One function per
kind of object, so the ingest, the review and the tools cannot disagree.

    stores/<store_id>/receipts/<receipt_id>.json   a receipt as the store sent it
    stores/<store_id>/clips/<clip_id>              a clip (bytes; sha256 in metadata)
    stores/<store_id>/final/<receipt_id>.json      the settled receipt after review,
                                                   created once (If-None-Match: *)
    stores/<store_id>/catalogue.json               the store's products and floor plan
    review/pending/<store_id>/<receipt_id>.json    the review queue: one entry a visit
    review/queue.json                              the queue's index (review_queue.py)
    review/labels/<store_id>/<receipt_id>.jsonl    a settled visit's decision as labelled
                                                   data, one JSON line per event
    review/settled/<store_id>/<receipt_id>.json    a settled visit's queue entry (its
                                                   evidence, for a dispute)
    stores/<store_id>/access/<receipt_id>.json     the hash of the visit's token
    stores/<store_id>/evidence/<receipt_id>.json   the events behind a FINAL receipt
                                                   (for a dispute of it)
    access/<token_sha256 hex>.json                 which receipt a token opens
    delivery/pending/<store_id>/<receipt_id>/<version>.json   a receipt version to deliver
    delivery/sent/<store_id>/<receipt_id>/<version>.json      ... delivered

A dispute of a visit's receipt is reviewed as a visit of its own, ``dispute_id``: its
``receipts/`` object is the receipt disputed, its final receipt the visit's next version.
"""
import re
from dataclasses import dataclass
from typing import Optional


def receipt_key(store_id: str, receipt_id: str) -> str:
    return f'stores/{store_id}/receipts/{receipt_id}.json'


def clip_key(store_id: str, clip_id: str) -> str:
    return f'stores/{store_id}/clips/{clip_id}'


def final_key(store_id: str, receipt_id: str) -> str:
    return f'stores/{store_id}/final/{receipt_id}.json'


def pending_key(store_id: str, receipt_id: str) -> str:
    return f'review/pending/{store_id}/{receipt_id}.json'


def catalogue_key(store_id: str) -> str:
    return f'stores/{store_id}/catalogue.json'


def labels_key(store_id: str, receipt_id: str) -> str:
    return f'review/labels/{store_id}/{receipt_id}.jsonl'


def settled_entry_key(store_id: str, receipt_id: str) -> str:
    return f'review/settled/{store_id}/{receipt_id}.json'


def visit_access_key(store_id: str, receipt_id: str) -> str:
    return f'stores/{store_id}/access/{receipt_id}.json'


def evidence_key(store_id: str, receipt_id: str) -> str:
    return f'stores/{store_id}/evidence/{receipt_id}.json'


def access_key(token_sha256_hex: str) -> str:
    return f'access/{token_sha256_hex}.json'


def delivery_pending_key(store_id: str, receipt_id: str, version: int) -> str:
    return f'{DELIVERY_PENDING}{store_id}/{receipt_id}/{version:06d}.json'


def delivery_sent_key(store_id: str, receipt_id: str, version: int) -> str:
    return f'delivery/sent/{store_id}/{receipt_id}/{version:06d}.json'


# A dispute's id is its receipt's with a suffix no store's id can end with (the ingest
# refuses it): the console, the queue and the decision take it as any visit.
_DISPUTE = re.compile(r'^(.+)\.dispute([1-9][0-9]*)$')


def dispute_id(receipt_id: str, number: int) -> str:
    return f'{receipt_id}.dispute{number}'


@dataclass(frozen=True)
class DisputeOf:
    receipt_id: str     # the visit's receipt (as the store named it)
    number: int         # 1 for its first dispute


def parse_dispute_id(receipt_id: str) -> Optional[DisputeOf]:
    match = _DISPUTE.match(receipt_id)
    return DisputeOf(match.group(1), int(match.group(2))) if match else None


PENDING_PREFIX = 'review/pending/'
QUEUE_INDEX = 'review/queue.json'
LABELS_PREFIX = 'review/labels/'
RECEIPTS = 'stores/<store_id>/receipts/'
CLIPS = 'stores/<store_id>/clips/'
FINAL = 'stores/<store_id>/final/'
DELIVERY_PENDING = 'delivery/pending/'


def parse_pending_key(key: str):
    """(store_id, receipt_id) of a review queue key, None for anything else."""
    parts = key.split('/')
    if len(parts) != 4 or parts[:2] != ['review', 'pending'] or not parts[3].endswith('.json'):
        return None
    return parts[2], parts[3][:-len('.json')]
