"""Store operations from the shelf weights, for the staff view: stock per bin, low-stock
alerts, items put back on the wrong bin, shelves whose sensors went silent, and where a
product is. Pure: plain values in (from jwo/WeightChange and jwo/ShelfStatus), no rclpy.

Each change on a bin is read by the products its weight fits best
(jwo_nodes.core.fusion.evidence.product_fits): the bin's own product moves its stock;
another product put back on it is a stray to fix before the next shopper takes it (until
a change of that weight is taken off the bin again). Two products of one weight (the
yogurts) cannot be told apart this way: fusion, which also sees who stood there, sends
such a visit to review.
"""
from collections import deque
from dataclasses import dataclass
from enum import Enum

from jwo_nodes.core.config import StoreConfig
from jwo_nodes.core.fusion.evidence import product_fits

# Event ids remembered against a durable topic's re-sent history (its depth, per shelf).
SEEN_KEPT = 4096


class StockLevel(Enum):
    OK = 'ok'
    LOW = 'low'          # at or under the product's low_stock_units: restock soon
    EMPTY = 'empty'      # restock now


@dataclass(frozen=True)
class Stray:
    """Units of another product lying on a bin."""
    sku: str
    name: str
    units: int


@dataclass(frozen=True)
class BinStock:
    bin_id: str
    shelf_id: str
    sku: str
    name: str
    units: int
    level: StockLevel
    strays: tuple        # Stray


@dataclass(frozen=True)
class ProductPlace:
    """Where a product is: its bins, and where a shopper stands to reach each."""
    sku: str
    name: str
    bins: tuple          # (bin_id, shelf_id, x, y)


class StoreOps:
    """Stock and strays per bin from the weight changes; stale shelves from their
    heartbeats' arrival (wall clock, as fusion's stale_after_s)."""

    def __init__(self, store: StoreConfig, stale_after_ns: int, started_wall_ns: int):
        self.store = store
        self._stale_after_ns = stale_after_ns
        self._units = {bin_id: b.initial_units for bin_id, b in store.bins.items()}
        self._strays = {bin_id: {} for bin_id in store.bins}      # bin -> sku -> units
        self._heard = dict.fromkeys(store.shelves, started_wall_ns)
        self._seen = set()
        self._seen_order = deque()
        self.unexplained = 0      # changes no product explains (or a stray nobody put there)

    def on_weight_change(self, event_id: str, bin_ids, deltas, noise_grams: float) -> None:
        if event_id in self._seen:
            return
        self._seen.add(event_id)
        self._seen_order.append(event_id)
        if len(self._seen_order) > SEEN_KEPT:
            self._seen.discard(self._seen_order.popleft())
        for bin_id, delta in zip(bin_ids, deltas):
            if bin_id in self._units:
                self._apply(bin_id, delta, noise_grams)

    def _apply(self, bin_id: str, delta: float, noise_grams: float) -> None:
        own = self.store.bins[bin_id].sku
        fits = product_fits(self.store, abs(delta), noise_grams)
        strays = self._strays[bin_id]
        # A take of a stray's weight takes the stray first (it lies at the front).
        fit = next((f for f in fits if delta < 0 and f.sku in strays), fits[0] if fits else None)
        if fit is None:
            self.unexplained += 1
        elif fit.sku == own:
            self._units[bin_id] = max(0, self._units[bin_id] + (fit.quantity if delta > 0 else -fit.quantity))
        elif delta > 0:
            strays[fit.sku] = strays.get(fit.sku, 0) + fit.quantity
        elif fit.sku in strays:
            left = strays.pop(fit.sku) - fit.quantity
            if left > 0:
                strays[fit.sku] = left
        else:
            self.unexplained += 1

    def on_shelf_status(self, shelf_id: str, wall_ns: int) -> None:
        if shelf_id in self._heard:
            self._heard[shelf_id] = wall_ns

    def stale_shelves(self, now_wall_ns: int) -> list:
        """The shelves not heard from for stale_after (since the start, for one never heard)."""
        return [shelf_id for shelf_id, heard in self._heard.items() if now_wall_ns - heard > self._stale_after_ns]

    def stock(self) -> list:
        found = []
        for bin_id, units in self._units.items():
            b = self.store.bins[bin_id]
            product = self.store.products[b.sku]
            level = (StockLevel.EMPTY if units == 0 else
                     StockLevel.LOW if product.low_stock_units is not None and units <= product.low_stock_units
                     else StockLevel.OK)
            strays = tuple(Stray(sku, self.store.products[sku].name, n)
                           for sku, n in sorted(self._strays[bin_id].items()))
            found.append(BinStock(bin_id, b.shelf_id, b.sku, product.name, units, level, strays))
        return found


def locate(store: StoreConfig, query: str) -> list:
    """The products whose name or SKU holds ``query`` (any case), with their bins."""
    wanted = query.strip().casefold()
    if not wanted:
        return []
    places = []
    for sku, product in store.products.items():
        if wanted in product.name.casefold() or wanted in sku.casefold():
            bins = tuple((b.id, b.shelf_id, b.x, b.y) for b in store.bins.values() if b.sku == sku)
            places.append(ProductPlace(sku, product.name, bins))
    return places
