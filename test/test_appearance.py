"""Clothing colour seen from the ceiling (jwo_nodes.core.appearance): on rendered frames
a shopper's colour holds across light and places and tells two shirts apart."""
import numpy as np
import pytest

from jwo_nodes.core import appearance as look
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.render import CameraRenderer, Figure, Look, RenderSettings


@pytest.fixture
def store(repo):
    return load_store_config(repo / 'config' / 'stores' / 'demo.yaml')


def shopper(person_id, x, y, shirt):
    return Figure(person_id, x, y, look=Look(radius_m=0.24, height_m=1.75, shirt=shirt,
                                              trousers=(40, 40, 60), hair=(20, 20, 25), skin=(90, 130, 180)))


def test_the_colour_most_samples_share_wins_over_the_floor_around_it():
    red, floor = (30, 40, 200), (176, 184, 188)
    colour = look.dominant([red] * 28 + [floor] * 20)
    assert look.distance(colour, look.dominant([red])) < 0.01


def test_a_shirt_keeps_its_colour_across_light_and_place_and_differs_from_another(store):
    camera = store.cameras['cam_front']
    sampler = look.AppearanceSampler(camera)
    places = [(2.0, 1.3), (5.0, 2.5), (8.0, 3.6)]
    colours = {}
    for shirt in ((30, 40, 200), (200, 120, 30)):
        for i, (x, y) in enumerate(places):
            renderer = CameraRenderer(store, camera, RenderSettings(seed=i, light_min=0.5 + 0.2 * i,
                                                                    light_max=0.6 + 0.2 * i))
            frame = renderer.render([shopper('a', x, y, shirt)], t_s=7.0 * i).image
            colours.setdefault(shirt, []).append(sampler.colours(frame, [(x, y)])[0])
    for seen in colours.values():
        assert all(look.distance(seen[0], other) < 0.2 for other in seen[1:])
    first, second = colours.values()
    assert min(look.distance(a, b) for a in first for b in second) > 0.5


def test_a_shopper_mostly_outside_the_frame_has_no_colour(store):
    camera = store.cameras['cam_front']
    frame = np.zeros((camera.height, camera.width, 3), np.uint8)
    assert look.AppearanceSampler(camera).colours(frame, [(5.0, 4.6), (5.0, 2.0)])[0] is None
    assert look.distance(None, (0.3, 0.3, 4.0)) is None
