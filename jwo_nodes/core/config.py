"""Per-store configuration: products, promotions, shelves and bins, gates and cameras.

Loaded from ``config/stores/<store>.yaml`` and validated completely before any node
starts; every problem is reported as ``<file>: <key>: <problem>``, an unknown key (a
typo) included. No rclpy here.
"""
import difflib
import math
import re
import zoneinfo
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import ClassVar, Optional

import yaml

from jwo_common import money

# A bin's shelf, where hands reach into it, is this far from the bin's standing point,
# away from the aisle.
SHELF_OFFSET_M = 0.6
# Reaching into a board at a known level, a hand is this far above it (metres), within
# these bounds.
HAND_ABOVE_BOARD_M = 0.1
HAND_HEIGHT_RANGE_M = (0.25, 1.95)
# The front edge of a shelf is this far in front of the point where hands reach into it.
SHELF_FACE_M = 0.15
# A shelf is this deep, from its front edge to its back.
SHELF_DEPTH_M = 0.45
# A facing is at most this wide each side of its bin point (narrower when the next bin
# on the shelf is closer).
MAX_FACING_HALF_WIDTH_M = 0.15
# store.layout: 'aisle' (shelves along the walls, one shopper per bin: the default) or
# 'gondola' (shelf units in several aisles, each shelf facing its own way, shoppers
# side by side at arm's length; see jwo_nodes.core.sim).
LAYOUTS = ('aisle', 'gondola')
# shelves[].facing as a word: the direction from the shelf into its aisle.
FACING_WORDS = {'+x': (1.0, 0.0), '-x': (-1.0, 0.0), '+y': (0.0, 1.0), '-y': (0.0, -1.0)}
# shelves[].level: height of the shelf board above the floor, metres.
MAX_LEVEL_M = 3.0
# promotions[].window.days, in datetime.weekday() order (0 = Monday).
WEEKDAYS = ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun')
MINUTES_PER_DAY = 24 * 60
# promotions[].window.from / until: "HH:MM", local time.
_CLOCK = re.compile(r'(\d{1,2}):(\d{2})')


class ConfigError(Exception):
    """A configuration problem, naming the file, the key and what is wrong."""

    def __init__(self, file: str, key: str, problem: str):
        super().__init__(f'{file}: {key}: {problem}')
        self.file = str(file)
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    # Mean weight of one unit and how far one unit may be from it. For a product sold by
    # weight, one typical piece or scoop (an apple, a scoop of nuts): the shelf logic
    # still explains weight changes in these, while the price comes from the grams.
    unit_grams: float
    tolerance_grams: float
    # Price of one unit. For a product sold by weight, that of one typical piece
    # (unit_grams, to the gram, at price_per_kg_cents), for code that counts units.
    price_cents: int
    # Set for a product sold by weight (loose fruit, bulk bins): the price of a kilogram.
    price_per_kg_cents: Optional[int] = None
    # Sold to adults only (alcohol, tobacco).
    age_restricted: bool = False
    # The staff view raises a low-stock alert for a bin of it at this many units or
    # fewer (None: only when it is empty).
    low_stock_units: Optional[int] = None
    # The packaging's colour as (blue, green) chromaticity, measured from a photo of the
    # product (`jwo product-colours`): what tells products of one weight apart from the
    # first sale on. None: learnt from the store's own takes.
    colour: Optional[tuple] = None

    @property
    def sold_by_weight(self) -> bool:
        return self.price_per_kg_cents is not None


class PromotionKind(Enum):
    MULTI_BUY = 'multi_buy'
    FIXED_PRICE = 'fixed_price'
    PERCENT_OFF = 'percent_off'
    MEAL_DEAL = 'meal_deal'


@dataclass(frozen=True)
class TimeWindow:
    """When a promotion runs, in the store's local time (store.timezone)."""
    # The days it starts on, as datetime.weekday() numbers (0 = Monday).
    days: frozenset
    # Minutes after local midnight, from inclusive, until exclusive. until <= from runs
    # past midnight: the hours after it belong to the day the window started on.
    from_minute: int
    until_minute: int


@dataclass(frozen=True)
class Promotion:
    """What every promotion has. Each unit (or weighed line) gets at most one promotion."""
    id: str
    # Shown on the receipt's savings line.
    name: str
    # None: always on.
    window: Optional[TimeWindow]


@dataclass(frozen=True)
class MultiBuy(Promotion):
    """Buy ``buy`` units of the listed SKUs, any mix, pay for ``pay``: the cheapest go free."""
    kind: ClassVar[PromotionKind] = PromotionKind.MULTI_BUY
    skus: tuple
    buy: int
    pay: int


