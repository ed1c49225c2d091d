"""Clothing and hair colour seen from the ceiling (jwo_nodes.core.appearance): on
rendered frames a shopper's colours hold across light and places and tell two shirts,
or one shirt under two heads of hair, apart."""
import numpy as np
import pytest

from jwo_nodes.core import appearance as look
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.render import CameraRenderer, Figure, Look, RenderSettings


@pytest.fixture
def store(repo):
    return load_store_config(repo / 'config' / 'stores' / 'demo.yaml')


def shopper(person_id, x, y, shirt, hair=(20, 20, 25)):
    return Figure(person_id, x, y, look=Look(radius_m=0.24, height_m=1.75, shirt=shirt,
                                              trousers=(40, 40, 60), hair=hair, skin=(90, 130, 180)))


def test_the_colour_most_samples_share_wins_over_the_floor_around_it():
    red, floor = (30, 40, 200), (176, 184, 188)
    colour = look.dominant([red] * 28 + [floor] * 20)
    assert np.allclose(colour, look.dominant([red]), atol=0.005)


@pytest.mark.parametrize('second', [dict(shirt=(200, 120, 30)), dict(hair=(150, 170, 190))],
                         ids=['another shirt', 'the same shirt, fair hair'])
def test_a_shopper_keeps_their_colours_across_light_and_place_and_differs_from_another(store, second):
    camera = store.cameras['cam_front']
    sampler = look.AppearanceSampler(camera)
    places = [(2.0, 1.3), (5.0, 2.5), (8.0, 3.6)]
    colours = {}
    for who, dress in (('first', dict(shirt=(30, 40, 200))), ('second', {'shirt': (30, 40, 200), **second})):
        for i, (x, y) in enumerate(places):
            renderer = CameraRenderer(store, camera, RenderSettings(seed=i, light_min=0.5 + 0.2 * i,
                                                                    light_max=0.6 + 0.2 * i))
            frame = renderer.render([shopper('a', x, y, **dress)], t_s=7.0 * i).image
            colours.setdefault(who, []).append(sampler.colours(frame, [(x, y)])[0])
    for seen in colours.values():      # the tracker's reid_accept: still them
        assert all(look.distance(seen[0], other) < 0.25 for other in seen[1:])
    first, second = colours.values()
    assert min(look.distance(a, b) for a in first for b in second) > 0.5


def test_a_shopper_mostly_outside_the_frame_has_no_colour(store):
    camera = store.cameras['cam_front']
    frame = np.zeros((camera.height, camera.width, 3), np.uint8)
    assert look.AppearanceSampler(camera).colours(frame, [(5.0, 4.6), (5.0, 2.0)])[0] is None
    assert look.distance(None, (0.3, 0.3, 4.0, 0.3, 0.3, 3.0)) is None
