"""Where things are in the bucket (documented in cloud/README.md). One function per
kind of object, so the ingest, the review and the tools cannot disagree.

    stores/<store_id>/receipts/<receipt_id>.json   a receipt as the store sent it
    stores/<store_id>/clips/<clip_id>              a clip (bytes; sha256 in metadata)
    stores/<store_id>/final/<receipt_id>.json      the settled receipt after review,
                                                   created once (If-None-Match: *)
    review/pending/<store_id>/<receipt_id>.json    the review queue: one entry a visit
"""


def receipt_key(store_id: str, receipt_id: str) -> str:
    return f'stores/{store_id}/receipts/{receipt_id}.json'


def clip_key(store_id: str, clip_id: str) -> str:
    return f'stores/{store_id}/clips/{clip_id}'


def final_key(store_id: str, receipt_id: str) -> str:
    return f'stores/{store_id}/final/{receipt_id}.json'


def pending_key(store_id: str, receipt_id: str) -> str:
    return f'review/pending/{store_id}/{receipt_id}.json'


PENDING_PREFIX = 'review/pending/'
RECEIPTS = 'stores/<store_id>/receipts/'
CLIPS = 'stores/<store_id>/clips/'
FINAL = 'stores/<store_id>/final/'


def parse_pending_key(key: str):
    """(store_id, receipt_id) of a review queue key, None for anything else."""
    parts = key.split('/')
    if len(parts) != 4 or parts[:2] != ['review', 'pending'] or not parts[3].endswith('.json'):
        return None
    return parts[2], parts[3][:-len('.json')]
