"""What each product looks like in a hand, learned from the store's own takes, and how
well each product explains what the hands at a change held: the evidence that tells
products of one weight apart (two yogurts of 135 g, one put back on the other's bin).

The vision tracker reads each hand it sees (jwo_nodes.core.held_item): the chance that
it holds a product and that product's chromaticity. A take from a bin whose own
product fits the weight teaches that product's colour (a stray taken instead now and
then is outvoted: a product's colour is the median of what it was seen as). Until a
product has been seen in hands, its colour is the catalogue's where the store config
gives one (Product.colour, from a photo of the packaging). A change
that more than one product fits is weighed by how near the hands at the bin came to
each product's colour; a product not seen yet is neither favoured nor ruled out.
Learned from changes stamped before the one weighed only, so a replay in any order
weighs alike. No images are kept: two numbers per sighting.
"""
import math
import statistics
from bisect import insort
from dataclasses import dataclass, replace

# How far one reading of a product's colour falls from its learned colour (chromaticity,
# one sigma): the reader's error on rendered frames of scenarios (median 0.016 in the
# demo store, 0.025 in the real-store layout: test_held_item) and the learned colour's.
COLOUR_SIGMA = 0.03
# Density of a colour that says nothing about the product (chromaticities spread over
# about a sixth of the unit square), and the share of changes whose colour is such an
# outlier (a neighbour's product, a misread).
_ANY_COLOUR_DENSITY = 6.0
_OUTLIER_SHARE = 0.03
# A product that fits the weight keeps at least this share of the likelihood of the
# best-looking one: the reader can be wrong, a colour learned from few takes too.
FLOOR = 0.01
# Sightings kept per product (the newest): enough for a stable median.
_KEPT = 60
# A product's colour needs this many sightings, stamped before the change weighed.
_LEAST_SIGHTINGS = 2


@dataclass(frozen=True)
class Sighting:
    """One reading of a hand at a change: when, how sure it held something, its colour."""
    stamp_ns: int
    holding: float
    blue: float
    green: float


class ProductLooks:
    """Each product's colour in a hand, by stamp; ``catalogue`` (sku -> (blue, green))
    gives the colours known before any take."""

    def __init__(self, catalogue: dict = None):
        self._seen = {}     # sku -> [(stamp_ns, blue, green)], in stamp order
        # The store config's: a core restored from a saved state replaces it with the
        # config it runs on now (a site engineer may have measured the packaging since).
        self.catalogue = dict(catalogue or {})

    def learn(self, sku: str, stamp_ns: int, sightings) -> None:
        """Sightings of a hand that took ``sku`` (those likely holding it count)."""
        kept = self._seen.setdefault(sku, [])
        for s in sightings:
            if s.holding >= 0.5:
                insort(kept, (stamp_ns, s.blue, s.green))
        del kept[:-_KEPT]

    def colour(self, sku: str, before_ns: int):
        """(blue, green) median of the sightings of sku stamped before a stamp; with too
        few, the catalogue's colour, else None."""
        seen = [(b, g) for stamp, b, g in self._seen.get(sku, ()) if stamp < before_ns]
        if len(seen) < _LEAST_SIGHTINGS:
            return self.catalogue.get(sku)
        blues, greens = sorted(b for b, _ in seen), sorted(g for _, g in seen)
        middle = len(seen) // 2
        return blues[middle], greens[middle]

    def factors(self, skus, sightings, before_ns: int) -> dict:
        """sku -> how well it explains the sightings, relative to the best (1.0), never
        below FLOOR; every sku 1.0 when nothing tells them apart. The readings of one
        change are one look (one hand over consecutive frames): the median colour of
        those holding something, as sure as the share of them that did. Counting each
        reading as a look, a colour between two products of like colours (cola, water
        and apples lie within 0.05 of each other) ruled out the one not seen yet."""
        held = [s for s in sightings if s.holding >= 0.5]
        if not held:
            return {sku: 1.0 for sku in skus}
        share = len(held) / len(sightings)
        blue, green = statistics.median(s.blue for s in held), statistics.median(s.green for s in held)
        density = {}
        for sku in skus:
            colour = self.colour(sku, before_ns)
            if colour is None:
                density[sku] = _ANY_COLOUR_DENSITY
                continue
            d2 = (blue - colour[0]) ** 2 + (green - colour[1]) ** 2
            near = math.exp(-0.5 * d2 / COLOUR_SIGMA ** 2) / (2 * math.pi * COLOUR_SIGMA ** 2)
            density[sku] = (share * ((1 - _OUTLIER_SHARE) * near + _OUTLIER_SHARE * _ANY_COLOUR_DENSITY)
                            + (1 - share) * _ANY_COLOUR_DENSITY)
        best = max(density.values())
        return {sku: max(FLOOR, value / best) for sku, value in density.items()}

    def weigh(self, fits: tuple, sightings, before_ns: int) -> tuple:
        """ProductFits with each likelihood times its product's factor, best first. The
        fits' total is kept: what the hands held shares out how well some product
        explains the weight, it does not make the weight less explained."""
        skus = sorted({fit.sku for fit in fits})
        if len(skus) < 2:
            return fits
        factor = self.factors(skus, sightings, before_ns)
        total = sum(fit.likelihood for fit in fits)
        looked = sum(fit.likelihood * factor[fit.sku] for fit in fits)
        weighed = [replace(fit, likelihood=fit.likelihood * factor[fit.sku] * total / looked) for fit in fits]
        return tuple(sorted(weighed, key=lambda f: (-f.likelihood, f.sku)))


# A take's product is in the hand from the middle of the change until the arm is back;
# a put-back's from the start of the reach until the middle (seconds around the change).
_ARM_BACK_S = 0.3
_REACH_IN_S = 0.4


def held_span(delta_grams: float, start_ns: int, end_ns: int) -> tuple:
    """(from, until) stamps when the hand at a change holds its product."""
    middle = (start_ns + end_ns) // 2
    if delta_grams < 0:
        return middle, end_ns + int(_ARM_BACK_S * 1e9)
    return start_ns - int(_REACH_IN_S * 1e9), middle


def sightings_at(windows, shelf_point: tuple, zone_m: float, span: tuple) -> tuple:
    """The readings of the hand nearest a bin's shelf point, within zone_m of it, at
    each stamp of a span (a neighbour reaching into the next facing is farther), as
    Sightings in stamp order."""
    (x, y), (start, end) = shelf_point, span
    nearest = {}
    for window in windows:
        for s in window.samples:
            if not (start <= s.stamp_ns <= end and s.hand is not None and s.hand_item is not None):
                continue
            distance = math.hypot(s.hand[0] - x, s.hand[1] - y)
            if distance <= zone_m and distance < nearest.get(s.stamp_ns, (math.inf,))[0]:
                nearest[s.stamp_ns] = (distance, s.hand_item)
    return tuple(Sighting(stamp, item.holding, item.blue, item.green)
                 for stamp, (_, item) in sorted(nearest.items()))
