"""What a shopper looks like from the ceiling, reduced to six numbers the tracker can
compare frame to frame: the colour of the clothes around the shoulders and the colour
on top of the head (hair, a cap).

A ceiling camera sees a standing person's shoulders displaced from the feet, away from
the point under the camera (the nadir), by about ``torso_lean`` times the feet's floor
distance from it (shoulder height / (camera height - shoulder height): 0.1 for a
camera at 14 m above 1.3 m shoulders in the simulator, larger for lower cameras), and
the top of the head a quarter farther (``head_lean_share``). The clothes' colour is the
dominant one of pixels sampled on rings around the shoulder point (the shirt covers
most of them; the head, an arm, a neighbour or the floor where the feet were placed a
little off cover the rest): the sample with the most others of a like colour,
averaged with them; the head's is the dominant one of a few pixels around the head
point. Each is kept as chromaticity (blue and green shares) and log brightness: the
chromaticity does not change when the light dims or brightens, which happens across
the frame and over the day. Shirts alone leave many look-alikes in a store of twenty
shoppers; hair and headwear tell most of them apart.

No biometrics: a track's colours live only in the tracker's memory while the shopper
is in the store, and are never published.

Pure numpy/cv2: no rclpy, no clocks.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from jwo_nodes.core.config import Camera
from jwo_nodes.core.frame_source import floor_to_pixels, nadir, pixels_to_floor

_RING_SAMPLES = 16
# Where the torso_lean of a camera is measured: shoulders about this high (metres).
SHOULDER_HEIGHT_M = 1.3
_ARM_SAMPLES = 12
_LIKE = 0.15               # samples closer than this (in a clothes distance) are of one colour
# The clothes' brightness counts for little: the light changes.
_CLOTHES_BRIGHTNESS = 0.25
# Hair weighs half as much as the clothes (fewer pixels); below this log brightness
# (a mean level of about 30 of 255) it has no colour to speak of.
_HEAD_WEIGHT = 0.5
_DARK_LOG = 3.4


@dataclass(frozen=True)
class AppearanceSettings:
    torso_lean: float = 0.1
    rings_m: tuple = (0.08, 0.13, 0.18)
    head_lean_share: float = 1.25      # the head point's lean against the shoulders'
    head_ring_m: float = 0.04
    min_inside: float = 1 / 3    # a smaller share of the samples inside the frame: no colour
    # The stretch of the hand-to-shoulders line where a sleeve shows: past the hand,
    # short of the widest torso (whose own clothes cover the line of any shopper
    # however far the hand), at least min_sleeve of the line long; how many pixels to
    # either side of it a point may find the sleeve (the detector's hand point is a
    # few pixels off); and how far beside a sleeve the background shows.
    arm_from: float = 0.15
    torso_m: float = 0.3
    min_sleeve: float = 0.15
    arm_width_px: int = 6
    sleeve_m: float = 0.08


class AppearanceSampler:
    """Colours of detections in one camera's frames."""

    def __init__(self, camera: Camera, settings: AppearanceSettings = AppearanceSettings()):
        self.camera = camera
        self.settings = settings
        self.nadir = nadir(camera)
        angles = np.linspace(0, 2 * np.pi, _RING_SAMPLES, endpoint=False)
        unit = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        self._ring = np.concatenate([radius * unit for radius in settings.rings_m])
        self._head = np.concatenate([[[0.0, 0.0]], settings.head_ring_m * unit[::2]])

    def colours(self, frame: np.ndarray, floor_points) -> list:
        """One colour (or None) per floor point (metres) of a detected shopper's feet:
        the clothes' three numbers, then the head's."""
        points = np.asarray(floor_points, dtype=np.float64).reshape(-1, 2)
        if not len(points):
            return []
        s = self.settings
        torso = points + s.torso_lean * (points - self.nadir)
        head = points + s.torso_lean * s.head_lean_share * (points - self.nadir)
        n_ring = len(self._ring)
        samples = np.concatenate([(torso[:, None, :] + self._ring[None, :, :]),
                                  (head[:, None, :] + self._head[None, :, :])], axis=1).reshape(-1, 2)
        pixels = np.round(floor_to_pixels(self.camera, samples)).reshape(len(points), -1, 2)
        height, width = frame.shape[:2]
        out = []
        for person in pixels:
            inside = ((person[:, 0] >= 0) & (person[:, 0] < width) & (person[:, 1] >= 0) & (person[:, 1] < height))
            if inside[:n_ring].mean() < s.min_inside or not inside[n_ring:].any():
                out.append(None)
                continue
            parts = []
            for part in (slice(0, n_ring), slice(n_ring, None)):
                u, v = person[part][inside[part], 0].astype(int), person[part][inside[part], 1].astype(int)
                parts.extend(dominant(frame[v, u]))
            out.append(tuple(parts))
        return out

    def arm_affinities(self, frame: np.ndarray, hand_pixel, floor_points, colours) -> list:
        """How much of the line from a hand (image pixel) to each shopper's shoulders
        (feet floor points, with their colours from ``colours``) shows that shopper's
        sleeve: the share of points along it, from ``arm_from`` of the way to where the
        shopper's torso (``torso_m``) may begin, where a pixel within ``arm_width_px``
        across is of the clothes' colour and the pixels ``sleeve_m`` to either side of
        it are not (a sleeve is a narrow bar; a floor or shelf of the clothes' colour is
        not evidence). A sleeve reaching the hand makes it near 1 for its wearer; the
        floor or shelf between a hand and somebody else's shoulders makes it near 0 for
        them. None where the shopper has no colour, stands too close to the hand to
        tell, or the line leaves the frame."""
        points = np.asarray(floor_points, dtype=np.float64).reshape(-1, 2)
        if not len(points):
            return []
        s = self.settings
        hand = np.asarray(hand_pixel, dtype=np.float64).reshape(2)
        hand_floor = pixels_to_floor(self.camera, [hand])[0]
        shoulders_floor = points + s.torso_lean * (points - self.nadir)
        shoulders = floor_to_pixels(self.camera, shoulders_floor)
        height, width = frame.shape[:2]
        out = []
        for shoulder, shoulder_floor, colour in zip(shoulders, shoulders_floor, colours):
            reach_m = float(np.hypot(*(shoulder_floor - hand_floor)))
            along = shoulder - hand
            length_px = float(np.hypot(*along))
            sleeve_to = 1.0 - s.torso_m / reach_m if reach_m > 0 else 0.0
            if (colour is None or not np.isfinite(length_px) or length_px < 1.0
                    or sleeve_to - s.arm_from < s.min_sleeve):
                out.append(None)
                continue
            gap = max(1, int(round(s.sleeve_m * length_px / reach_m)))
            offsets = np.arange(-s.arm_width_px - gap, s.arm_width_px + gap + 1)
            across = np.array([-along[1], along[0]]) / length_px
            shares = np.linspace(s.arm_from, sleeve_to, _ARM_SAMPLES)
            pixels = np.round(hand + shares[:, None, None] * along + offsets[None, :, None] * across)
            u, v = pixels[..., 0].astype(int), pixels[..., 1].astype(int)
            if u.min() < 0 or v.min() < 0 or u.max() >= width or v.max() >= height:
                out.append(None)
                continue
            described = _described(frame[v.ravel(), u.ravel()])
            like = (_colour_distances(described, np.asarray(colour[:3], dtype=np.float64).reshape(1, 3),
                                      _CLOTHES_BRIGHTNESS) < _LIKE).reshape(u.shape)
            bar = like[:, gap:-gap] & ~like[:, :-2 * gap] & ~like[:, 2 * gap:]
            out.append(float(np.mean(bar.any(axis=1))))
        return out


