"""A store's catalogue and floor plan in the cloud (``stores/<store_id>/catalogue.json``):
what a reviewer picks corrections from, with the prices that go on the receipt, and
where the bins and gates are for the floor-plan picture of an event.

The store's uplink sends it (a ``StoreCatalogue`` envelope) when it starts and whenever
the store's configuration changes; the newest one sent wins. Until one has arrived the
review knows only the products of the visit's own receipt (``of_receipt``).
"""
import json
from dataclasses import dataclass
from typing import Optional

from jwo_cloud import layout
from jwo_cloud.bucket import Bucket, BucketError

# Conditional writes lost to concurrent saves before giving up.
_MAX_TRIES = 20


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    unit_grams: float
    tolerance_grams: float
    price_cents: int


@dataclass(frozen=True)
class FloorBin:
    bin_id: str
    shelf_id: str
    sku: str
    x: float
    y: float


@dataclass(frozen=True)
class FloorGate:
    gate_id: str
    x: float
    y: float
    radius_m: float


@dataclass(frozen=True)
class WeightFit:
    """A count of one product and how far its weight is from a measured change."""
    product: Product
    quantity: int
    off_grams: float


@dataclass(frozen=True)
class Catalogue:
    store_id: str
    products: dict           # sku -> Product, in catalogue order
    bins: tuple = ()
    gates: tuple = ()
    # False for the stand-in made from a receipt (no catalogue from the store yet).
    complete: bool = True

    @classmethod
    def from_document(cls, store_id: str, doc: dict) -> 'Catalogue':
        return cls(store_id,
                   {p['sku']: Product(p['sku'], p.get('name', ''), float(p.get('unit_grams', 0)),
                                      float(p.get('tolerance_grams', 0)), int(p.get('price_cents', 0)))
                    for p in doc.get('products', [])},
                   tuple(FloorBin(b['bin_id'], b.get('shelf_id', ''), b.get('sku', ''),
                                  float(b.get('x', 0)), float(b.get('y', 0))) for b in doc.get('bins', [])),
                   tuple(FloorGate(g['gate_id'], float(g.get('x', 0)), float(g.get('y', 0)),
                                   float(g.get('radius_m', 0))) for g in doc.get('gates', [])))

    @classmethod
    def of_receipt(cls, store_id: str, receipt: dict) -> 'Catalogue':
        """What a receipt tells of the store's products (names and prices of its lines)."""
        return cls(store_id, {line['sku']: Product(line['sku'], line.get('name', ''), 0.0, 0.0,
                                                   int(line['unit_price_cents']))
                              for line in receipt.get('lines', [])}, complete=False)

    def weight_fits(self, delta_grams: float, limit: int, max_units: int = 12) -> list:
        """The products whose whole units weigh the change within three sigma (the
        tolerance is two sigma of one unit, as fusion takes it), closest first."""
        fits = []
        for product in self.products.values():
            if product.unit_grams <= 0:
                continue
            quantity = max(1, round(abs(delta_grams) / product.unit_grams))
            off = abs(delta_grams) - quantity * product.unit_grams
            if quantity <= max_units and abs(off) <= 1.5 * product.tolerance_grams * quantity ** 0.5:
                fits.append(WeightFit(product, quantity, off))
        return sorted(fits, key=lambda fit: abs(fit.off_grams))[:limit]


def load(bucket: Bucket, store_id: str) -> Optional[Catalogue]:
    doc = bucket.get_json(layout.catalogue_key(store_id))
    return Catalogue.from_document(store_id, doc) if doc is not None else None


def save(bucket: Bucket, store_id: str, doc: dict) -> bool:
    """Writes the catalogue document unless the bucket holds one the store sent as late
    or later (``created_ns``); a conditional replace, so an older one arriving
    concurrently never overwrites it. True when it wrote."""
    key = layout.catalogue_key(store_id)
    data = json.dumps(doc, indent=1, sort_keys=True).encode()
    for _ in range(_MAX_TRIES):
        stored = bucket.get_object(key)
        if stored is None:
            if bucket.put(key, data, if_none_match=True):
                return True
            continue
        try:
            held_ns = int(json.loads(stored.data).get('created_ns', 0))
        except ValueError:
            held_ns = 0   # not a catalogue: replace it
        if held_ns >= doc['created_ns']:
            return False
        if bucket.put(key, data, if_match=stored.etag):
            return True
    raise BucketError(f'{key}: changed by others {_MAX_TRIES} times in a row')
