"""Rendered camera frames of the simulated store, with their ground truth in pixels.

Each configured camera looks down from the ceiling; its homography maps image pixels to
the floor (metres). A frame shows the floor, the shelves along the walls, the gate, and
the shoppers as seen from above: a shadow at the feet, legs and torso leaning away from
the camera's nadir (the higher a point, the farther out it appears), a head, and, while
a shopper takes from or puts back on a bin, an arm reaching to the shelf with a hand at
the bin. Shoppers differ in size and clothing (seeded per person), hide each other,
the light changes over time and across the frame, the sensor adds noise, and frames
can be dropped (seeded per camera and frame). A product shows in the packaging colour
of its SKU, on the shelf and in a hand: from the moment a take lifts it until the arm
is back, and from the start of a put-back's reach until it is down.

``CameraRenderer.render`` returns the BGR image and the ground truth: each visible
shopper's floor point (feet) and each visible hand, in pixels of this camera.
Pure numpy/cv2: no rclpy, no clocks.
"""
import functools
import math
import zlib
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from jwo_nodes.core.config import SHELF_DEPTH_M, SHELF_FACE_M, Camera, StoreConfig
from jwo_nodes.core.frame_source import floor_to_pixels, homography, nadir, pixels_to_floor

NS = 1_000_000_000
# A hand is at the bin this long before the weight starts changing / after it settled.
REACH_BEFORE_S = 0.35
REACH_AFTER_S = 0.25
# Hands are at about this share of a person's height (when the shelf's level is not known).
HAND_HEIGHT = 0.62
# A product held in a hand shows as a disc this wide (metres) in the hand's middle.
ITEM_RADIUS_M = 0.04
_SEGMENTS = 20
_ANGLES = np.linspace(0, 2 * np.pi, _SEGMENTS, endpoint=False)
_COS, _SIN = np.cos(_ANGLES), np.sin(_ANGLES)
_NOISE_PAD = 64


def _seed(*parts) -> int:
    return zlib.crc32('/'.join(str(p) for p in parts).encode())


@dataclass(frozen=True)
class Look:
    """How one shopper looks from above."""

    radius_m: float          # half the shoulder width
    height_m: float
    shirt: tuple             # BGR
    trousers: tuple
    hair: tuple
    skin: tuple


_HAIR = ((20, 20, 25), (30, 50, 80), (40, 80, 130), (150, 170, 190), (60, 60, 60), (90, 120, 160))
_SKIN = ((60, 90, 140), (90, 130, 180), (120, 160, 210), (150, 190, 230), (40, 60, 100))


@functools.lru_cache(maxsize=4096)   # drawn once per person, not per frame and camera
def person_look(seed: int, person_id: str) -> Look:
    rng = np.random.default_rng(_seed('look', seed, person_id))
    shirt = tuple(int(v) for v in rng.integers(0, 256, 3))
    trousers = tuple(int(v) for v in rng.integers(10, 140, 3))
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    hair = skin if rng.random() < 0.12 else _HAIR[int(rng.integers(len(_HAIR)))]
    return Look(radius_m=float(rng.uniform(0.19, 0.29)), height_m=float(rng.uniform(1.45, 1.95)),
                shirt=shirt, trousers=trousers, hair=hair, skin=skin)


def product_colour(sku: str) -> tuple:
    """The packaging colour (BGR) a SKU shows, on the shelf and in a hand."""
    h = zlib.crc32(sku.encode())
    return 60 + h % 160, 60 + (h >> 8) % 160, 60 + (h >> 16) % 160


@dataclass(frozen=True)
class Figure:
    """One shopper at one instant: floor point (metres) and, while reaching, the floor
    point of the hand (and its height above the floor, metres, when known)."""

    person_id: str
    x: float
    y: float
    hand: Optional[tuple] = None
    look: Optional[Look] = None
    hand_height_m: Optional[float] = None
    item: Optional[str] = None     # SKU of the product in the hand


@dataclass(frozen=True)
class RenderSettings:
    seed: int = 0
    # How far a point at a person's full height appears shifted away from the nadir,
    # as a share of its floor distance from the nadir.
    lean: float = 0.12
    noise_sigma: float = 4.0       # sensor noise, grey levels (1 sigma)
    light_min: float = 0.65        # overall gain range over time
    light_max: float = 1.2
    light_period_s: float = 40.0   # slow light changes
    light_step_s: float = 15.0     # lights switching: a new level this often (0: never)
    gradient: float = 0.25         # light falling off across the frame
    drop_rate: float = 0.0         # share of frames lost


