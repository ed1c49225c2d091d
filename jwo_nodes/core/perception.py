"""One time step's detections, from camera pixels to the floor: what the vision tracker
feeds its Tracker, shared by vision_tracker_node and `jwo vision-check`.

Pure numpy/cv2: no rclpy, no clocks.
"""
import numpy as np

from jwo_nodes.core.appearance import SHOULDER_HEIGHT_M
from jwo_nodes.core.config import Camera, StoreConfig
from jwo_nodes.core.detector import HAND
from jwo_nodes.core.frame_source import nadir, pixels_to_floor
from jwo_nodes.core.tracker import FloorDetection


# The arm along a line from a hand to a shopper's shoulders is theirs when this share
# of the line shows their clothes, at least ARM_MARGIN more than any other shopper's
# line (a shirt near the floor's or the shelf's colour shows along every line).
ARM_SHARE = 0.5
ARM_MARGIN = 0.2
# Shoppers whose feet are farther than this from a hand (placed over the floor) cannot
# be reaching it.
ARM_REACH_M = 1.2
# A hand in a bin whose height the store does not give is about this high (metres).
UNKNOWN_HAND_HEIGHT_M = 1.05
# A hand is taken to be at most this share of the camera's height up.
_LOWEST_CAMERA = 0.9


class HandParallax:
    """Where a hand a camera sees is over the floor. A ceiling camera H metres up sees a
    hand z metres up displaced away from the point under it by z / (H - z) of its
    distance (H from the appearance's torso_lean: shoulders SHOULDER_HEIGHT_M up appear
    displaced by that share): about 0.4 m for a hand at a 1.8 m board 3 m out. A hand is
    taken to be as high as the bin it appears nearest to (a hand far from every bin is
    not in one, and where it is matters less)."""

    def __init__(self, store: StoreConfig, camera: Camera, torso_lean: float):
        self.nadir = nadir(camera)
        # 1 / H; 0 for a lean of 0 (a camera so high nothing is displaced).
        self._per_camera_height = torso_lean / (SHOULDER_HEIGHT_M * (1.0 + torso_lean))
        bins = list(store.bins)
        heights = [store.hand_height(b) for b in bins]
        self._heights = np.array([UNKNOWN_HAND_HEIGHT_M if z is None else z for z in heights]).reshape(-1, 1)
        points = np.array([store.shelf_point(b) for b in bins], dtype=np.float64).reshape(-1, 2)
        self._seen = self.nadir + (points - self.nadir) * self._raise(self._heights)

    def _raise(self, heights: np.ndarray) -> np.ndarray:
        """H / (H - z), for a hand below the camera."""
        return 1.0 / (1.0 - np.minimum(heights * self._per_camera_height, _LOWEST_CAMERA))

    def on_floor(self, seen_points) -> np.ndarray:
        """Floor points (N x 2, metres) as the camera sees hands -> the floor under them."""
        seen = np.asarray(seen_points, dtype=np.float64).reshape(-1, 2)
        if not len(seen) or not len(self._seen):
            return seen
        nearest = np.argmin(np.linalg.norm(seen[:, None, :] - self._seen[None, :, :], axis=2), axis=1)
        return self.nadir + (seen - self.nadir) / self._raise(self._heights[nearest])


def floor_detections(cameras: list, frames: list, results: list, samplers: dict, reader=None,
                     parallaxes: dict = None) -> tuple:
    """Cameras, their frames and the detector's results for them -> (shoppers, hands) as
    FloorDetections in floor metres; shoppers carry their colour (``samplers``: camera
    id -> AppearanceSampler), hands what they hold when there is a HeldItemReader and
    the feet of the shopper whose sleeve reaches them, where one does (``arm``). Hands
    are placed over the floor under them where ``parallaxes`` (camera id ->
    HandParallax) are given, else where the camera sees them. Points that do not
    project to the floor are dropped."""
    shoppers, hands = [], []
    for camera, frame, found in zip(cameras, frames, results):
        if not found:
            continue
        floor = pixels_to_floor(camera, [(d.u, d.v) for d in found])
        finite = [bool(np.isfinite(x) and np.isfinite(y)) for x, y in floor]
        feet = [(d, p) for d, p, ok in zip(found, floor, finite) if ok and d.kind != HAND]
        colours = samplers[camera.id].colours(frame, [p for _, p in feet]) if feet else []
        for (d, (x, y)), colour in zip(feet, colours):
            shoppers.append(FloorDetection(float(x), float(y), d.score, camera.id, colour))
        seen = [(d, p) for d, p, ok in zip(found, floor, finite) if ok and d.kind == HAND]
        if seen and parallaxes:
            seen = list(zip([d for d, _ in seen], parallaxes[camera.id].on_floor([p for _, p in seen])))
        items = reader.read(frame, [(d.u, d.v) for d, _ in seen]) if reader and seen else [None] * len(seen)
        for (d, (x, y)), item in zip(seen, items):
            arm = _arm(samplers[camera.id], frame, d, (x, y), [p for _, p in feet], colours)
            hands.append(FloorDetection(float(x), float(y), d.score, camera.id, item=item, arm=arm))
    return shoppers, hands


def _arm(sampler, frame, hand, hand_floor, feet: list, colours: list):
    """The feet (floor metres) of the one shopper in this frame whose sleeve reaches the
    hand, or None when no shopper's does or two might."""
    near = [i for i, p in enumerate(feet) if np.hypot(p[0] - hand_floor[0], p[1] - hand_floor[1]) <= ARM_REACH_M]
    if not near:
        return None
    shares = sampler.arm_affinities(frame, (hand.u, hand.v), [feet[i] for i in near], [colours[i] for i in near])
    ranked = sorted(((share, i) for share, i in zip(shares, near) if share is not None), reverse=True)
    if not ranked or ranked[0][0] < ARM_SHARE or (len(ranked) > 1 and ranked[0][0] - ranked[1][0] < ARM_MARGIN):
        return None
    x, y = feet[ranked[0][1]]
    return float(x), float(y)
