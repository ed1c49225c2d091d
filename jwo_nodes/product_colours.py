"""`jwo product-colours`: each product's packaging colour, measured from a photo of it,
for the store config's catalogue (Product.colour). Fusion tells products of one weight
apart by the colour of what a hand holds; with the catalogue's colours it can from a
product's first sale on, instead of once it has seen the product taken a few times.

    jwo product-colours config/stores/corner.yaml --photos packshots/      # print them
    jwo product-colours config/stores/corner.yaml --photos packshots/ --write
    jwo product-colours config/stores/corner.yaml --simulated --write

A photo is SKU.jpg or SKU.png (any size, the product in front of a plain backdrop that
shows at the corners); the colour is the median of the pixels unlike the backdrop, as
its blue and green shares (chromaticity, as the held-item reader reads hands: it does
not change with the light's strength). --simulated photographs each product as the
simulator paints its packaging (a JPEG, like a camera's), for the simulated stores.
--write sets each measured product's `colour: [blue, green]` in the store file, whose
products are one `- {sku: ...}` line each; everything else in it stays as it was.
Products without a photo keep what they had (none: fusion learns them from takes); a
photo the product does not stand out in is named, the others still measured (exit 1).
"""
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from jwo_nodes.core.config import ConfigError, load_store_config, parse_store_config, parse_yaml
from jwo_nodes.core.held_item import chromaticity

# A pixel this far (grey levels, Euclidean in BGR) from the backdrop's colour is the
# product's.
_UNLIKE_BACKDROP = 40.0
# At least this share of a photo must be the product.
_LEAST_SHARE = 0.02
_SIMULATED_PX = 64
_BACKDROP_BGR = (235, 235, 235)
_DIGITS = 3


def add_arguments(parser) -> None:
    parser.add_argument('store', help='store config YAML')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--photos', metavar='DIR', help='a photo per product: DIR/SKU.jpg or DIR/SKU.png')
    source.add_argument('--simulated', action='store_true',
                        help='photograph each product as the simulator paints it')
    parser.add_argument('--write', action='store_true', help="set the measured colours in the store file")


def packaging_colour(photo: np.ndarray) -> tuple:
    """(blue, green) chromaticity of the product in a BGR photo: the median of the
    pixels unlike the backdrop (the median colour of the four corners)."""
    h, w = photo.shape[:2]
    corners = np.array([photo[0, 0], photo[0, w - 1], photo[h - 1, 0], photo[h - 1, w - 1]], np.float64)
    backdrop = np.median(corners, axis=0)
    pixels = photo.reshape(-1, 3).astype(np.float64)
    product = pixels[np.linalg.norm(pixels - backdrop, axis=1) > _UNLIKE_BACKDROP]
    if len(product) < _LEAST_SHARE * len(pixels):
        raise ValueError('the product does not stand out from the backdrop')
    return chromaticity(np.median(product, axis=0))


def simulated_photo(sku: str) -> np.ndarray:
    """A JPEG photo of a product as the simulator paints its packaging."""
    from jwo_nodes.core.render import product_colour
    photo = np.full((_SIMULATED_PX, _SIMULATED_PX, 3), _BACKDROP_BGR, np.uint8)
    middle = _SIMULATED_PX // 2
    cv2.circle(photo, (middle, middle), _SIMULATED_PX // 3, product_colour(sku), -1, cv2.LINE_AA)
    _, jpeg = cv2.imencode('.jpg', photo, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def _photo(folder: Path, sku: str):
    for suffix in ('.jpg', '.png'):
        path = folder / f'{sku}{suffix}'
        if path.is_file():
            photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if photo is None:
                raise ValueError(f'{path}: not an image')
            return photo
    return None


def with_colours(text: str, colours: dict, path: str) -> str:
    """The store file's text with each product line's colour set to ``colours`` (sku ->
    (blue, green)); raises ConfigError for a product that is not one flow-style line."""
    lines = text.splitlines(keepends=True)
    remaining = dict(colours)
    for i, line in enumerate(lines):
        found = re.match(r'(\s*-\s*\{\s*sku:\s*)([^,}\s]+)(.*)\}(\s*(#.*)?\n?)$', line)
        if not found or found.group(2) not in remaining:
            continue
        blue, green = remaining.pop(found.group(2))
        fields = re.sub(r',\s*colour:\s*\[[^\]]*\]', '', found.group(3)).rstrip()
        lines[i] = (f'{found.group(1)}{found.group(2)}{fields}, colour: [{blue:.{_DIGITS}f}, {green:.{_DIGITS}f}]}}'
                    f'{found.group(4)}')
    if remaining:
        raise ConfigError(path, 'products', f'{sorted(remaining)[0]} is not written as one '
                          '`- {sku: ...}` line: set its colour: [blue, green] by hand')
    return ''.join(lines)


def run(args) -> int:
    try:
        store = load_store_config(args.store)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    folder = Path(args.photos) if args.photos else None
    if folder is not None and not folder.is_dir():
        print(f'error: {folder}: no such folder', file=sys.stderr)
        return 2
    colours, problems = {}, 0
    for sku in store.products:
        try:
            photo = simulated_photo(sku) if args.simulated else _photo(folder, sku)
            if photo is None:
                print(f'{sku:<16} no photo: learnt from takes')
                continue
            colours[sku] = tuple(round(v, _DIGITS) for v in packaging_colour(photo))
        except ValueError as error:
            print(f'{sku:<16} {error}', file=sys.stderr)
            problems += 1
            continue
        print(f'{sku:<16} blue {colours[sku][0]:.3f} green {colours[sku][1]:.3f}')
    print(f'{len(colours)} of {len(store.products)} products measured', file=sys.stderr)
    if args.write and colours:
        path = Path(args.store)
        try:
            text = with_colours(path.read_text(), colours, args.store)
            parse_store_config(parse_yaml(text), args.store)     # never write a file that does not load
        except ConfigError as error:
            print(f'error: {error}', file=sys.stderr)
            return 2
        path.write_text(text)
        print(f'wrote {len(colours)} colours to {path}', file=sys.stderr)
    return 1 if problems else 0
