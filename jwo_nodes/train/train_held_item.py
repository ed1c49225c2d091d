"""Trains the held-item reader (jwo_nodes.core.held_item) on rendered frames and exports
it to ONNX.

    make train        # also runs: python -m jwo_nodes.train.train_held_item --out models/held_item.onnx

Frames are rendered as for the detector (random shoppers, reaches, light, noise, of
the demo store and the real-store layout in turn), half the reaching hands holding a
product of the store, and JPEG-coded as camera_node sends them. Each hand gives a
32 x 32 crop, centred where a detector would put it (the true point moved by its
measured error, a few pixels), labelled with whether the hand holds a product and that
product's chromaticity; points on shoppers away from their hands are crops of nothing
held. Reproducible from --seed on the CPU. Needs requirements-train.txt.
"""
import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.frame_source import encode_jpeg
from jwo_nodes.core.held_item import CROP_PX, chromaticity, crops
from jwo_nodes.core.render import CameraRenderer, product_colour, random_figures, random_settings
from jwo_nodes.train.common import add_arguments, export, fit, render_in_parts, start
from jwo_nodes.train.train_detector import jitter_camera

# A detector's hand point is off the true one by about this (pixels, each axis, 1 sigma).
POINT_ERROR_PX = 6.0


def _render_crops(job):
    """Crops and labels of frames [start, stop), each from its own seed."""
    store_paths, seed, start, stop = job
    stores = [load_store_config(path) for path in store_paths]
    xs, ys = [], []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        store = stores[i % len(stores)]
        cameras = list(store.cameras.values())
        camera = cameras[i // len(stores) % len(cameras)]
        renderer = CameraRenderer(store, jitter_camera(camera, rng) if rng.random() < 0.5 else camera,
                                  random_settings(rng))
        figures = random_figures(store, rng)
        frame = renderer.render(figures, float(rng.uniform(0, 300)), i)
        image = cv2.imdecode(encode_jpeg(frame.image, int(rng.integers(60, 96))), cv2.IMREAD_COLOR)
        item_of = {f.person_id: f.item for f in figures}
        points, labels = [], []
        for person_id, u, v in frame.hands:
            du, dv = np.clip(rng.normal(0, POINT_ERROR_PX, 2), -3 * POINT_ERROR_PX, 3 * POINT_ERROR_PX)
            points.append((u + du, v + dv))
            item = item_of.get(person_id)
            labels.append((1.0, *chromaticity(product_colour(item))) if item else (0.0, 0.0, 0.0))
        for person_id, u, v in frame.people:
            if rng.random() < 0.3:
                points.append((u + rng.normal(0, 8), v + rng.normal(0, 8)))
                labels.append((0.0, 0.0, 0.0))
        if points:
            xs.append(crops(image, points))
            ys.append(np.array(labels, np.float32))
    if not xs:
        return np.empty((0, 3, CROP_PX, CROP_PX), np.float32), np.empty((0, 3), np.float32)
    return np.concatenate(xs), np.concatenate(ys)


def make_dataset(store_paths: list, frames: int, seed: int, workers: int = 2):
    return render_in_parts(_render_crops, frames, workers, tuple(store_paths), seed)


def build_model(width: int = 16):
    import torch
    from torch import nn

    def block(cin, cout, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Reader(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.features = nn.Sequential(block(3, w), block(w, 2 * w, 2), block(2 * w, 2 * w),
                                          block(2 * w, 3 * w, 2), block(3 * w, 3 * w))
            self.head = nn.Linear(3 * w, 3)

        def forward(self, x):
            return torch.sigmoid(self.head(self.features(x).mean(dim=(2, 3))))

    return Reader()


def loss_of(pred, target):
    import torch
    holding = target[:, 0]
    bce = torch.nn.functional.binary_cross_entropy(pred[:, 0].clamp(1e-4, 1 - 1e-4), holding)
    colour = ((pred[:, 1:] - target[:, 1:]).abs().sum(dim=1) * holding).sum() / holding.sum().clamp(min=1)
    return bce + 10.0 * colour


def scores(pred: np.ndarray, target: np.ndarray) -> dict:
    held = target[:, 0] > 0.5
    error = np.hypot(*(pred[held, 1:] - target[held, 1:]).T)
    return {'holding_accuracy': round(float(((pred[:, 0] > 0.5) == held).mean()), 4),
            'colour_error_median': round(float(np.median(error)), 4),
            'colour_error_p90': round(float(np.percentile(error, 90)), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_arguments(parser, 'models/held_item.onnx', frames=24000, steps=8000, batch=64)
    args = parser.parse_args(argv)
    sets = start(args, make_dataset, validation=600)
    if sets is None:
        return 2
    (xs, ys), (val_x, val_y), started = sets
    import torch
    print(f'rendered {len(xs)} training crops ({int(ys[:, 0].sum())} holding) and {len(val_x)} validation '
          f'crops in {time.monotonic() - started:.0f} s', flush=True)
    model = build_model()
    fit(model, xs, ys, loss_of, args, started, flips=(3, 2), report_every=250)
    with torch.no_grad():
        found = scores(model(torch.from_numpy(val_x)).numpy(), val_y)
    print(f'validation: {found}', flush=True)
    out = Path(args.out)
    export(model, out, (3, CROP_PX, CROP_PX), ('crops', 'held'), {
        'format': 'jwo-held-item-v1', 'input': 'rgb01', 'crop': CROP_PX,
        'outputs': ['holding', 'blue_share', 'green_share'], 'trained_s': round(time.monotonic() - started),
        'seed': args.seed, 'stores': args.stores, 'frames': args.frames, 'steps': args.steps, **found})
    print(f'wrote {out} ({out.stat().st_size / 1e3:.0f} kB) after {time.monotonic() - started:.0f} s')
    return 0



if __name__ == '__main__':
    sys.exit(main())
