"""Trains the shopper/hand detector on rendered frames and exports it to ONNX.

    make train        # .venv/bin/python -m jwo_nodes.train.train_detector --out models/detector.onnx

A small fully-convolutional CenterNet-style network: an RGB frame resized to
256 x 192 in, two heatmaps at 1/4 resolution (64 x 48) out, after a sigmoid: channel 0
peaks at each shopper's floor point (feet), channel 1 at each hand reaching into a bin.
Training frames are rendered by jwo_nodes.core.render (random shoppers, reaches, light,
noise; camera views around the store configs'), in turn from every store given (by
default the demo store and the real-store layout: a model trained on one store's
shelves takes the other's boards for shoppers and misses hands in its facings), so the
run is reproducible from --seed and needs only the CPU (a few minutes on 2 cores).
Needs requirements-train.txt (torch, onnx); the node itself only needs onnxruntime.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.detector import preprocess
from jwo_nodes.core.render import CameraRenderer, random_figures, random_settings
from jwo_nodes.train.common import add_arguments, export, fit, render_in_parts, start

INPUT_W, INPUT_H, STRIDE = 256, 192, 4
CHANNELS = ('shopper', 'hand')
SIGMAS = (1.6, 1.2)      # heatmap gaussians, output cells


def jitter_camera(camera, rng):
    """The camera with its pixel grid scaled and shifted a little: other mountings."""
    s = float(rng.uniform(0.85, 1.2))
    tx = float(rng.uniform(-0.1, 0.1)) * camera.width
    ty = float(rng.uniform(-0.1, 0.1)) * camera.height
    pixel = np.array([[s, 0, tx], [0, s, ty], [0, 0, 1]])
    h = np.array(camera.homography, dtype=np.float64).reshape(3, 3) @ pixel
    return dataclasses.replace(camera, homography=tuple(float(v) for v in h.ravel()))


def _heatmap(points, w: int, h: int, sigma: float) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for u, v in points:
        cu, cv_ = u / STRIDE, v / STRIDE
        if not (0 <= cu < w and 0 <= cv_ < h):
            continue
        g = np.exp(-((xs - cu) ** 2 + (ys - cv_) ** 2) / (2 * sigma * sigma))
        g[int(cv_), int(cu)] = 1.0
        np.maximum(out, g, out=out)
    return out


def _render_frames(job):
    """Frames [start, stop) of a dataset: each from its own seed, so the result does
    not depend on how the work is split. Frame i is of store i mod the stores' count."""
    store_paths, seed, jitter, start, stop = job
    stores = [load_store_config(path) for path in store_paths]
    renderers = [{c.id: CameraRenderer(store, c) for c in store.cameras.values()} for store in stores]
    xs = np.empty((stop - start, 3, INPUT_H, INPUT_W), np.float32)
    ys = np.empty((stop - start, 2, INPUT_H // STRIDE, INPUT_W // STRIDE), np.float32)
    for n, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, i])
        store = stores[i % len(stores)]
        cameras = list(store.cameras.values())
        camera = cameras[i // len(stores) % len(cameras)]
        renderer = (CameraRenderer(store, jitter_camera(camera, rng)) if rng.random() < jitter
                    else renderers[i % len(stores)][camera.id])
        renderer.settings = random_settings(rng)
        frame = renderer.render(random_figures(store, rng), float(rng.uniform(0, 300)), i)
        sx, sy = INPUT_W / camera.width, INPUT_H / camera.height
        xs[n] = preprocess(frame.image, INPUT_W, INPUT_H)
        for c, (points, sigma) in enumerate(((frame.people, SIGMAS[0]), (frame.hands, SIGMAS[1]))):
            ys[n, c] = _heatmap([(u * sx, v * sy) for _, u, v in points],
                                INPUT_W // STRIDE, INPUT_H // STRIDE, sigma)
    return xs, ys


def make_dataset(store_paths: list, count: int, seed: int, jitter: float = 0.5, workers: int = 2):
    """count rendered frames, of the stores in turn: inputs (N, 3, H, W) float32 and
    targets (N, 2, H/4, W/4)."""
    return render_in_parts(_render_frames, count, workers, tuple(store_paths), seed, jitter)


def build_model(width: int = 24):
    import torch
    from torch import nn

    def block(cin, cout, stride=1, dilation=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.stem = nn.Sequential(block(3, w // 2, 2), block(w // 2, w, 2), block(w, w))   # 1/4
            self.down = nn.Sequential(block(w, 2 * w, 2), block(2 * w, 2 * w, dilation=2),
                                      block(2 * w, 2 * w, dilation=4))                        # 1/8
            self.up = nn.Upsample(scale_factor=2, mode='nearest')
            self.fuse = nn.Sequential(block(3 * w, w), block(w, w))
            self.head = nn.Conv2d(w, len(CHANNELS), 1)
            nn.init.constant_(self.head.bias, -2.2)

        def forward(self, x):
            skip = self.stem(x)
            deep = self.down(skip)
            y = self.fuse(torch.cat([skip, self.up(deep)], dim=1))
            return torch.sigmoid(self.head(y))

    return Detector()


def focal_loss(pred, target):
    """CenterNet's penalty-reduced focal loss on sigmoid heatmaps."""
    import torch
    pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred ** 2 * (1 - target) ** 4 * neg
    n = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_arguments(parser, 'models/detector.onnx', frames=6000, steps=3000, batch=16)
    parser.add_argument('--width', type=int, default=16, help='base channel count')
    args = parser.parse_args(argv)
    sets = start(args, make_dataset, validation=200)
    if sets is None:
        return 2
    (xs, ys), (val_x, val_y), started = sets
    import torch
    print(f'rendered {len(xs)} training and {len(val_x)} validation frames in '
          f'{time.monotonic() - started:.0f} s', flush=True)
    model = build_model(args.width)
    fit(model, xs, ys, focal_loss, args, started)   # mirrored left-right: the nadir stays at the centre
    with torch.no_grad():
        val_loss = float(focal_loss(model(torch.from_numpy(val_x)), torch.from_numpy(val_y)))
    print(f'validation loss {val_loss:.3f}', flush=True)
    out = Path(args.out)
    export(model, out, (3, INPUT_H, INPUT_W), ('image', 'heatmaps'), {
        'format': 'jwo-centernet-v1', 'input': 'rgb01', 'input_width': INPUT_W, 'input_height': INPUT_H,
        'stride': STRIDE, 'channels': list(CHANNELS), 'trained_s': round(time.monotonic() - started),
        'seed': args.seed, 'stores': args.stores, 'frames': args.frames, 'steps': args.steps,
        'val_loss': round(val_loss, 4)})
    print(f'wrote {out} ({out.stat().st_size / 1e6:.2f} MB) after {time.monotonic() - started:.0f} s')
    return 0



if __name__ == '__main__':
    sys.exit(main())
