"""The pricing engine: a cart, the store's catalogue and promotions, and a stamp give the
lines, the savings and the totals. The live cart and the receipt are both priced here,
so they agree. No rclpy.

A cart maps each SKU to units, or to grams for a product sold by weight
(``Product.sold_by_weight``: loose fruit, bulk bins, priced from the weight delta).

Rounding, always half up to the cent on integers (jwo_common.money):
* a weighed line costs grams x price per kg / 1000, rounded once per line;
* a percentage off saves percent x the price it covers / 100, rounded once per
  application: all the units of one SKU it covers together, or one weighed line;
* tax is on the subtotal after savings, rounded once per cart.
Multi-buys, fixed prices and meal deals are whole cents and round nothing.

Promotions: a unit (or a weighed line) gets at most one promotion, and an application
that would not lower the price is never made. Of every way to apply the promotions open
at the stamp (time windows in the store's local time), the shopper gets the one that
saves most: an exact search over the units in multi-buys, fixed prices and meal deals,
each SKU's leftover units taking the largest percentage off open to it. Among equal
savings: fewer applications, then the first found in a fixed order (promotions as listed
in the config, units dearest first, then by SKU), so the same cart and stamp always
give the same receipt. The search is bounded (MAX_EXACT_UNITS, SEARCH_LIMIT); past the
bound a greedy choice is taken instead (the dearest units into the bundle that saves
most, repeated, kept only if it beats the percentages off alone) and
``PricedCart.best_proven`` says so.
"""
import itertools
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Mapping, Optional
from zoneinfo import ZoneInfo

from jwo_common import money
from jwo_nodes.core.config import (MealDeal, MultiBuy, PercentOff, Product, Promotion, PromotionKind,
                                   StoreConfig, TimeWindow)

# The exact search runs on carts with at most this many units in multi-buys, fixed
# prices and meal deals (a store visit's basket; it also bounds the recursion depth) ...
MAX_EXACT_UNITS = 150
# ... and gives up after looking at this many candidate bundles (about a quarter of a
# second on a 2-core machine of 2026).
SEARCH_LIMIT = 20000


class Measure(Enum):
    """What a line's quantity counts."""
    UNITS = 'units'
    GRAMS = 'grams'


@dataclass(frozen=True)
class PricedLine:
    sku: str
    name: str
    # Units, or grams for a product sold by weight.
    quantity: int
    measure: Measure
    # Per unit, or per kilogram for a product sold by weight.
    unit_price_cents: int
    # quantity at unit_price_cents, before savings.
    line_total_cents: int
    age_restricted: bool


@dataclass(frozen=True)
class UsedItem:
    """What one promotion application took from one SKU."""
    sku: str
    # Units, or grams for a product sold by weight.
    quantity: int


@dataclass(frozen=True)
class SavingLine:
    """One application of one promotion, as the receipt shows it."""
    promotion_id: str
    name: str
    kind: PromotionKind
    # By SKU.
    used: tuple
    # Saved, always > 0.
    cents: int


@dataclass(frozen=True)
class PricedCart:
    # By SKU.
    lines: tuple
    # In the order of the promotions in the config.
    savings: tuple
    # The lines' totals, before savings.
    gross_cents: int
    savings_cents: int
    # gross_cents - savings_cents: what is taxed.
    subtotal_cents: int
    tax_cents: int
    # subtotal_cents + tax_cents.
    total_cents: int
    # False when the cart was past the exact search's bound and a greedy choice was taken.
    best_proven: bool


