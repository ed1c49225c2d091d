"""What a shopper looks like from the ceiling, reduced to three numbers the tracker
can compare frame to frame: the colour of the clothes around the shoulders.

A ceiling camera sees a standing person's shoulders displaced from the feet, away from
the point under the camera (the nadir), by about ``torso_lean`` times the feet's floor
distance from it (shoulder height / (camera height - shoulder height): 0.1 for a
camera at 14 m above 1.3 m shoulders in the simulator, larger for lower cameras). The
colour is the dominant one of pixels sampled on rings around that point (the shirt
covers most of them; the head, an arm, a neighbour or the floor where the feet were
placed a little off cover the rest): the sample with the most others of a like colour,
averaged with them. It is kept as chromaticity (blue and green shares) and log
brightness: the chromaticity does not change when the light dims or brightens, which
happens across the frame and over the day.

No biometrics: a track's colour lives only in the tracker's memory while the shopper
is in the store, and is never published.

Pure numpy/cv2: no rclpy, no clocks.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from jwo_nodes.core.config import Camera
from jwo_nodes.core.frame_source import floor_to_pixels, pixels_to_floor

_RING_SAMPLES = 16
_LIKE = 0.15               # samples closer than this (distance()) are of one colour


@dataclass(frozen=True)
class AppearanceSettings:
    torso_lean: float = 0.1
    rings_m: tuple = (0.08, 0.13, 0.18)
    min_inside: float = 1 / 3    # a smaller share of the samples inside the frame: no colour


class AppearanceSampler:
    """Colours of detections in one camera's frames."""

    def __init__(self, camera: Camera, settings: AppearanceSettings = AppearanceSettings()):
        self.camera = camera
        self.settings = settings
        self.nadir = pixels_to_floor(camera, [(camera.width / 2, camera.height / 2)])[0]
        angles = np.linspace(0, 2 * np.pi, _RING_SAMPLES, endpoint=False)
        unit = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        self._ring = np.concatenate([radius * unit for radius in settings.rings_m])

    def colours(self, frame: np.ndarray, floor_points) -> list:
        """One colour (or None) per floor point (metres) of a detected shopper's feet."""
        points = np.asarray(floor_points, dtype=np.float64).reshape(-1, 2)
        if not len(points):
            return []
        torso = points + self.settings.torso_lean * (points - self.nadir)
        samples = (torso[:, None, :] + self._ring[None, :, :]).reshape(-1, 2)
        pixels = np.round(floor_to_pixels(self.camera, samples)).reshape(len(points), len(self._ring), 2)
        height, width = frame.shape[:2]
        out = []
        for ring in pixels:
            inside = ((ring[:, 0] >= 0) & (ring[:, 0] < width) & (ring[:, 1] >= 0) & (ring[:, 1] < height))
            if inside.mean() < self.settings.min_inside:
                out.append(None)
                continue
            u, v = ring[inside, 0].astype(int), ring[inside, 1].astype(int)
            out.append(dominant(frame[v, u]))
        return out


def dominant(bgr_samples) -> tuple:
    """The colour most of the BGR samples (N x 3) share: (blue share, green share, log
    brightness)."""
    bgr = np.asarray(bgr_samples, dtype=np.float64).reshape(-1, 3)
    total = bgr.sum(axis=1) + 3.0
    described = np.stack([(bgr[:, 0] + 1.0) / total, (bgr[:, 1] + 1.0) / total, np.log(total / 3.0)], axis=1)
    like = _distances(described, described) < _LIKE
    best = int(np.argmax(like.sum(axis=1)))
    return tuple(float(v) for v in described[like[best]].mean(axis=0))


def distance(a: Optional[tuple], b: Optional[tuple]) -> Optional[float]:
    """How different two colours look, about 0 (same shirt) to 1 (unlike); None when
    either is unknown."""
    if a is None or b is None:
        return None
    return float(distances([a], [b])[0, 0])


def distances(a: list, b: list) -> np.ndarray:
    """distance() of every colour of ``a`` to every colour of ``b`` (all known), as a
    len(a) x len(b) array."""
    return _distances(np.asarray(a, dtype=np.float64).reshape(-1, 3),
                      np.asarray(b, dtype=np.float64).reshape(-1, 3))


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Brightness counts for little: the light changes.
    chroma = np.linalg.norm(a[:, None, :2] - b[None, :, :2], axis=2)
    return 4.0 * chroma + 0.25 * np.abs(a[:, None, 2] - b[None, :, 2])
