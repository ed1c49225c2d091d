"""One time step's detections, from camera pixels to the floor: what the vision tracker
feeds its Tracker, shared by vision_tracker_node and `jwo vision-check`.

Pure numpy/cv2: no rclpy, no clocks.
"""
import numpy as np

from jwo_nodes.core.detector import HAND
from jwo_nodes.core.frame_source import pixels_to_floor
from jwo_nodes.core.tracker import FloorDetection


def floor_detections(cameras: list, frames: list, results: list, samplers: dict, reader=None) -> tuple:
    """Cameras, their frames and the detector's results for them -> (shoppers, hands) as
    FloorDetections in floor metres; shoppers carry their colour (``samplers``: camera
    id -> AppearanceSampler), hands what they hold when there is a HeldItemReader.
    Points that do not project to the floor are dropped."""
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
        items = reader.read(frame, [(d.u, d.v) for d, _ in seen]) if reader and seen else [None] * len(seen)
        for (d, (x, y)), item in zip(seen, items):
            hands.append(FloorDetection(float(x), float(y), d.score, camera.id, item=item))
    return shoppers, hands