def dominant(bgr_samples) -> tuple:
    """The colour most of the BGR samples (N x 3) share: (blue share, green share, log
    brightness)."""
    described = _described(bgr_samples)
    like = _colour_distances(described, described, _CLOTHES_BRIGHTNESS) < _LIKE
    best = int(np.argmax(like.sum(axis=1)))
    return tuple(float(v) for v in described[like[best]].mean(axis=0))


def _described(bgr_samples) -> np.ndarray:
    """BGR samples (N x 3) -> N x (blue share, green share, log brightness)."""
    bgr = np.asarray(bgr_samples, dtype=np.float64).reshape(-1, 3)
    total = bgr.sum(axis=1) + 3.0
    return np.stack([(bgr[:, 0] + 1.0) / total, (bgr[:, 1] + 1.0) / total, np.log(total / 3.0)], axis=1)


def distance(a: Optional[tuple], b: Optional[tuple]) -> Optional[float]:
    """How different two shoppers look, about 0 (same clothes and hair) to 1 and more
    (unlike); None when either is unknown."""
    if a is None or b is None:
        return None
    return float(distances([a], [b])[0, 0])


def clothes_distance(a: Optional[tuple], b: Optional[tuple]) -> Optional[float]:
    """distance() of the clothes alone: what frame-to-frame matching compares, where a
    neighbour's head beside the small head sample would count against the right match
    in a crowd (a track's colours learnt from lone frames compare the heads too)."""
    if a is None or b is None:
        return None
    return float(_colour_distances(np.asarray(a, dtype=np.float64).reshape(-1, 6)[:, :3],
                                   np.asarray(b, dtype=np.float64).reshape(-1, 6)[:, :3], _CLOTHES_BRIGHTNESS)[0, 0])


def distances(a: list, b: list) -> np.ndarray:
    """distance() of every colour of ``a`` to every colour of ``b`` (all known), as a
    len(a) x len(b) array."""
    return _distances(np.asarray(a, dtype=np.float64).reshape(-1, 6),
                      np.asarray(b, dtype=np.float64).reshape(-1, 6))


def _colour_distances(a: np.ndarray, b: np.ndarray, brightness: float) -> np.ndarray:
    chroma = np.linalg.norm(a[:, None, :2] - b[None, :, :2], axis=2)
    return 4.0 * chroma + brightness * np.abs(a[:, None, 2] - b[None, :, 2])


def _head_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hair against hair: its brightness against the clothes' (both lit by the same
    light, so the difference holds where the light changes), and its chromaticity
    only where both are bright enough to have one (black hair's is noise)."""
    relative = np.abs((a[:, None, 5] - a[:, None, 2]) - (b[None, :, 5] - b[None, :, 2]))
    chroma = np.linalg.norm(a[:, None, 3:5] - b[None, :, 3:5], axis=2)
    coloured = np.clip(np.minimum(a[:, None, 5], b[None, :, 5]) - _DARK_LOG, 0.0, 1.0)
    return relative + 4.0 * chroma * coloured


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _colour_distances(a[:, :3], b[:, :3], _CLOTHES_BRIGHTNESS) + _HEAD_WEIGHT * _head_distances(a, b)
