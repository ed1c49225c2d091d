"""The shopper's live running receipt: which token opens which visit's cart, and that cart.

No rclpy, no web framework. The live cart node feeds in the gates' VisitAccess (the
SHA-256 of each visit's token, core.visit_access), fusion's cart updates and the ends
of visits (an EXIT event with the visit's code, or its receipt); the web service asks
for the cart a token's hash opens. A token opens its own visit's cart and nothing
else, and dies at the visit's end.

Inputs on different topics arrive in any order: a cart update may come before its
visit's access (the cart is kept for it), an end before an access or a cart (the
visit stays closed: a late access does not bring its token back). What is decided is
decided from stamps: a visit is forgotten ``max_visit_ns`` after its first stamp, by
the newest stamp of any input (a shopper who never left does not keep a token alive).
"""
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from jwo_nodes.core.fusion.receipts import SURE
from jwo_nodes.core.visit_access import VisitAccess

COUNTER_NAMES = ('accesses', 'cart_updates', 'stale_cart_updates', 'late_inputs', 'closed_visits',
                 'expired_visits', 'live_tokens')


@dataclass(frozen=True)
class LiveLine:
    sku: str
    name: str
    quantity: int
    line_total_cents: int
    # 0..1, fusion's: how sure it is of this line (product, quantity and attribution).
    confidence: float
    # What the pieces weighed, for a product sold by weight (0 for the others).
    grams: int = 0

    @property
    def checking(self) -> bool:
        """Not yet sure (below the confidence fusion calls sure): shown as "checking"."""
        return self.confidence < SURE


@dataclass(frozen=True)
class Saving:
    """One saving on the cart: an application of a promotion (core.pricing.SavingLine)
    as the page shows it."""

    name: str
    # Saved, > 0.
    cents: int


@dataclass(frozen=True)
class LiveCart:
    """A visit's whole cart after a change (fusion's CartUpdate)."""

    visit_code: str
    # Grows by one per update of the visit.
    revision: int
    stamp_ns: int
    lines: tuple
    total_cents: int
    savings: tuple = ()

    @property
    def savings_cents(self) -> int:
        return sum(saving.cents for saving in self.savings)


@dataclass(frozen=True)
class LiveView:
    """What a token opens: its visit's newest cart (None before the first update), a
    version that grows with every change a page shows, and whether the visit is still
    in the store (a dead token's last view is for the pages already showing it)."""

    version: int
    cart: Optional[LiveCart]
    open: bool


class VisitStatus(Enum):
    OPEN = 'open'
    # Ended (exit or receipt): its token is dead, a late input for it is ignored.
    CLOSED = 'closed'


@dataclass
class _Visit:
    code: str
    first_stamp_ns: int
    status: VisitStatus = VisitStatus.OPEN
    token_sha256: bytes = b''
    cart: Optional[LiveCart] = None
    version: int = 0


class LiveCarts:
    """The live carts of the visits in the store, by token hash. A closed visit keeps
    its last cart (for the pages that showed it) until it is forgotten."""

    def __init__(self, max_visit_ns: int = 4 * 3600 * 1_000_000_000):
        if max_visit_ns <= 0:
            raise ValueError('max_visit_ns must be > 0')
        self.max_visit_ns = int(max_visit_ns)
        self.counts = {name: 0 for name in COUNTER_NAMES}
        # Visit code -> visit, in order of first sight (nearly stamp order: expiry looks
        # at the front only).
        self._visits: 'OrderedDict[str, _Visit]' = OrderedDict()
        self._by_hash = {}
        self._newest_ns = 0

    def on_access(self, access: VisitAccess) -> bool:
        """A gate's token hash for a visit (again after a redelivery: no change; a new
        one for the same visit replaces the old token). True when a page may change."""
        visit = self._visit(access.visit_code, access.stamp_ns)
        if visit.status is VisitStatus.CLOSED:
            self.counts['late_inputs'] += 1
            return False
        if visit.token_sha256 == access.token_sha256:
            return False
        self.counts['accesses'] += 1
        self._by_hash.pop(visit.token_sha256, None)
        visit.token_sha256 = access.token_sha256
        self._by_hash[access.token_sha256] = visit
        self._count_live()
        return True

    def on_cart(self, cart: LiveCart) -> bool:
        """Fusion's newest cart of a visit; a revision not newer than the one held is
        dropped. True when a page may change."""
        visit = self._visit(cart.visit_code, cart.stamp_ns)
        if visit.status is VisitStatus.CLOSED:
            self.counts['late_inputs'] += 1
            return False
        if visit.cart is not None and cart.revision <= visit.cart.revision:
            self.counts['stale_cart_updates'] += 1
            return False
        self.counts['cart_updates'] += 1
        visit.cart = cart
        visit.version += 1
        return True

    def on_end(self, visit_code: str, stamp_ns: int) -> bool:
        """The visit left (its EXIT event) or was settled (its receipt): its token dies.
        A walk-out's EXIT has no code (its receipt ends the visit). True when it was
        open."""
        if not visit_code:
            return False
        visit = self._visit(visit_code, stamp_ns)
        if visit.status is VisitStatus.CLOSED:
            return False
        visit.status = VisitStatus.CLOSED
        visit.version += 1
        self.counts['closed_visits'] += 1
        self._count_live()
        return True

    def view(self, token_sha256: bytes) -> Optional[LiveView]:
        """What the token's hash opens; None for a token never issued, replaced or
        forgotten. A dead token's view is not ``open``: show it only where it was shown.

        A dict lookup by the hash needs no constant-time comparison: its timing can only
        tell how close a guess's hash is to a stored one, and a hash does not lead back
        to a token."""
        visit = self._by_hash.get(token_sha256)
        if visit is None:
            return None
        return LiveView(visit.version, visit.cart, visit.status is VisitStatus.OPEN)

    def _visit(self, code: str, stamp_ns: int) -> _Visit:
        """The visit of a code (new ones open), after forgetting the visits that are too
        old by the newest stamp; an input stamped before that is of a visit already
        forgotten: CLOSED, not kept."""
        self._newest_ns = max(self._newest_ns, stamp_ns)
        self._expire()
        visit = self._visits.get(code)
        if visit is None:
            if stamp_ns < self._newest_ns - self.max_visit_ns:
                return _Visit(code, stamp_ns, VisitStatus.CLOSED)
            visit = self._visits[code] = _Visit(code, stamp_ns)
        return visit

    def _expire(self) -> None:
        horizon = self._newest_ns - self.max_visit_ns
        while self._visits:
            visit = next(iter(self._visits.values()))
            if visit.first_stamp_ns >= horizon:
                break
            if visit.status is VisitStatus.OPEN:
                self.counts['expired_visits'] += 1
            self._by_hash.pop(visit.token_sha256, None)
            del self._visits[visit.code]
        self._count_live()

    def _count_live(self) -> None:
        self.counts['live_tokens'] = sum(visit.status is VisitStatus.OPEN for visit in self._by_hash.values())