@dataclass(frozen=True)
class FixedPrice(Promotion):
    """``count`` units of the listed SKUs, any mix, for ``price_cents``."""
    kind: ClassVar[PromotionKind] = PromotionKind.FIXED_PRICE
    skus: tuple
    count: int
    price_cents: int


@dataclass(frozen=True)
class PercentOff(Promotion):
    """``percent`` % off the listed SKUs, by the unit or by weight."""
    kind: ClassVar[PromotionKind] = PromotionKind.PERCENT_OFF
    skus: tuple
    percent: int


@dataclass(frozen=True)
class MealDeal(Promotion):
    """One unit from each group of SKUs for ``price_cents``."""
    kind: ClassVar[PromotionKind] = PromotionKind.MEAL_DEAL
    groups: tuple
    price_cents: int

    @property
    def skus(self) -> tuple:
        """Every SKU of every group, once."""
        return tuple(dict.fromkeys(sku for group in self.groups for sku in group))


@dataclass(frozen=True)
class Bin:
    id: str
    shelf_id: str
    sku: str
    # Where a shopper stands to reach this bin, on the floor plane (metres).
    x: float
    y: float
    # Units on the bin when the store opens (the simulator starts from it).
    initial_units: int


@dataclass(frozen=True)
class Shelf:
    id: str
    bins: tuple
    # Load-cell board: a serial device path, or 'sim' for the simulator.
    source: str
    # Unit vector (x, y) from the shelf into its aisle, towards where shoppers stand
    # (optional: without it the shelf is on the side of the store its bins are on).
    facing: Optional[tuple] = None
    # Height of the shelf board above the floor, metres (optional).
    level: Optional[float] = None


@dataclass(frozen=True)
class Gate:
    id: str
    x: float
    y: float
    # A shopper within this distance of the gate point is passing the gate.
    radius_m: float
    # Credential reader: a serial device path, 'stdin', or 'sim' for the simulator.
    source: str


@dataclass(frozen=True)
class Camera:
    id: str
    # 'sim', a device index ('0'), a video file path or an rtsp:// URL.
    source: str
    width: int
    height: int
    fps: float
    # 3x3 homography from image pixels to floor metres, row-major.
    homography: tuple
    # Shelves this camera sees (review clips come from these cameras).
    sees_shelves: tuple


@dataclass(frozen=True)
class ReviewCosts:
    """What sending a visit to a person costs against what a wrong FINAL receipt costs;
    fusion asks for review only when the expected cost of being wrong is higher."""
    # One human review of one visit.
    cost_cents: int
    # A cent overcharged hurts this many times as much as a cent not charged.
    overcharge_weight: float
    # Trust lost by any wrong line on a FINAL receipt (a complaint, a refund), on top
    # of the cents.
    wrong_line_cents: int


