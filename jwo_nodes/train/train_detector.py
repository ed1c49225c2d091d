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
import json
import sys
import time
from pathlib import Path

import numpy as np

from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.detector import preprocess
from jwo_nodes.core.render import CameraRenderer, random_figures, random_settings

INPUT_W, INPUT_H, STRIDE = 256, 192, 4
CHANNELS = ('shopper', 'hand')
SIGMAS = (1.6, 1.2)      # heatmap gaussians, output cells
DEFAULT_STORES = ('config/stores/demo.yaml', 'config/stores/corner.yaml')


def _jitter_camera(camera, rng):
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
    store_paths, seed, start, stop, jitter = job
    stores = [load_store_config(path) for path in store_paths]
    renderers = [{c.id: CameraRenderer(store, c) for c in store.cameras.values()} for store in stores]
    xs = np.empty((stop - start, 3, INPUT_H, INPUT_W), np.float32)
    ys = np.empty((stop - start, 2, INPUT_H // STRIDE, INPUT_W // STRIDE), np.float32)
    for n, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, i])
        store = stores[i % len(stores)]
        cameras = list(store.cameras.values())
        camera = cameras[i // len(stores) % len(cameras)]
        renderer = (CameraRenderer(store, _jitter_camera(camera, rng)) if rng.random() < jitter
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
    chunk = -(-count // max(1, workers))
    jobs = [(tuple(store_paths), seed, a, min(count, a + chunk), jitter) for a in range(0, count, chunk)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        with multiprocessing.get_context('spawn').Pool(len(jobs)) as pool:
            parts = pool.map(_render_frames, jobs)
    else:
        parts = [_render_frames(job) for job in jobs]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


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
    parser.add_argument('--store', action='append', dest='stores', metavar='STORE',
                        help='store config whose cameras to render, repeatable (default: '
                             + ' and '.join(DEFAULT_STORES) + ')')
    parser.add_argument('--out', default='models/detector.onnx', help='ONNX file to write')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--frames', type=int, default=6000, help='rendered training frames, of the stores in turn')
    parser.add_argument('--steps', type=int, default=3000, help='optimizer steps')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--lr', type=float, default=3e-3)
    parser.add_argument('--width', type=int, default=16, help='base channel count')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    stores = args.stores or list(DEFAULT_STORES)
    for path in stores:     # here, not in a rendering worker's traceback
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
    val_x, val_y = make_dataset(stores, 200, args.seed + 1_000_003, workers=args.threads)
    print(f'rendered {len(xs)} training and {len(val_x)} validation frames in '
          f'{time.monotonic() - started:.0f} s', flush=True)
    model = build_model(args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps,
                                                   pct_start=0.15)
    rng = np.random.default_rng(args.seed)
    xt, yt = torch.from_numpy(xs), torch.from_numpy(ys)
    model.train()
    for step in range(1, args.steps + 1):
        index = torch.from_numpy(rng.integers(0, len(xs), args.batch))
        batch_x, batch_y = xt[index], yt[index]
        if rng.random() < 0.5:   # mirror left-right: the nadir stays at the centre
            batch_x, batch_y = batch_x.flip(3), batch_y.flip(3)
        loss = focal_loss(model(batch_x), batch_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps:
            print(f'step {step}/{args.steps} loss {loss.item():.3f} '
                  f'({time.monotonic() - started:.0f} s)', flush=True)
    model.eval()
    with torch.no_grad():
        val_loss = float(focal_loss(model(torch.from_numpy(val_x)), torch.from_numpy(val_y)))
    print(f'validation loss {val_loss:.3f}', flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    export(model, out, {'trained_s': round(time.monotonic() - started), 'seed': args.seed, 'stores': stores,
                        'frames': args.frames, 'steps': args.steps, 'val_loss': round(val_loss, 4)})
    print(f'wrote {out} ({out.stat().st_size / 1e6:.2f} MB) after {time.monotonic() - started:.0f} s')
    return 0


def export(model, path: Path, info: dict) -> None:
    import onnx
    import torch
    dummy = torch.zeros(1, 3, INPUT_H, INPUT_W)
    torch.onnx.export(model, (dummy,), str(path), input_names=['image'], output_names=['heatmaps'],
                      opset_version=17, dynamic_axes={'image': {0: 'batch'}, 'heatmaps': {0: 'batch'}},
                      dynamo=False)
    proto = onnx.load(str(path))
    meta = {'format': 'jwo-centernet-v1', 'input': 'rgb01', 'input_width': INPUT_W,
            'input_height': INPUT_H, 'stride': STRIDE, 'channels': list(CHANNELS), **info}
    for key, value in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=json.dumps(value)))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


if __name__ == '__main__':
    sys.exit(main())