@dataclass
class RenderedFrame:
    image: np.ndarray              # BGR uint8, camera.height x camera.width
    people: list                   # (person_id, u, v): feet of visible shoppers
    hands: list                    # (person_id, u, v): visible hands


class CameraRenderer:
    """Renders one camera's frames."""

    def __init__(self, store: StoreConfig, camera: Camera, settings: RenderSettings = RenderSettings()):
        self.store = store
        self.camera = camera
        self.settings = settings
        self._inverse = np.linalg.inv(homography(camera))
        self.nadir = tuple(nadir(camera))
        self._background = self._draw_background()
        ys, xs = np.mgrid[0:camera.height, 0:camera.width].astype(np.float32)
        self._xramp = (xs / camera.width - 0.5)
        self._yramp = (ys / camera.height - 0.5)
        self._cam_seed = _seed('camera', settings.seed, camera.id)
        # Sensor noise: one seeded field a little larger than the frame, each frame
        # taking a window at a seeded offset -- drawing a fresh field per frame cost
        # more than the whole rest of the rendering.
        self._noise = None
        if settings.noise_sigma > 0:
            self._noise = np.empty((camera.height + _NOISE_PAD, camera.width + _NOISE_PAD, 3), np.int16)
            cv2.setRNGSeed(self._cam_seed & 0x7FFFFFFF)
            cv2.randn(self._noise, 0.0, settings.noise_sigma)

    # -- geometry ----------------------------------------------------------------------

    def to_pixels(self, points) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        homo = np.ones((len(pts), 3))
        homo[:, :2] = pts
        homo = homo @ self._inverse.T
        with np.errstate(divide='ignore', invalid='ignore'):
            return homo[:, :2] / homo[:, 2:3]

    def _ring(self, x: float, y: float, r: float) -> np.ndarray:
        ring = np.empty((_SEGMENTS, 2))
        ring[:, 0] = x + r * _COS
        ring[:, 1] = y + r * _SIN
        return ring

    def _raised(self, x: float, y: float, height_share: float, look: Look) -> tuple:
        k = self.settings.lean * height_share * look.height_m / 1.7
        return x + k * (x - self.nadir[0]), y + k * (y - self.nadir[1])

    def _hand(self, figure: 'Figure', look: Look) -> tuple:
        """Where a figure's hand appears (floor metres as the camera sees it)."""
        share = HAND_HEIGHT if figure.hand_height_m is None else figure.hand_height_m / look.height_m
        return self._raised(figure.hand[0], figure.hand[1], share, look)

    def _poly(self, frame, floor_points, color) -> None:
        px = self.to_pixels(floor_points)
        if not np.all(np.isfinite(px)) or np.any(np.abs(px) > 1e5):
            return
        cv2.fillConvexPoly(frame, np.round(px * 16).astype(np.int32), color, cv2.LINE_AA, 4)

    def visible(self, u: float, v: float, margin: float = 0.0) -> bool:
        return (-margin <= u < self.camera.width + margin) and (-margin <= v < self.camera.height + margin)

    # -- drawing -----------------------------------------------------------------------

    def _draw_background(self) -> np.ndarray:
        cam = self.camera
        frame = np.empty((cam.height, cam.width, 3), np.uint8)
        frame[:] = (176, 184, 188)
        # Floor tiles of 0.5 m.
        corners = pixels_to_floor(cam, [(0, 0), (cam.width, 0), (0, cam.height), (cam.width, cam.height)])
        x0, y0 = np.floor(corners.min(axis=0) * 2) / 2
        x1, y1 = np.ceil(corners.max(axis=0) * 2) / 2
        rng = np.random.default_rng(_seed('floor', cam.id))
        for tx in np.arange(x0, x1, 0.5):
            for ty in np.arange(y0, y1, 0.5):
                shade = int(rng.integers(-10, 10))
                self._poly(frame, [(tx, ty), (tx + 0.5, ty), (tx + 0.5, ty + 0.5), (tx, ty + 0.5)],
                           (176 + shade, 184 + shade, 188 + shade))
        # Shelves with a facing (any direction), lowest board first: from above, the top
        # board's products are what shows.
        faced = [shelf for shelf in self.store.shelves.values() if shelf.facing is not None]
        for shelf in sorted(faced, key=lambda shelf: shelf.level or 0.0):
            self._draw_faced_shelf(frame, shelf)
        for shelf in self.store.shelves.values():
            if shelf.facing is not None:
                continue
            points = [self.store.shelf_point(b.id) for b in shelf.bins]
            xs = [p[0] for p in points]
            sy = points[0][1]
            side = 1.0 if sy > self.store.centre_y else -1.0
            near, far = sy - side * 0.15, sy + side * (SHELF_DEPTH_M - 0.15)
            self._poly(frame, [(min(xs) - 0.5, near), (max(xs) + 0.5, near),
                               (max(xs) + 0.5, far), (min(xs) - 0.5, far)], (50, 75, 110))
            for b, (bx, by) in zip(shelf.bins, points):
                color = product_colour(b.sku)
                for k in range(4):
                    cx = bx - 0.33 + k * 0.22
                    self._poly(frame, self._ring(cx, by + side * 0.05, 0.08), color)
        for gate in self.store.gates.values():
            ring = self.to_pixels(self._ring(gate.x, gate.y, gate.radius_m))
            if np.all(np.isfinite(ring)) and np.all(np.abs(ring) < 1e5):
                cv2.polylines(frame, [np.round(ring).astype(np.int32)], True, (70, 160, 70), 2, cv2.LINE_AA)
        return frame

    def _draw_faced_shelf(self, frame, shelf) -> None:
        """A shelf board facing its own way: the board from its front edge to its back,
        and each facing's products in a row along it."""
        store = self.store
        fx, fy = shelf.facing
        ax, ay = -fy, fx
        along = []
        for b in shelf.bins:
            cx, cy = store.face_point(b.id)
            half = store.facing_half_width(b.id)
            along += [cx * ax + cy * ay - half, cx * ax + cy * ay + half]
        cx, cy = store.face_point(shelf.bins[0].id)
        front = cx * fx + cy * fy

        def point(a, d):
            return a * ax + d * fx, a * ay + d * fy

        low, high = min(along) - 0.05, max(along) + 0.05
        self._poly(frame, [point(low, front), point(high, front), point(high, front - SHELF_DEPTH_M),
                           point(low, front - SHELF_DEPTH_M)], (50, 75, 110))
        for b in shelf.bins:
            color = product_colour(b.sku)
            hx, hy = store.shelf_point(b.id)
            half = store.facing_half_width(b.id)
            count = max(1, int(round(2 * half / 0.1)))
            pitch = 2 * half / count
            for k in range(count):
                u = -half + pitch * (k + 0.5)
                self._poly(frame, self._ring(hx + ax * u + fx * (SHELF_FACE_M - 0.1),
                                             hy + ay * u + fy * (SHELF_FACE_M - 0.1),
                                             min(0.07, 0.42 * pitch)), color)

    def _draw_person(self, frame, figure: Figure, look: Look) -> None:
        r = look.radius_m
        fx, fy = figure.x, figure.y
        self._poly(frame, self._ring(fx + 0.06, fy + 0.04, r * 1.05), (118, 124, 128))
        sx, sy = self._raised(fx, fy, 0.8, look)
        legs = np.concatenate([self._ring(fx, fy, 0.5 * r), self._ring(sx, sy, 0.9 * r)])
        self._poly(frame, cv2.convexHull(legs.astype(np.float32)).reshape(-1, 2), look.trousers)
        if figure.hand is not None:
            hx, hy = self._hand(figure, look)
            px = self.to_pixels([(sx, sy), (hx, hy)])
            if np.all(np.isfinite(px)) and np.all(np.abs(px) < 1e5):
                scale = np.linalg.norm(self.to_pixels([(sx, sy), (sx + 0.07, sy)])[1] - px[0])
                p0, p1 = np.round(px).astype(int)
                cv2.line(frame, tuple(p0), tuple(p1), look.shirt, max(2, int(round(scale))), cv2.LINE_AA)
            self._poly(frame, self._ring(hx, hy, 0.055), look.skin)
            if figure.item is not None:
                self._poly(frame, self._ring(hx, hy, ITEM_RADIUS_M), product_colour(figure.item))
        self._poly(frame, self._ring(sx, sy, r), look.shirt)
        hx, hy = self._raised(fx, fy, 1.0, look)
        self._poly(frame, self._ring(hx, hy, 0.1 * look.height_m / 1.7), look.hair)

    def dropped(self, frame_index: int) -> bool:
        """Whether this frame is lost (seeded per camera and frame)."""
        if self.settings.drop_rate <= 0:
            return False
        return (_seed(self._cam_seed, frame_index) % 100_000) / 100_000 < self.settings.drop_rate

    def light(self, t_s: float) -> tuple:
        """(gain, horizontal gradient, vertical gradient) of the light at scenario time t."""
        s = self.settings
        phase = (self._cam_seed % 1000) / 1000 * 2 * math.pi
        mid, half = (s.light_max + s.light_min) / 2, (s.light_max - s.light_min) / 2
        gain = mid + 0.6 * half * math.sin(2 * math.pi * t_s / s.light_period_s + phase)
        if s.light_step_s > 0:
            step = int(t_s // s.light_step_s)
            gain += 0.4 * half * ((_seed(self._cam_seed, 'step', step) % 2001) / 1000 - 1)
        gx = s.gradient * math.sin(2 * math.pi * t_s / (2.3 * s.light_period_s) + phase)
        gy = s.gradient * math.cos(2 * math.pi * t_s / (3.1 * s.light_period_s) + 2 * phase)
        return gain, gx, gy

    def render(self, figures, t_s: float = 0.0, frame_index: int = 0) -> RenderedFrame:
        frame = self._background.copy()
        nx, ny = self.nadir
        # Farther from the nadir first: a nearer shopper's head and shoulders hide them.
        order = sorted(figures, key=lambda f: -math.hypot(f.x - nx, f.y - ny))
        people, hands = [], []
        for figure in order:
            look = figure.look or person_look(self.settings.seed, figure.person_id)
            self._draw_person(frame, figure, look)
            u, v = self.to_pixels([(figure.x, figure.y)])[0]
            if np.isfinite(u) and self.visible(u, v):
                people.append((figure.person_id, float(u), float(v)))
            if figure.hand is not None:
                hu, hv = self.to_pixels([self._hand(figure, look)])[0]
                if np.isfinite(hu) and self.visible(hu, hv):
                    hands.append((figure.person_id, float(hu), float(hv)))
        gain, gx, gy = self.light(t_s)
        light = gain * (1.0 + gx * self._xramp + gy * self._yramp)
        image = cv2.multiply(frame, cv2.cvtColor(light, cv2.COLOR_GRAY2BGR), dtype=cv2.CV_16S)
        if self._noise is not None:
            offset = _seed(self._cam_seed, 'noise', frame_index)
            dy, dx = offset % _NOISE_PAD, (offset // _NOISE_PAD) % _NOISE_PAD
            noise = self._noise[dy:dy + self.camera.height, dx:dx + self.camera.width]
            return RenderedFrame(cv2.add(image, noise, dtype=cv2.CV_8U), people, hands)
        return RenderedFrame(cv2.convertScaleAbs(image), people, hands)


class SceneFigures:
    """The figures of a simulator Timeline at any instant: positions from the timeline,
    a hand at the shelf from just before a take or put-back starts until it settled.
    On a shelf with a facing the hand goes into the bin's facing, somewhere along its
    width, and, with the shelf's level, up to the height of its board."""

    def __init__(self, timeline, seed: Optional[int] = None):
        self.timeline = timeline
        store = timeline.store
        seed = timeline.scenario.seed if seed is None else seed
        self._reaches = {}
        for event in timeline.weight_events:
            sx, sy = store.shelf_point(event.bin_id)
            rng = np.random.default_rng(_seed('reach', seed, event.person_id, event.start_ns))
            shelf = store.shelves[event.shelf_id]
            height = None
            if shelf.facing is None:
                hand = (sx + float(rng.uniform(-0.15, 0.15)), sy)
            else:
                u = float(rng.uniform(-0.7, 0.7)) * store.facing_half_width(event.bin_id)
                hand = (sx - shelf.facing[1] * u, sy + shelf.facing[0] * u)
                height = store.hand_height(event.bin_id)
            start, end = event.start_ns - int(REACH_BEFORE_S * NS), event.end_ns + int(REACH_AFTER_S * NS)
            held = (event.ramp_start_ns, end) if event.delta_grams < 0 else (start, event.end_ns)
            self._reaches.setdefault(event.person_id, []).append(
                _Reach(start, end, hand, height, event.sku, held))

    def at(self, t_ns: int) -> list:
        figures = []
        for person in self.timeline.positions(t_ns):
            reach = next((r for r in self._reaches.get(person.person_id, ()) if r.start_ns <= t_ns <= r.end_ns),
                         None)
            if reach is None:
                figures.append(Figure(person.person_id, person.x, person.y))
                continue
            item = reach.sku if reach.held[0] <= t_ns <= reach.held[1] else None
            figures.append(Figure(person.person_id, person.x, person.y, reach.hand,
                                  hand_height_m=reach.height, item=item))
        return figures


@dataclass(frozen=True)
class _Reach:
    start_ns: int
    end_ns: int
    hand: tuple                    # floor point of the hand in the bin
    height: Optional[float]        # of the hand above the floor, when known
    sku: str
    held: tuple                    # (from, until) stamps the product is in the hand


def random_figures(store: StoreConfig, rng: np.random.Generator, max_people: int = 7) -> list:
    """A random scene for training: shoppers at bins (some reaching), in the aisles, at
    the gate and in close pairs, each with a random look."""
    bins = list(store.bins.values())
    gates = list(store.gates.values())
    skus = sorted(store.products)
    figures = []
    n = int(rng.integers(0, max_people + 1))
    xs = [b.x for b in bins] + [g.x for g in gates]
    ys = [b.y for b in bins] + [g.y for g in gates]
    x_lo, x_hi = min(xs) - 1.5, max(xs) + 1.5
    y_lo, y_hi = min(ys) - 0.3, max(ys) + 0.3
    for i in range(n):
        kind = rng.random()
        hand = height = item = None
        if kind < 0.45 and bins:
            b = bins[int(rng.integers(len(bins)))]
            facing = store.shelves[b.shelf_id].facing
            if facing is None:
                x, y = b.x + rng.normal(0, 0.25), b.y + rng.normal(0, 0.15)
            else:
                side, back = rng.normal(0, 0.25), rng.normal(0, 0.15)
                x, y = b.x - facing[1] * side + facing[0] * back, b.y + facing[0] * side + facing[1] * back
            if rng.random() < 0.5:
                # Half the hands hold a product (any of the store's).
                if rng.random() < 0.5:
                    item = skus[int(rng.integers(len(skus)))]
                sx, sy = store.shelf_point(b.id)
                u = float(rng.uniform(-0.3, 0.3))
                if facing is None:
                    hand = (sx + u, sy)
                else:
                    hand = (sx - facing[1] * u, sy + facing[0] * u)
                    height = store.hand_height(b.id)
        elif kind < 0.6 and gates:
            g = gates[int(rng.integers(len(gates)))]
            x, y = g.x + rng.normal(0, 0.4), g.y + rng.normal(0, 0.4)
        elif kind < 0.75 and figures:
            other = figures[int(rng.integers(len(figures)))]
            angle = rng.uniform(0, 2 * np.pi)
            d = rng.uniform(0.45, 0.9)
            x, y = other.x + d * math.cos(angle), other.y + d * math.sin(angle)
        else:
            x, y = rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)
        look = Look(radius_m=float(rng.uniform(0.17, 0.31)), height_m=float(rng.uniform(1.4, 2.0)),
                    shirt=tuple(int(v) for v in rng.integers(0, 256, 3)),
                    trousers=tuple(int(v) for v in rng.integers(10, 150, 3)),
                    hair=_HAIR[int(rng.integers(len(_HAIR)))], skin=_SKIN[int(rng.integers(len(_SKIN)))])
        figures.append(Figure(f'r{i}', float(x), float(y), hand, look, height, item))
    return figures


def random_settings(rng: np.random.Generator) -> RenderSettings:
    """Random light and noise for training frames."""
    lo = float(rng.uniform(0.45, 1.0))
    return RenderSettings(seed=int(rng.integers(1 << 30)), lean=float(rng.uniform(0.06, 0.18)),
                          noise_sigma=float(rng.uniform(0, 10)), light_min=lo,
                          light_max=lo + float(rng.uniform(0.05, 0.6)),
                          light_period_s=float(rng.uniform(10, 60)),
                          gradient=float(rng.uniform(0, 0.4)))


def floor_of_pixels(camera: Camera, points) -> np.ndarray:
    """Pixels -> floor metres (N x 2), re-exported for callers of this module."""
    return pixels_to_floor(camera, points)


__all__ = ['CameraRenderer', 'Figure', 'Look', 'RenderSettings', 'RenderedFrame', 'SceneFigures',
           'floor_of_pixels', 'floor_to_pixels', 'person_look', 'random_figures',
           'random_settings']