@dataclass(frozen=True)
class StoreConfig:
    path: str
    store_id: str
    name: str
    currency: str
    # Sales tax in basis points (825 = 8.25 %), applied to the subtotal.
    tax_rate_bp: int
    products: dict
    shelves: dict
    gates: dict
    cameras: dict
    review: ReviewCosts
    # 'aisle' or 'gondola' (see LAYOUTS).
    layout: str = 'aisle'
    # MultiBuy, FixedPrice, PercentOff and MealDeal, in the order of the file.
    promotions: tuple = ()
    # IANA time zone of the store (promotion windows are in its local time); None when
    # the file gives none (then no promotion has a window).
    timezone: Optional[str] = None

    def bin(self, bin_id: str) -> Optional[Bin]:
        return self._bins.get(bin_id)

    @property
    def bins(self) -> dict:
        return self._bins

    @property
    def centre_y(self) -> float:
        """The middle of the aisle: the mean of the bins' standing points across the store."""
        return self._centre_y

    def shelf_point(self, bin_id: str) -> tuple:
        """Where hands go for a bin (floor metres): from its standing point, towards the
        shelf (against the shelf's facing; without one, towards the nearer long wall)."""
        bin_ = self._bins[bin_id]
        facing = self.shelves[bin_.shelf_id].facing
        if facing is not None:
            return bin_.x - facing[0] * SHELF_OFFSET_M, bin_.y - facing[1] * SHELF_OFFSET_M
        side = -1.0 if bin_.y < self._centre_y else 1.0
        return bin_.x, bin_.y + side * SHELF_OFFSET_M

    def hand_height(self, bin_id: str) -> Optional[float]:
        """How high a hand reaching into a bin is (metres above the floor); None where
        the store does not say (a shelf without a facing or a level)."""
        shelf = self.shelves[self._bins[bin_id].shelf_id]
        if shelf.facing is None or shelf.level is None:
            return None
        return min(max(shelf.level + HAND_ABOVE_BOARD_M, HAND_HEIGHT_RANGE_M[0]), HAND_HEIGHT_RANGE_M[1])

    def facing(self, bin_id: str) -> tuple:
        """Unit vector from a bin's shelf into its aisle (towards where shoppers stand)."""
        bin_ = self._bins[bin_id]
        facing = self.shelves[bin_.shelf_id].facing
        if facing is not None:
            return facing
        return (0.0, 1.0) if bin_.y < self._centre_y else (0.0, -1.0)

    def face_point(self, bin_id: str) -> tuple:
        """The middle of a bin's facing on the front edge of its shelf (floor metres)."""
        (hx, hy), (fx, fy) = self.shelf_point(bin_id), self.facing(bin_id)
        return hx + fx * SHELF_FACE_M, hy + fy * SHELF_FACE_M

    def facing_half_width(self, bin_id: str) -> float:
        """Half the width of a bin's facing along its shelf: half the distance to the
        nearest other bin on the shelf, at most MAX_FACING_HALF_WIDTH_M."""
        return self._half_widths[bin_id]

    def beside_home(self, bin_id: str, sku: str) -> bool:
        """Whether a bin is a facing next to one of the product's own facings on their
        shelf (another product's): where a shopper who changed their mind most often
        leaves it."""
        return bin_id in self._beside.get(sku, ())

    def __post_init__(self):
        bins = {b.id: b for shelf in self.shelves.values() for b in shelf.bins}
        object.__setattr__(self, '_bins', bins)
        object.__setattr__(self, '_centre_y',
                           math.fsum(b.y for b in bins.values()) / len(bins) if bins else 0.0)
        half_widths = {}
        for shelf in self.shelves.values():
            for b in shelf.bins:
                gaps = [math.hypot(o.x - b.x, o.y - b.y) / 2 for o in shelf.bins if o is not b]
                half_widths[b.id] = min([MAX_FACING_HALF_WIDTH_M] + [g for g in gaps if g > 0])
        object.__setattr__(self, '_half_widths', half_widths)
        beside = {}
        for shelf in self.shelves.values():
            for b in shelf.bins:
                beside.setdefault(b.sku, set()).update(_next_facings(shelf, b))
        object.__setattr__(self, '_beside', {sku: frozenset(ids) for sku, ids in beside.items()})


def _next_facings(shelf: Shelf, home: Bin) -> list:
    """The ids of the nearest facing of another product on each side of a bin along its
    shelf (across the shelf's facing; without one, along the bins' longer spread)."""
    if shelf.facing is not None:
        axis = (-shelf.facing[1], shelf.facing[0])
    else:
        xs, ys = [b.x for b in shelf.bins], [b.y for b in shelf.bins]
        axis = (1.0, 0.0) if max(xs) - min(xs) >= max(ys) - min(ys) else (0.0, 1.0)
    sides = {}
    for other in shelf.bins:
        if other.sku == home.sku:
            continue
        along = (other.x - home.x) * axis[0] + (other.y - home.y) * axis[1]
        if along == 0:
            continue
        side = along > 0
        if side not in sides or abs(along) < sides[side][0]:
            sides[side] = (abs(along), other.id)
    return [bin_id for _, bin_id in sides.values()]


def check_keys(file: str, mapping: dict, known: tuple, parent: str, what: str = 'key') -> None:
    """Raises ConfigError on the first key of a mapping that is not known: a misspelt
    key must not be ignored, leaving a default (or nothing) in its place."""
    for name in mapping:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f'did you mean {close[0]!r}?' if close else f'known: {", ".join(known)}'
            raise ConfigError(file, f'{parent}.{name}' if parent else str(name),
                              f'unknown {what} {name!r} ({hint})')


# libyaml's parser where PyYAML has it: a store of hundreds of shelves parses in
# milliseconds instead of a quarter second, in every node that loads it.
_YAML_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


def parse_yaml(text: str):
    """yaml.safe_load, with libyaml when available; raises yaml.YAMLError."""
    return yaml.load(text, Loader=_YAML_LOADER)


