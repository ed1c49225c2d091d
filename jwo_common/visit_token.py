"""A visit's secret token (issued by the gate at ENTRY, see jwo_nodes/core/visit_access.py)
is known to the edge and the cloud only by its SHA-256: the live cart and the cloud's
receipt page look a visit up by it, and it is all that travels."""
import hashlib


def token_hash(token: str) -> bytes:
    """SHA-256 of a token: what is published and what a visit is looked up by."""
    return hashlib.sha256(token.encode('utf-8')).digest()
