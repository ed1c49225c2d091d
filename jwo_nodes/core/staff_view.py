"""The staff view's state: the open ID-check requests an associate must answer, and the
staff PIN. Pure: plain values in (from jwo/IdCheckRequest, jwo/IdCheckDecision and
jwo/Receipt), no rclpy, no web."""
import hashlib
import hmac
import os
from collections import deque
from dataclasses import dataclass

# Visits whose requests are settled, remembered so that a request re-sent from a
# durable history after its decision or receipt does not come back (more than the
# history's depth, jwo_nodes.core.fusion.types.RESENT_DEPTH).
SETTLED_KEPT = 4096
# scrypt's cost for the PIN: slow enough to make guessing a stolen hash dear, quick at
# start-up and per login attempt (about 16 MB, tens of ms).
_SCRYPT = {'n': 2 ** 14, 'r': 8, 'p': 1}


@dataclass(frozen=True)
class IdCheckItem:
    """One open request: an associate must check the ID of the visit's shopper."""
    visit_code: str
    sku: str
    name: str
    # Where the shopper took it (the change's shelf), and when (its end stamp).
    shelf_id: str
    stamp_ns: int

    @property
    def key(self) -> tuple:
        return self.visit_code, self.sku


class IdCheckBoard:
    """The open requests, oldest first. ``version`` grows at every change (the web
    streams wait on it)."""

    def __init__(self):
        self._open = {}
        self._settled = deque(maxlen=SETTLED_KEPT)   # (visit, sku) decided, or (visit, None) ended
        self.version = 0

    def on_request(self, item: IdCheckItem) -> None:
        if item.key in self._open or item.key in self._settled or (item.visit_code, None) in self._settled:
            return
        self._open[item.key] = item
        self.version += 1

    def on_decision(self, visit_code: str, sku: str) -> None:
        """Any associate's decision (this view's, or another's) closes the request."""
        self._settle((visit_code, sku), lambda key: key == (visit_code, sku))

    def on_visit_end(self, visit_code: str) -> None:
        """The visit's receipt is out: its requests are moot (the receipt says what was verified)."""
        self._settle((visit_code, None), lambda key: key[0] == visit_code)

    def _settle(self, settled: tuple, closes) -> None:
        self._settled.append(settled)
        closed = [key for key in self._open if closes(key)]
        for key in closed:
            del self._open[key]
        if closed:
            self.version += 1

    def is_open(self, visit_code: str, sku: str) -> bool:
        return (visit_code, sku) in self._open

    def open_checks(self) -> list:
        return sorted(self._open.values(), key=lambda item: (item.stamp_ns, item.visit_code, item.sku))


class StaffPin:
    """The staff PIN (or password), kept only as a salted scrypt hash: the text read
    from its file is not kept, and a guess is compared in constant time."""

    def __init__(self, pin: str):
        if not pin:
            raise ValueError('the staff PIN is empty')
        self._salt = os.urandom(16)
        self._digest = self._hash(pin)

    def _hash(self, text: str) -> bytes:
        return hashlib.scrypt(text.encode(), salt=self._salt, **_SCRYPT)

    def matches(self, attempt: str) -> bool:
        return hmac.compare_digest(self._digest, self._hash(attempt))


class LoginThrottle:
    """At most ``max_failures`` wrong PINs per ``window_ns`` (a PIN is short): then every
    attempt is refused until the oldest failure leaves the window."""

    def __init__(self, max_failures: int, window_ns: int):
        self._max_failures = max_failures
        self._window_ns = window_ns
        self._failures = deque()

    def allowed(self, now_ns: int) -> bool:
        while self._failures and self._failures[0] <= now_ns - self._window_ns:
            self._failures.popleft()
        return len(self._failures) < self._max_failures

    def failed(self, now_ns: int) -> None:
        self._failures.append(now_ns)