def load_store_config(path) -> StoreConfig:
    """Reads and validates a store YAML file; raises ConfigError on the first problem."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(path, '<file>', f'cannot read: {error.strerror}')
    try:
        document = parse_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, 'problem_mark', None)
        where = f'line {mark.line + 1}, column {mark.column + 1}' if mark else '<yaml>'
        raise ConfigError(path, where, f'malformed YAML: {getattr(error, "problem", error)}')
    return parse_store_config(document, path)


def parse_store_config(document, path: str = '<memory>') -> StoreConfig:
    reader = _Reader(path)
    root = reader.mapping(document, '', ('store', 'review', 'products', 'promotions', 'shelves', 'gates',
                                         'cameras'))
    store = reader.mapping(reader.field(root, 'store', ''), 'store',
                           ('id', 'name', 'currency', 'tax_rate_bp', 'layout', 'timezone'))
    store_id = reader.ros_token(store, 'id', 'store')
    layout = 'aisle' if store.get('layout') is None else store['layout']
    if layout not in LAYOUTS:
        raise ConfigError(path, 'store.layout', f'expected one of {", ".join(LAYOUTS)}, got {layout!r}')
    timezone = reader.timezone(store, 'timezone', 'store') if store.get('timezone') is not None else None
    products = {}
    for i, raw in enumerate(reader.sequence(reader.field(root, 'products', ''), 'products')):
        key = f'products[{i}]'
        item = reader.mapping(raw, key, ('sku', 'name', 'unit_grams', 'tolerance_grams', 'price_cents',
                                         'price_per_kg_cents', 'age_restricted', 'low_stock_units', 'colour'))
        sku = reader.identifier(item, 'sku', key)
        if sku in products:
            raise ConfigError(path, f'{key}.sku', f'duplicate SKU {sku!r}')
        products[sku] = _product(reader, item, key, sku)
    promotions = _promotions(reader, root.get('promotions', []), products)
    windowed = [i for i, promotion in enumerate(promotions) if promotion.window is not None]
    if windowed and timezone is None:
        raise ConfigError(path, 'store.timezone', f'missing (promotions[{windowed[0]}].window is in local '
                          'time): an IANA time zone such as Europe/Berlin')
    shelves = {}
    bin_ids = set()
    for i, raw in enumerate(reader.sequence(reader.field(root, 'shelves', ''), 'shelves')):
        key = f'shelves[{i}]'
        item = reader.mapping(raw, key, ('id', 'source', 'bins', 'facing', 'level'))
        shelf_id = reader.ros_token(item, 'id', key)
        if shelf_id in shelves:
            raise ConfigError(path, f'{key}.id', f'duplicate shelf id {shelf_id!r}')
        bins = []
        for j, raw_bin in enumerate(reader.sequence(reader.field(item, 'bins', key), f'{key}.bins')):
            bin_key = f'{key}.bins[{j}]'
            bin_item = reader.mapping(raw_bin, bin_key, ('id', 'sku', 'position', 'initial_units'))
            bin_id = reader.identifier(bin_item, 'id', bin_key)
            if bin_id in bin_ids:
                raise ConfigError(path, f'{bin_key}.id', f'duplicate bin id {bin_id!r}')
            bin_ids.add(bin_id)
            sku = reader.string(bin_item, 'sku', bin_key)
            if sku not in products:
                raise ConfigError(path, f'{bin_key}.sku', f'unknown SKU {sku!r} (not under products)')
            x, y = reader.point(bin_item, 'position', bin_key)
            bins.append(Bin(id=bin_id, shelf_id=shelf_id, sku=sku, x=x, y=y,
                            initial_units=reader.integer(bin_item, 'initial_units', bin_key, minimum=0)))
        facing = reader.facing(item, 'facing', key) if item.get('facing') is not None else None
        if facing is None and layout == 'gondola':
            raise ConfigError(path, f'{key}.facing', 'missing (required with store.layout: gondola): '
                              'the direction from the shelf into its aisle, +x, -x, +y, -y or degrees')
        level = None
        if item.get('level') is not None:
            level = reader.number(item, 'level', key, minimum=0.0)
            if level > MAX_LEVEL_M:
                raise ConfigError(path, f'{key}.level', f'must be <= {MAX_LEVEL_M} (metres above the floor), '
                                  f'got {level}')
        shelves[shelf_id] = Shelf(id=shelf_id, bins=tuple(bins),
                                  source=reader.string(item, 'source', key), facing=facing, level=level)
    gates = {}
    for i, raw in enumerate(reader.sequence(reader.field(root, 'gates', ''), 'gates')):
        key = f'gates[{i}]'
        item = reader.mapping(raw, key, ('id', 'position', 'radius_m', 'source'))
        gate_id = reader.ros_token(item, 'id', key)
        if gate_id in gates:
            raise ConfigError(path, f'{key}.id', f'duplicate gate id {gate_id!r}')
        x, y = reader.point(item, 'position', key)
        gates[gate_id] = Gate(id=gate_id, x=x, y=y,
                              radius_m=reader.number(item, 'radius_m', key, minimum=0.0, exclusive=True),
                              source=reader.string(item, 'source', key))
    cameras = {}
    for i, raw in enumerate(reader.sequence(root.get('cameras', []), 'cameras', allow_empty=True)):
        key = f'cameras[{i}]'
        item = reader.mapping(raw, key, ('id', 'source', 'width', 'height', 'fps', 'homography',
                                         'sees_shelves'))
        camera_id = reader.ros_token(item, 'id', key)
        if camera_id in cameras:
            raise ConfigError(path, f'{key}.id', f'duplicate camera id {camera_id!r}')
        source = item.get('source')
        if source is None or str(source).strip() == '':
            raise ConfigError(path, f'{key}.source', 'missing camera source '
                              "('sim', a device index, a video file or an rtsp:// URL)")
        sees = tuple(reader.string_list(item, 'sees_shelves', key))
        for shelf_id in sees:
            if shelf_id not in shelves:
                raise ConfigError(path, f'{key}.sees_shelves', f'unknown shelf {shelf_id!r}')
        cameras[camera_id] = Camera(
            id=camera_id, source=str(source),
            width=reader.integer(item, 'width', key, minimum=1),
            height=reader.integer(item, 'height', key, minimum=1),
            fps=reader.number(item, 'fps', key, minimum=0.0, exclusive=True),
            homography=reader.homography(item, 'homography', key),
            sees_shelves=sees)
    return StoreConfig(
        path=path, store_id=store_id,
        name=reader.string(store, 'name', 'store'),
        currency=reader.string(store, 'currency', 'store'),
        tax_rate_bp=reader.integer(store, 'tax_rate_bp', 'store', minimum=0, maximum=10000),
        products=products, shelves=shelves, gates=gates, cameras=cameras,
        review=_review_costs(reader, root),
        layout=layout, promotions=promotions, timezone=timezone)


def _product(reader, item: dict, key: str, sku: str) -> Product:
    name = reader.string(item, 'name', key)
    unit_grams = reader.number(item, 'unit_grams', key, minimum=0.0, exclusive=True)
    tolerance_grams = reader.number(item, 'tolerance_grams', key, minimum=0.0, exclusive=True)
    by_unit, by_weight = item.get('price_cents') is not None, item.get('price_per_kg_cents') is not None
    if by_unit and by_weight:
        raise ConfigError(reader.path, f'{key}.price_per_kg_cents',
                          'give price_cents (per unit) or price_per_kg_cents (sold by weight), not both')
    if not by_unit and not by_weight:
        raise ConfigError(reader.path, f'{key}.price_cents',
                          'missing (or price_per_kg_cents for a product sold by weight)')
    price_per_kg = reader.integer(item, 'price_per_kg_cents', key, minimum=0) if by_weight else None
    return Product(
        sku=sku, name=name, unit_grams=unit_grams, tolerance_grams=tolerance_grams,
        price_cents=(money.weighed_price_cents(round(unit_grams), price_per_kg) if by_weight
                     else reader.integer(item, 'price_cents', key, minimum=0)),
        price_per_kg_cents=price_per_kg,
        age_restricted=reader.boolean(item, 'age_restricted', key, default=False),
        low_stock_units=(reader.integer(item, 'low_stock_units', key, minimum=0)
                         if item.get('low_stock_units') is not None else None),
        colour=reader.chromaticity(item, 'colour', key) if item.get('colour') is not None else None)


# The keys each kind of promotion takes besides id, name, kind and window.
_PROMOTION_KEYS = {
    PromotionKind.MULTI_BUY: ('skus', 'buy', 'pay'),
    PromotionKind.FIXED_PRICE: ('skus', 'count', 'price_cents'),
    PromotionKind.PERCENT_OFF: ('skus', 'percent'),
    PromotionKind.MEAL_DEAL: ('groups', 'price_cents'),
}
_COMMON_PROMOTION_KEYS = ('id', 'name', 'kind', 'window')
_ANY_KIND_KEYS = tuple(dict.fromkeys(key for keys in _PROMOTION_KEYS.values() for key in keys))


def _promotions(reader, raw, products: dict) -> tuple:
    promotions, ids = [], set()
    kinds = tuple(kind.value for kind in PromotionKind)
    for i, raw_item in enumerate(reader.sequence(raw, 'promotions', allow_empty=True)):
        key = f'promotions[{i}]'
        # A key of no kind is a typo; one of another kind is named once the kind is known.
        item = reader.mapping(raw_item, key, _COMMON_PROMOTION_KEYS + _ANY_KIND_KEYS)
        kind_word = reader.string(item, 'kind', key)
        if kind_word not in kinds:
            raise ConfigError(reader.path, f'{key}.kind', f'unknown kind {kind_word!r} (known: {", ".join(kinds)})')
        kind = PromotionKind(kind_word)
        check_keys(reader.path, item, _COMMON_PROMOTION_KEYS + _PROMOTION_KEYS[kind], key)
        promotion_id = reader.identifier(item, 'id', key)
        if promotion_id in ids:
            raise ConfigError(reader.path, f'{key}.id', f'duplicate promotion id {promotion_id!r}')
        ids.add(promotion_id)
        common = dict(id=promotion_id, name=reader.string(item, 'name', key),
                      window=_time_window(reader, item, key))
        promotions.append(_PROMOTION_PARSERS[kind](reader, item, key, products, common))
    return tuple(promotions)


def _listed_skus(reader, item: dict, key: str, products: dict, kind: PromotionKind) -> tuple:
    return reader.skus(reader.field(item, 'skus', key), f'{key}.skus', products, kind)


def _multi_buy(reader, item: dict, key: str, products: dict, common: dict) -> MultiBuy:
    skus = _listed_skus(reader, item, key, products, PromotionKind.MULTI_BUY)
    buy = reader.integer(item, 'buy', key, minimum=2)
    pay = reader.integer(item, 'pay', key, minimum=1)
    if pay >= buy:
        raise ConfigError(reader.path, f'{key}.pay', f'must be less than buy ({buy}), got {pay}')
    return MultiBuy(skus=skus, buy=buy, pay=pay, **common)


def _fixed_price(reader, item: dict, key: str, products: dict, common: dict) -> FixedPrice:
    skus = _listed_skus(reader, item, key, products, PromotionKind.FIXED_PRICE)
    count = reader.integer(item, 'count', key, minimum=1)
    price = reader.integer(item, 'price_cents', key, minimum=0)
    dearest = count * max(products[sku].price_cents for sku in skus)
    if price >= dearest:
        raise ConfigError(reader.path, f'{key}.price_cents', f'{price} never saves: {count} of the dearest '
                          f'listed SKU cost {dearest}')
    return FixedPrice(skus=skus, count=count, price_cents=price, **common)


def _percent_off(reader, item: dict, key: str, products: dict, common: dict) -> PercentOff:
    return PercentOff(skus=_listed_skus(reader, item, key, products, PromotionKind.PERCENT_OFF),
                      percent=reader.integer(item, 'percent', key, minimum=1, maximum=99), **common)


def _meal_deal(reader, item: dict, key: str, products: dict, common: dict) -> MealDeal:
    groups_key = f'{key}.groups'
    raw_groups = reader.sequence(reader.field(item, 'groups', key), groups_key)
    if len(raw_groups) < 2:
        raise ConfigError(reader.path, groups_key, 'a meal deal takes one item from each of at least two '
                          'groups (one group is a fixed_price with count 1)')
    groups = tuple(reader.skus(group, f'{groups_key}[{g}]', products, PromotionKind.MEAL_DEAL)
                   for g, group in enumerate(raw_groups))
    price = reader.integer(item, 'price_cents', key, minimum=0)
    dearest = sum(max(products[sku].price_cents for sku in group) for group in groups)
    if price >= dearest:
        raise ConfigError(reader.path, f'{key}.price_cents', f'{price} never saves: the dearest item of '
                          f'each group cost {dearest} together')
    return MealDeal(groups=groups, price_cents=price, **common)


_PROMOTION_PARSERS = {
    PromotionKind.MULTI_BUY: _multi_buy,
    PromotionKind.FIXED_PRICE: _fixed_price,
    PromotionKind.PERCENT_OFF: _percent_off,
    PromotionKind.MEAL_DEAL: _meal_deal,
}


def _time_window(reader, item: dict, key: str) -> Optional[TimeWindow]:
    if item.get('window') is None:
        return None
    window_key = f'{key}.window'
    window = reader.mapping(item['window'], window_key, ('days', 'from', 'until'))
    if not window:
        raise ConfigError(reader.path, window_key, 'empty: give days, from or until (or no window: always on)')
    days = reader.weekdays(window, 'days', window_key) if window.get('days') is not None else frozenset(range(7))
    start = reader.clock(window, 'from', window_key) if window.get('from') is not None else 0
    until = reader.clock(window, 'until', window_key) if window.get('until') is not None else MINUTES_PER_DAY
    if until == 0:      # until 00:00 is midnight at the end of the day, as 24:00
        until = MINUTES_PER_DAY
    if start == MINUTES_PER_DAY:
        raise ConfigError(reader.path, f'{window_key}.from', 'must be before 24:00')
    if start == until:
        raise ConfigError(reader.path, f'{window_key}.until', 'equals from: the window would be empty '
                          '(leave both out for the whole day)')
    return TimeWindow(days=days, from_minute=start, until_minute=until)


def _review_costs(reader, root: dict) -> ReviewCosts:
    review = reader.mapping(reader.field(root, 'review', ''), 'review',
                            ('cost_cents', 'overcharge_weight', 'wrong_line_cents'))
    weight = reader.number(review, 'overcharge_weight', 'review', minimum=1.0)
    return ReviewCosts(cost_cents=reader.integer(review, 'cost_cents', 'review', minimum=0),
                       overcharge_weight=weight,
                       wrong_line_cents=reader.integer(review, 'wrong_line_cents', 'review', minimum=0))


class _Reader:
    """Typed access to parsed YAML that raises ConfigError with the full key path."""

    def __init__(self, path: str):
        self.path = path

    def _key(self, parent: str, name: str) -> str:
        return f'{parent}.{name}' if parent else name

    def field(self, mapping: dict, name: str, parent: str):
        if name not in mapping or mapping[name] is None:
            raise ConfigError(self.path, self._key(parent, name), 'missing')
        return mapping[name]

    def mapping(self, value, key: str, known: tuple) -> dict:
        """A mapping that holds only the ``known`` keys."""
        if not isinstance(value, dict):
            raise ConfigError(self.path, key or '<root>', f'expected a mapping, got {_kind(value)}')
        check_keys(self.path, value, known, key)
        return value

    def sequence(self, value, key: str, allow_empty: bool = False) -> list:
        if not isinstance(value, list):
            raise ConfigError(self.path, key, f'expected a list, got {_kind(value)}')
        if not value and not allow_empty:
            raise ConfigError(self.path, key, 'must not be empty')
        return value

    def string(self, mapping: dict, name: str, parent: str) -> str:
        value = self.field(mapping, name, parent)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.path, self._key(parent, name), f'expected a non-empty string, got {value!r}')
        return value

    def identifier(self, mapping: dict, name: str, parent: str) -> str:
        value = self.string(mapping, name, parent)
        if not all(c.isascii() and (c.isalnum() or c in '_-') for c in value):
            raise ConfigError(self.path, self._key(parent, name),
                              f'{value!r} may hold only letters, digits, "_" and "-"')
        return value

    def ros_token(self, mapping: dict, name: str, parent: str) -> str:
        """An id that becomes part of ROS topic names (shelves, gates, cameras)."""
        value = self.string(mapping, name, parent)
        if not (value[0].isascii() and value[0].isalpha()
                and all(c.isascii() and (c.isalnum() or c == '_') for c in value)):
            raise ConfigError(self.path, self._key(parent, name),
                              f'{value!r} must start with a letter and hold only letters, '
                              'digits and "_" (it is part of ROS topic names)')
        return value

    def boolean(self, mapping: dict, name: str, parent: str, default: bool) -> bool:
        value = mapping.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.path, self._key(parent, name), f'expected true or false, got {value!r}')
        return value

    def skus(self, value, key: str, products: dict, kind: PromotionKind) -> tuple:
        """A non-empty list of known SKUs, each once, for a promotion of ``kind``. Only
        percent_off takes products sold by weight: the other kinds count units."""
        skus = self.sequence(value, key)
        for j, sku in enumerate(skus):
            sku_key = f'{key}[{j}]'
            if not isinstance(sku, str) or sku not in products:
                raise ConfigError(self.path, sku_key, f'unknown SKU {sku!r} (not under products)')
            if sku in skus[:j]:
                raise ConfigError(self.path, sku_key, f'{sku!r} is listed twice')
            if products[sku].sold_by_weight and kind is not PromotionKind.PERCENT_OFF:
                raise ConfigError(self.path, sku_key, f'{sku!r} is sold by weight: {kind.value} counts units '
                                  '(only percent_off takes products sold by weight)')
        return tuple(skus)

    def weekdays(self, mapping: dict, name: str, parent: str) -> frozenset:
        key = self._key(parent, name)
        days = self.sequence(self.field(mapping, name, parent), key)
        for j, day in enumerate(days):
            if day not in WEEKDAYS:
                raise ConfigError(self.path, f'{key}[{j}]', f'unknown day {day!r} ({", ".join(WEEKDAYS)})')
            if day in days[:j]:
                raise ConfigError(self.path, f'{key}[{j}]', f'{day!r} is listed twice')
        return frozenset(WEEKDAYS.index(day) for day in days)

    def clock(self, mapping: dict, name: str, parent: str) -> int:
        """A local time "HH:MM" (00:00 to 24:00), as minutes after midnight."""
        value = self.field(mapping, name, parent)
        key = self._key(parent, name)
        if isinstance(value, int) and not isinstance(value, bool):
            raise ConfigError(self.path, key, f'expected a time "HH:MM" in quotes, got {value!r} '
                              '(YAML reads an unquoted 11:00 as the number 660)')
        match = _CLOCK.fullmatch(value.strip()) if isinstance(value, str) else None
        minutes = int(match[1]) * 60 + int(match[2]) if match else -1
        if not match or int(match[2]) > 59 or not 0 <= minutes <= MINUTES_PER_DAY:
            raise ConfigError(self.path, key, f'expected a time "HH:MM" from 00:00 to 24:00, got {value!r}')
        return minutes

    def timezone(self, mapping: dict, name: str, parent: str) -> str:
        """An IANA time zone name (Europe/Berlin, America/New_York, UTC)."""
        value = self.string(mapping, name, parent)
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            close = difflib.get_close_matches(value, sorted(zoneinfo.available_timezones()), n=1)
            hint = f'did you mean {close[0]!r}?' if close else 'an IANA name such as Europe/Berlin'
            raise ConfigError(self.path, self._key(parent, name), f'unknown time zone {value!r} ({hint})')
        return value

    def string_list(self, mapping: dict, name: str, parent: str) -> list:
        value = mapping.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.path, self._key(parent, name), 'expected a list of strings')
        return value

    def number(self, mapping: dict, name: str, parent: str, minimum=None, exclusive=False) -> float:
        value = self.field(mapping, name, parent)
        key = self._key(parent, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(self.path, key, f'expected a number, got {value!r}')
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            sign = '>' if exclusive else '>='
            raise ConfigError(self.path, key, f'must be {sign} {minimum}, got {value}')
        return float(value)

    def integer(self, mapping: dict, name: str, parent: str, minimum=None, maximum=None) -> int:
        value = self.field(mapping, name, parent)
        key = self._key(parent, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.path, key, f'expected an integer, got {value!r}')
        if minimum is not None and value < minimum:
            raise ConfigError(self.path, key, f'must be >= {minimum}, got {value}')
        if maximum is not None and value > maximum:
            raise ConfigError(self.path, key, f'must be <= {maximum}, got {value}')
        return value

    def point(self, mapping: dict, name: str, parent: str) -> tuple:
        value = self.field(mapping, name, parent)
        key = self._key(parent, name)
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in value)):
            raise ConfigError(self.path, key, f'expected [x, y] in metres, got {value!r}')
        return float(value[0]), float(value[1])

    def chromaticity(self, mapping: dict, name: str, parent: str) -> tuple:
        """[blue, green]: a colour's blue and green shares of blue + green + red."""
        value = self.field(mapping, name, parent)
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0
                           for v in value) or value[0] + value[1] > 1.0):
            raise ConfigError(self.path, self._key(parent, name),
                              f'expected [blue, green] shares of a colour (each 0 to 1, together at most 1), '
                              f'got {value!r}')
        return float(value[0]), float(value[1])

    def facing(self, mapping: dict, name: str, parent: str) -> tuple:
        """A direction on the floor: +x, -x, +y, -y, or degrees counterclockwise from +x."""
        value = self.field(mapping, name, parent)
        if isinstance(value, str) and value.strip() in FACING_WORDS:
            return FACING_WORDS[value.strip()]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(self.path, self._key(parent, name),
                              f'expected +x, -x, +y, -y or degrees counterclockwise from +x, got {value!r}')
        angle = math.radians(value)
        return _tidy(math.cos(angle)), _tidy(math.sin(angle))

    def homography(self, mapping: dict, name: str, parent: str) -> tuple:
        value = self.field(mapping, name, parent)
        key = self._key(parent, name)
        rows = value if isinstance(value, list) else []
        if (len(rows) != 3 or not all(isinstance(r, list) and len(r) == 3 for r in rows)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in rows for v in r)):
            raise ConfigError(self.path, key, 'expected a 3x3 matrix (image pixels to floor metres)')
        return tuple(float(v) for r in rows for v in r)


def _tidy(value: float) -> float:
    """cos/sin of multiples of 90 degrees without rounding dust (cos(90°) is 6e-17)."""
    return float(round(value)) if abs(value - round(value)) < 1e-12 else value


def _kind(value) -> str:
    return 'nothing' if value is None else type(value).__name__
