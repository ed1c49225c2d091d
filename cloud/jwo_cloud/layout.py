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
"""


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


PENDING_PREFIX = 'review/pending/'
QUEUE_INDEX = 'review/queue.json'
LABELS_PREFIX = 'review/labels/'
RECEIPTS = 'stores/<store_id>/receipts/'
CLIPS = 'stores/<store_id>/clips/'
FINAL = 'stores/<store_id>/final/'


def parse_pending_key(key: str):
    """(store_id, receipt_id) of a review queue key, None for anything else."""
    parts = key.split('/')
    if len(parts) != 4 or parts[:2] != ['review', 'pending'] or not parts[3].endswith('.json'):
        return None
    return parts[2], parts[3][:-len('.json')]
