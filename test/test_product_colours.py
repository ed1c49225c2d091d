"""`jwo product-colours`: packaging colours measured from photos into the store config's
catalogue, the file otherwise untouched; the shipped real-store catalogue is what the
simulator's packaging measures."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from jwo_nodes.cli import main
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.held_item import chromaticity
from jwo_nodes.core.render import product_colour

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / 'config/stores/demo.yaml'


def photo(bgr, size=(90, 120), backdrop=(240, 238, 236)) -> np.ndarray:
    """A product (a filled ellipse of one colour, lightly shaded) in front of a backdrop."""
    image = np.full((*size, 3), backdrop, np.uint8)
    cv2.ellipse(image, (size[1] // 2, size[0] // 2), (size[1] // 4, size[0] // 3), 0, 0, 360, bgr, -1)
    return image


def demo_store_and_photos(tmp_path, photos: dict) -> tuple:
    """A copy of the demo store and a folder of photos (file name -> image)."""
    store = tmp_path / 'store.yaml'
    shutil.copyfile(DEMO, store)
    folder = tmp_path / 'photos'
    folder.mkdir()
    for name, image in photos.items():
        cv2.imwrite(str(folder / name), image)
    return store, folder


def test_photos_set_the_colours_of_the_products_they_show_and_nothing_else(tmp_path, capsys):
    store, photos = demo_store_and_photos(tmp_path, {'COLA-330.png': photo((40, 40, 200)),
                                                     'WATER-500.jpg': photo((200, 150, 90), size=(200, 140))})
    assert main(['product-colours', str(store), '--photos', str(photos), '--write']) == 0
    out = capsys.readouterr().out
    assert 'COLA-330' in out and 'CHIPS-150        no photo: learnt from takes' in out
    products = load_store_config(store).products
    assert products['COLA-330'].colour == pytest.approx(chromaticity((40, 40, 200)), abs=0.005)
    assert products['WATER-500'].colour == pytest.approx(chromaticity((200, 150, 90)), abs=0.01)
    assert sum(p.colour is not None for p in products.values()) == 2
    # Every other line, comments included, as it was; measuring again changes nothing.
    before, after = DEMO.read_text().splitlines(), store.read_text().splitlines()
    assert [i for i, (a, b) in enumerate(zip(before, after)) if a != b] == [
        i for i, line in enumerate(before) if 'name:' in line and ('COLA-330,' in line or 'WATER-500,' in line)]
    written = store.read_text()
    assert main(['product-colours', str(store), '--photos', str(photos), '--write']) == 0
    assert store.read_text() == written


def test_a_photo_the_product_does_not_stand_out_in_is_named_and_nothing_is_written(tmp_path, capsys):
    store, photos = demo_store_and_photos(tmp_path, {'COLA-330.png': photo((238, 238, 238))})
    assert main(['product-colours', str(store), '--photos', str(photos), '--write']) == 1
    assert 'COLA-330         the product does not stand out from the backdrop' in capsys.readouterr().err
    assert store.read_text() == DEMO.read_text()
    assert main(['product-colours', str(store), '--photos', str(tmp_path / 'none')]) == 2


def test_a_product_not_written_on_one_line_is_named_and_the_file_kept(tmp_path, capsys):
    store = tmp_path / 'store.yaml'
    text = DEMO.read_text().replace(
        '  - {sku: COLA-330,   name: Cola 330 ml can,        unit_grams: 350.0, tolerance_grams: 6.0, '
        'price_cents: 149}',
        '  - sku: COLA-330\n    name: Cola 330 ml can\n    unit_grams: 350.0\n    tolerance_grams: 6.0\n'
        '    price_cents: 149')
    assert text != DEMO.read_text()
    store.write_text(text)
    assert main(['product-colours', str(store), '--simulated', '--write']) == 2
    assert 'products: COLA-330 is not written as one `- {sku: ...}` line' in capsys.readouterr().err
    assert store.read_text() == text


def test_the_real_store_catalogue_is_what_the_simulated_packaging_measures(tmp_path):
    """config/stores/corner.yaml's colours came from `jwo product-colours --simulated
    --write`; they stay what it measures, and near the colour the simulator paints."""
    shipped = REPO / 'config/stores/corner.yaml'
    store = tmp_path / 'corner.yaml'
    shutil.copyfile(shipped, store)
    assert main(['product-colours', str(store), '--simulated', '--write']) == 0
    assert store.read_text() == shipped.read_text()
    for sku, product in load_store_config(shipped).products.items():
        assert product.colour == pytest.approx(chromaticity(product_colour(sku)), abs=0.01), sku
