"""The key to a visit's live cart: a secret token per visit, issued by the gate at ENTRY.

No rclpy here. The gate hands the raw token to the shopper (what the shopper's app
would receive; here a handoff file, see below) and publishes only its SHA-256 with the
visit code (jwo/VisitAccess). The live cart web service knows a visit by that hash, so
nothing on the bus, in a log or in a state file opens a cart.

Handoff file: ``<folder>/access-<gate_id>.jsonl``, created readable by its owner only
(0600), one JSON object per line, appended at each ENTRY::

    {"gate_id": "G1", "visit_code": "v-...", "stamp_ns": 1700000000000000000, "token": "..."}

It stands in for the channel to the shopper's app: `jwo demo` reads it to print the
first visit's live-cart link.
"""
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from jwo_common.visit_token import token_hash

# 256 random bits: a token cannot be guessed, so its plain SHA-256 may be published.
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh secret token, URL-safe (it is the last part of the live-cart link)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class VisitAccess:
    """What the gate publishes of a visit's token (jwo/VisitAccess): its hash."""

    gate_id: str
    visit_code: str
    # The ENTRY's stamp.
    stamp_ns: int
    token_sha256: bytes


@dataclass(frozen=True)
class AccessGrant:
    """A token issued at ENTRY: the raw token for the shopper and what is published of
    it. The token is left out of repr so it cannot reach a log."""

    access: VisitAccess
    token: str = field(repr=False)


def grant(gate_id: str, visit_code: str, stamp_ns: int) -> AccessGrant:
    token = new_token()
    return AccessGrant(VisitAccess(gate_id, visit_code, stamp_ns, token_hash(token)), token)


def handoff_path(folder, gate_id: str) -> Path:
    return Path(folder) / f'access-{gate_id}.jsonl'


def append_handoff(folder, issued: AccessGrant) -> None:
    """Appends the grant to its gate's handoff file (created 0600, flushed to the disk
    before the visit's access is published: a link the demo prints is never lost).
    OSError when it cannot."""
    access = issued.access
    line = json.dumps({'gate_id': access.gate_id, 'visit_code': access.visit_code,
                       'stamp_ns': access.stamp_ns, 'token': issued.token}) + '\n'
    fd = os.open(handoff_path(folder, access.gate_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode('utf-8'))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_handoff(path) -> list:
    """The AccessGrants in a handoff file, in the order issued; [] when there is none
    yet. A last line still being written is left for the next read."""
    try:
        text = Path(path).read_text(encoding='utf-8')
    except FileNotFoundError:
        return []
    grants = []
    for line in text.splitlines(keepends=True):
        if not line.endswith('\n'):
            break
        item = json.loads(line)
        grants.append(AccessGrant(VisitAccess(item['gate_id'], item['visit_code'], item['stamp_ns'],
                                              token_hash(item['token'])), item['token']))
    return grants
