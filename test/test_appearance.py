"""Clothing and hair colour seen from the ceiling (jwo_nodes.core.appearance): on
rendered frames a shopper's colours hold across light and places and tell two shirts,
or one shirt under two heads of hair, apart; a sleeve tells whose hand is in a bin, and
a hand at a shelf is placed back over the floor under it (jwo_nodes.core.perception)."""
import dataclasses

import numpy as np
import pytest

from jwo_nodes.core import appearance as look
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.detector import HAND, SHOPPER, Detection
from jwo_nodes.core.frame_source import pixels_to_floor
from jwo_nodes.core.perception import HandParallax, floor_detections
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


FLOOR_GREY = (176, 184, 188)


def shelf_scene(repo, wearer_shirt, neighbour_shirt):
    """corner_medium-0 at 45.6 s: a shopper reaches into F1-B3 past a neighbour who
    stands nearer the hand (the take went to the neighbour before sleeves counted)."""
    store = load_store_config(repo / 'config' / 'stores' / 'corner.yaml')
    camera = store.cameras['cam_front']
    wearer = dataclasses.replace(shopper('wearer', 5.70, 2.91, wearer_shirt), hand=(5.34, 3.70))
    neighbour = shopper('neighbour', 5.08, 2.93, neighbour_shirt)
    rendered = CameraRenderer(store, camera, RenderSettings(seed=4)).render([wearer, neighbour], t_s=3.0)
    sampler = look.AppearanceSampler(camera)
    feet = [(5.70, 2.91), (5.08, 2.93)]
    (_, hand_u, hand_v), = rendered.hands
    return camera, rendered, sampler, feet, (hand_u, hand_v)


def test_the_sleeve_reaching_a_hand_is_its_wearers_not_a_nearer_neighbours(repo):
    camera, rendered, sampler, feet, hand = shelf_scene(repo, (60, 200, 70), (30, 30, 40))
    # The detector's hand point is a few pixels off.
    for off in [(0, 0), (4, -4), (-3, 5)]:
        point = (hand[0] + off[0], hand[1] + off[1])
        wearer, neighbour = sampler.arm_affinities(rendered.image, point, feet, sampler.colours(rendered.image, feet))
        assert wearer > 0.8 and neighbour < 0.2
    assert arm_of_the_hand(camera, rendered, sampler, hand) == pytest.approx(feet[0], abs=0.02)


def arm_of_the_hand(camera, rendered, sampler, hand):
    found = [Detection(SHOPPER, *feet, 0.9) for _, *feet in rendered.people] + [Detection(HAND, *hand, 0.9)]
    _, hands = floor_detections([camera], [rendered.image], [found], {camera.id: sampler})
    return hands[0].arm


def test_a_shirt_the_floors_colour_is_no_sleeve_along_the_floor(repo):
    """The line from the hand to a floor-grey neighbour crosses grey floor: little of it
    counts as their sleeve. The floor-grey wearer's own sleeve is no evidence either:
    nobody's arm is told."""
    camera, rendered, sampler, feet, hand = shelf_scene(repo, (60, 200, 70), FLOOR_GREY)
    wearer, neighbour = sampler.arm_affinities(rendered.image, hand, feet, sampler.colours(rendered.image, feet))
    assert wearer > 0.8 and neighbour < 0.5
    assert arm_of_the_hand(camera, rendered, sampler, hand) == pytest.approx(feet[0], abs=0.02)
    camera, rendered, sampler, feet, hand = shelf_scene(repo, FLOOR_GREY, (30, 30, 40))
    assert arm_of_the_hand(camera, rendered, sampler, hand) is None


def test_a_hand_at_a_top_shelf_is_placed_back_over_the_floor_under_it(repo):
    """Far from the camera's nadir a hand at a 1.7 m board appears half a metre further
    out than the bin it is in: more than the zone fusion looks for hands in."""
    store = load_store_config(repo / 'config' / 'stores' / 'corner.yaml')
    camera = store.cameras['cam_front']
    hand = store.shelf_point('C5-B1')
    reaching = dataclasses.replace(shopper('a', hand[0] - 0.6, hand[1], (60, 200, 70)), hand=hand,
                                   hand_height_m=store.hand_height('C5-B1'))
    (_, u, v), = CameraRenderer(store, camera).render([reaching]).hands
    seen = pixels_to_floor(camera, [(u, v)])
    assert np.hypot(*(seen[0] - hand)) > 0.4
    placed = HandParallax(store, camera, look.AppearanceSettings().torso_lean).on_floor(seen)
    assert np.hypot(*(placed[0] - hand)) < 0.08
