"""What each hypothesis says lies where: items in each visit's cart, stray units of
other products lying on each bin, and who each track is. Copied on write (a hypothesis
branches into many), and no count ever goes below zero. Hashes are kept up to date on
each change, since the solver merges hypotheses that leave the same state."""
from types import MappingProxyType

_EMPTY = MappingProxyType({})
_MODULUS = (1 << 61) - 1


def _term(*item) -> int:
    return hash(item) % _MODULUS


class Counts:
    """Immutable counts keyed by (owner, sku): owner is a visit code for carts, a bin
    id for the ledger of strays."""
    __slots__ = ('_by_owner', '_hash')

    def __init__(self, by_owner: dict = None, hash_: int = None):
        self._by_owner = by_owner or {}
        self._hash = hash_ if hash_ is not None else sum(
            _term(owner, sku, n) for owner, items in self._by_owner.items() for sku, n in items.items()) % _MODULUS

    def of(self, owner: str):
        """sku -> count for one owner (read-only)."""
        return MappingProxyType(self._by_owner.get(owner, _EMPTY))

    def count(self, owner: str, sku: str) -> int:
        return self._by_owner.get(owner, _EMPTY).get(sku, 0)

    def added(self, owner: str, sku: str, n: int) -> 'Counts':
        """A copy with n more (n < 0: fewer, never below zero) of sku for owner."""
        items = dict(self._by_owner.get(owner, _EMPTY))
        before = items.get(sku, 0)
        left = max(0, before + n)
        hash_ = self._hash
        if before:
            hash_ -= _term(owner, sku, before)
        if left:
            items[sku] = left
            hash_ += _term(owner, sku, left)
        else:
            items.pop(sku, None)
        by_owner = dict(self._by_owner)
        if items:
            by_owner[owner] = items
        else:
            by_owner.pop(owner, None)
        return Counts(by_owner, hash_ % _MODULUS)

    def without(self, owners) -> 'Counts':
        """A copy with nothing of these owners."""
        gone = set(owners)
        return Counts({owner: items for owner, items in self._by_owner.items() if owner not in gone})

    def owners(self) -> list:
        return list(self._by_owner)

    def __eq__(self, other):
        return isinstance(other, Counts) and self._hash == other._hash and self._by_owner == other._by_owner

    def __hash__(self):
        return self._hash


class Ledger:
    """A hypothesis's state: carts per visit, strays per bin, and the visit each track
    (track id, code it carried) was decided to be."""
    __slots__ = ('carts', 'strays', 'identities', '_identities_hash')

    def __init__(self, carts: Counts = None, strays: Counts = None, identities=_EMPTY,
                 identities_hash: int = None):
        self.carts = carts or Counts()
        self.strays = strays or Counts()
        self.identities = identities
        self._identities_hash = identities_hash if identities_hash is not None else sum(
            _term(track, code) for track, code in identities.items()) % _MODULUS

    def with_cart(self, visit_code: str, sku: str, n: int) -> 'Ledger':
        return Ledger(self.carts.added(visit_code, sku, n), self.strays, self.identities, self._identities_hash)

    def with_stray(self, bin_id: str, sku: str, n: int) -> 'Ledger':
        return Ledger(self.carts, self.strays.added(bin_id, sku, n), self.identities, self._identities_hash)

    def with_identity(self, track: tuple, visit_code: str) -> 'Ledger':
        identities = dict(self.identities)
        hash_ = self._identities_hash
        if track in identities:
            hash_ -= _term(track, identities[track])
        identities[track] = visit_code
        return Ledger(self.carts, self.strays, MappingProxyType(identities),
                      (hash_ + _term(track, visit_code)) % _MODULUS)

    def without_carts(self, visit_codes) -> 'Ledger':
        return Ledger(self.carts.without(visit_codes), self.strays, self.identities, self._identities_hash)

    def keeping_identities(self, keep) -> 'Ledger':
        """A copy that remembers only the track decisions for which keep(track, code)."""
        return Ledger(self.carts, self.strays,
                      MappingProxyType({k: c for k, c in self.identities.items() if keep(k, c)}))

    def __reduce__(self):
        # A read-only view is no pickle: saved as a dict, viewed again when read back.
        return _ledger, (self.carts, self.strays, dict(self.identities), self._identities_hash)

    def __eq__(self, other):
        return (isinstance(other, Ledger) and hash(self) == hash(other) and self.carts == other.carts
                and self.strays == other.strays and self.identities == other.identities)

    def __hash__(self):
        return hash((self.carts._hash, self.strays._hash, self._identities_hash))


def _ledger(carts: Counts, strays: Counts, identities: dict, identities_hash: int) -> Ledger:
    return Ledger(carts, strays, MappingProxyType(identities), identities_hash)