def price_cart(store: StoreConfig, cart: Mapping[str, int], stamp_ns: int) -> PricedCart:
    """Prices ``cart`` ({sku: units, or grams for a product sold by weight}) with the
    promotions open at ``stamp_ns`` (ns since the epoch, UTC). Raises ValueError on an
    unknown SKU or a negative or non-integer quantity."""
    for sku, quantity in cart.items():
        if sku not in store.products:
            raise ValueError(f'unknown SKU {sku!r}')
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise ValueError(f'{sku}: quantity must be a whole number >= 0, got {quantity!r}')
    held = {sku: cart[sku] for sku in sorted(cart) if cart[sku] > 0}
    lines = tuple(_line(store.products[sku], quantity) for sku, quantity in held.items())
    open_now = _open_promotions(store, stamp_ns)
    percent_of = _best_percent_off(open_now, held)
    search = _Search(store, held, [p for p in open_now if not isinstance(p, PercentOff)], percent_of)
    outcome = search.run()
    left = dict(held)
    for bundle in outcome.plan.bundles:
        for sku, units in zip(search.pool, bundle.take):
            left[sku] -= units
    savings = [_bundle_saving(bundle, search.pool) for bundle in outcome.plan.bundles]
    for sku, quantity in left.items():
        cents = _percent_off_cents(store.products[sku], quantity, percent_of.get(sku))
        if cents > 0:
            promotion = percent_of[sku]
            savings.append(SavingLine(promotion.id, promotion.name, promotion.kind, (UsedItem(sku, quantity),),
                                      cents))
    order = {promotion.id: i for i, promotion in enumerate(store.promotions)}
    savings.sort(key=lambda line: (order[line.promotion_id], [(u.sku, u.quantity) for u in line.used]))
    gross = sum(line.line_total_cents for line in lines)
    saved = sum(line.cents for line in savings)
    subtotal = gross - saved
    tax = money.tax_cents(subtotal, store.tax_rate_bp)
    return PricedCart(lines=lines, savings=tuple(savings), gross_cents=gross, savings_cents=saved,
                      subtotal_cents=subtotal, tax_cents=tax, total_cents=subtotal + tax,
                      best_proven=outcome.best_proven)


def _is_open(window: Optional[TimeWindow], local: datetime) -> bool:
    """Whether a promotion with this window runs at a local time of the store."""
    if window is None:
        return True
    minute = local.hour * 60 + local.minute
    today, yesterday = local.weekday(), (local.weekday() - 1) % 7
    if window.from_minute < window.until_minute:
        return today in window.days and window.from_minute <= minute < window.until_minute
    # Past midnight: the early hours belong to the window that started the day before.
    return ((today in window.days and minute >= window.from_minute)
            or (yesterday in window.days and minute < window.until_minute))


