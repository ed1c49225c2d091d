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
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.held_item import CROP_PX, chromaticity, crops
from jwo_nodes.core.render import CameraRenderer, product_colour, random_figures, random_settings
from jwo_nodes.train.train_detector import DEFAULT_STORES, _jitter_camera

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
        renderer = CameraRenderer(store, _jitter_camera(camera, rng) if rng.random() < 0.5 else camera,
                                  random_settings(rng))
        figures = random_figures(store, rng)
        frame = renderer.render(figures, float(rng.uniform(0, 300)), i)
        quality = int(rng.integers(60, 96))
        _, jpeg = cv2.imencode('.jpg', frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
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
    chunk = -(-frames // max(1, workers))
    jobs = [(tuple(store_paths), seed, a, min(frames, a + chunk)) for a in range(0, frames, chunk)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        with multiprocessing.get_context('spawn').Pool(len(jobs)) as pool:
            parts = pool.map(_render_crops, jobs)
    else:
        parts = [_render_crops(job) for job in jobs]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


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
    parser.add_argument('--store', action='append', dest='stores', metavar='STORE',
                        help='store config whose cameras to render, repeatable (default: '
                             + ' and '.join(DEFAULT_STORES) + ')')
    parser.add_argument('--out', default='models/held_item.onnx', help='ONNX file to write')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--frames', type=int, default=24000, help='rendered training frames, of the stores in turn')
    parser.add_argument('--steps', type=int, default=8000, help='optimizer steps')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--lr', type=float, default=3e-3)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    stores = args.stores or list(DEFAULT_STORES)
    for path in stores:
        try:
            load_store_config(path)
        except ConfigError as error:
            print(f'error: {error}', file=sys.stderr)
            return 2
    import torch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    xs, ys = make_dataset(stores, args.frames, args.seed, workers=args.threads)
    val_x, val_y = make_dataset(stores, 600, args.seed + 1_000_003, workers=args.threads)
    print(f'rendered {len(xs)} training crops ({int(ys[:, 0].sum())} holding) and {len(val_x)} validation '
          f'crops in {time.monotonic() - started:.0f} s', flush=True)
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps,
                                                   pct_start=0.15)
    rng = np.random.default_rng(args.seed)
    xt, yt = torch.from_numpy(xs), torch.from_numpy(ys)
    model.train()
    for step in range(1, args.steps + 1):
        index = torch.from_numpy(rng.integers(0, len(xs), args.batch))
        batch_x = xt[index]
        if rng.random() < 0.5:
            batch_x = batch_x.flip(3)
        if rng.random() < 0.5:
            batch_x = batch_x.flip(2)
        loss = loss_of(model(batch_x), yt[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps:
            print(f'step {step}/{args.steps} loss {loss.item():.3f} ({time.monotonic() - started:.0f} s)', flush=True)
    model.eval()
    with torch.no_grad():
        found = scores(model(torch.from_numpy(val_x)).numpy(), val_y)
    print(f'validation: {found}', flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    export(model, out, {'trained_s': round(time.monotonic() - started), 'seed': args.seed, 'stores': stores,
                        'frames': args.frames, 'steps': args.steps, **found})
    print(f'wrote {out} ({out.stat().st_size / 1e3:.0f} kB) after {time.monotonic() - started:.0f} s')
    return 0


def export(model, path: Path, info: dict) -> None:
    import onnx
    import torch
    dummy = torch.zeros(1, 3, CROP_PX, CROP_PX)
    torch.onnx.export(model, (dummy,), str(path), input_names=['crops'], output_names=['held'],
                      opset_version=17, dynamic_axes={'crops': {0: 'batch'}, 'held': {0: 'batch'}},
                      dynamo=False)
    proto = onnx.load(str(path))
    meta = {'format': 'jwo-held-item-v1', 'input': 'rgb01', 'crop': CROP_PX,
            'outputs': ['holding', 'blue_share', 'green_share'], **info}
    for key, value in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=json.dumps(value)))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


if __name__ == '__main__':
    sys.exit(main())