def _open_promotions(store: StoreConfig, stamp_ns: int) -> list:
    if all(promotion.window is None for promotion in store.promotions):
        return list(store.promotions)
    # Whole seconds are enough for HH:MM windows; flooring keeps a stamp before a
    # boundary before it.
    local = datetime.fromtimestamp(stamp_ns // 1_000_000_000, ZoneInfo(store.timezone))
    return [promotion for promotion in store.promotions if _is_open(promotion.window, local)]


def _line(product: Product, quantity: int) -> PricedLine:
    by_weight = product.sold_by_weight
    return PricedLine(product.sku, product.name, quantity, Measure.GRAMS if by_weight else Measure.UNITS,
                      product.price_per_kg_cents if by_weight else product.price_cents,
                      _worth(product, quantity), product.age_restricted)


def _worth(product: Product, quantity: int) -> int:
    """The full price of ``quantity`` (units, or grams) of a product."""
    if product.sold_by_weight:
        return money.weighed_price_cents(quantity, product.price_per_kg_cents)
    return quantity * product.price_cents


def _best_percent_off(promotions: list, held: dict) -> dict:
    """{sku: the largest percentage off open to it (the first listed of equals)}."""
    best = {}
    for promotion in promotions:
        if isinstance(promotion, PercentOff):
            for sku in promotion.skus:
                if sku in held and (sku not in best or promotion.percent > best[sku].percent):
                    best[sku] = promotion
    return best


def _percent_off_cents(product: Product, quantity: int, promotion: Optional[PercentOff]) -> int:
    """What a percentage off saves on ``quantity`` of a product: one application."""
    if promotion is None or quantity == 0:
        return 0
    return money.percent_of_cents(_worth(product, quantity), promotion.percent)


@dataclass(frozen=True)
class _Bundle:
    """One application of a multi-buy, fixed price or meal deal."""
    promotion: Promotion
    # Units taken of each SKU of the search's pool.
    take: tuple
    cents: int


@dataclass(frozen=True)
class _Plan:
    # Saved by the bundles and by the percentages off on what they leave.
    cents: int
    bundles: tuple

    def beats(self, other: '_Plan') -> bool:
        return (self.cents, -len(self.bundles)) > (other.cents, -len(other.bundles))


@dataclass(frozen=True)
class _Outcome:
    plan: _Plan
    # False when the search hit its bound and the plan is a greedy choice.
    best_proven: bool


class _SearchTooLarge(Exception):
    pass


class _Search:
    """The best set of bundles for the units of a cart that bundle promotions take."""

    def __init__(self, store: StoreConfig, held: dict, bundle_promotions: list, percent_of: dict):
        self.products = store.products
        self.promotions = bundle_promotions
        wanted = {sku for promotion in bundle_promotions for sku in promotion.skus}
        # Dearest first, so a multi-buy's free units are the last it takes.
        self.pool = sorted((sku for sku in held if sku in wanted and not self.products[sku].sold_by_weight),
                           key=lambda sku: (-self.products[sku].price_cents, sku))
        self.prices = [self.products[sku].price_cents for sku in self.pool]
        self.start = tuple(held[sku] for sku in self.pool)
        self.percent_of = percent_of
        self.looked_at = 0
        self.memo = {}

    def run(self) -> _Outcome:
        if sum(self.start) <= MAX_EXACT_UNITS:
            try:
                return _Outcome(self._best(0, self.start), best_proven=True)
            except _SearchTooLarge:
                pass
        greedy = self._greedy()
        alone = _Plan(self._leftover_cents(self.start), ())
        return _Outcome(greedy if greedy.beats(alone) else alone, best_proven=False)

    def _leftover_cents(self, counts: tuple) -> int:
        return sum(_percent_off_cents(self.products[sku], units, self.percent_of.get(sku))
                   for sku, units in zip(self.pool, counts))

    def _best(self, i: int, counts: tuple) -> _Plan:
        """The best plan for the units left, SKUs before ``i`` closed (no more bundles)."""
        if i == len(self.pool):
            return _Plan(0, ())
        key = (i, counts[i:])     # what is left of closed SKUs changes nothing after them
        if key not in self.memo:
            rest = self._best(i + 1, counts)
            best = _Plan(rest.cents + _percent_off_cents(self.products[self.pool[i]], counts[i],
                                                         self.percent_of.get(self.pool[i])),
                         rest.bundles)
            for bundle in self._bundles_with(i, counts):
                after = self._best(i, tuple(c - t for c, t in zip(counts, bundle.take)))
                plan = _Plan(after.cents + bundle.cents, (bundle,) + after.bundles)
                if plan.beats(best):
                    best = plan
            self.memo[key] = best
        return self.memo[key]

    def _bundles_with(self, i: int, counts: tuple):
        """Every saving bundle that takes a unit of SKU ``i`` and others only from SKUs
        after it, promotions in config order."""
        if counts[i] == 0:
            return
        for promotion in self.promotions:
            if isinstance(promotion, MealDeal):
                takes = self._meal_takes(promotion, i, counts)
            else:
                takes = self._any_mix_takes(promotion, i, counts)
            for take in takes:
                bundle = self._bundle(promotion, take)
                if bundle is not None:
                    yield bundle

    def _any_mix_takes(self, promotion, i: int, counts: tuple):
        """Multi-buy or fixed price: every mix of its size with at least one unit of SKU i."""
        if self.pool[i] not in promotion.skus:
            return
        size = _size(promotion)
        after = [j for j in range(i + 1, len(self.pool)) if self.pool[j] in promotion.skus]
        for units in range(min(size, counts[i]), 0, -1):
            for mix in _mixes(after, counts, size - units):
                self._look()
                take = [0] * len(self.pool)
                take[i] = units
                for j, n in mix.items():
                    take[j] = n
                yield tuple(take)

    def _meal_takes(self, promotion: MealDeal, i: int, counts: tuple):
        """Meal deal: every choice of one SKU per group, SKU i among them."""
        options = [[j for j in range(i, len(self.pool)) if self.pool[j] in group and counts[j] > 0]
                   for group in promotion.groups]
        seen = set()
        for choice in itertools.product(*options):
            self._look()
            take = tuple(choice.count(j) for j in range(len(self.pool)))
            if take[i] and take not in seen and all(t <= c for t, c in zip(take, counts)):
                seen.add(take)
                yield take

    def _look(self):
        """Counts one candidate bundle looked at, against SEARCH_LIMIT."""
        self.looked_at += 1
        if self.looked_at > SEARCH_LIMIT:
            raise _SearchTooLarge()

    def _bundle(self, promotion: Promotion, take: tuple) -> Optional[_Bundle]:
        """The bundle, or None where it would save nothing."""
        prices = [price for price, units in zip(self.prices, take) for _ in range(units)]   # dearest first
        if isinstance(promotion, MultiBuy):
            cents = sum(prices[promotion.pay:])
        else:   # FixedPrice, MealDeal
            cents = sum(prices) - promotion.price_cents
        return _Bundle(promotion, take, cents) if cents > 0 else None

    def _greedy(self) -> _Plan:
        counts, bundles = self.start, []
        while True:
            offers = [b for b in (self._dearest_bundle(p, counts) for p in self.promotions) if b is not None]
            if not offers:
                break
            bundle = max(offers, key=lambda b: b.cents)    # the first listed of equals
            bundles.append(bundle)
            counts = tuple(c - t for c, t in zip(counts, bundle.take))
        return _Plan(sum(b.cents for b in bundles) + self._leftover_cents(counts), tuple(bundles))

    def _dearest_bundle(self, promotion: Promotion, counts: tuple) -> Optional[_Bundle]:
        """One bundle of the dearest units left that a promotion takes, if it saves."""
        left = list(counts)
        take = [0] * len(self.pool)
        groups = promotion.groups if isinstance(promotion, MealDeal) else [promotion.skus] * _size(promotion)
        for group in groups:
            j = next((j for j in range(len(self.pool)) if left[j] > 0 and self.pool[j] in group), None)
            if j is None:
                return None
            left[j] -= 1
            take[j] += 1
        return self._bundle(promotion, tuple(take))


def _size(promotion) -> int:
    """How many units a multi-buy or fixed price takes."""
    return promotion.buy if isinstance(promotion, MultiBuy) else promotion.count


def _mixes(indices: list, counts: tuple, size: int):
    """Every way to take ``size`` units from the pool SKUs at ``indices`` (no more than
    ``counts`` holds of each), as {index: units}, most of the dearest first."""
    if size == 0:
        yield {}
        return
    if not indices or sum(counts[j] for j in indices) < size:
        return
    first, rest = indices[0], indices[1:]
    for units in range(min(size, counts[first]), -1, -1):
        for mix in _mixes(rest, counts, size - units):
            yield {first: units, **mix} if units else mix


def _bundle_saving(bundle: _Bundle, pool: list) -> SavingLine:
    used = tuple(sorted((UsedItem(sku, units) for sku, units in zip(pool, bundle.take) if units),
                        key=lambda item: item.sku))
    promotion = bundle.promotion
    return SavingLine(promotion.id, promotion.name, promotion.kind, used, bundle.cents)
