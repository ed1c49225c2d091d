"""What the training scripts share: their command line, the store check and the
optimizer loop (AdamW with a one-cycle schedule, mirrored batches)."""
import sys
import time

import numpy as np

from jwo_nodes.core.config import ConfigError, load_store_config

DEFAULT_STORES = ('config/stores/demo.yaml', 'config/stores/corner.yaml')


def add_arguments(parser, out: str, frames: int, steps: int, batch: int) -> None:
    parser.add_argument('--store', action='append', dest='stores', metavar='STORE',
                        help='store config whose cameras to render, repeatable (default: '
                             + ' and '.join(DEFAULT_STORES) + ')')
    parser.add_argument('--out', default=out, help='ONNX file to write')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--frames', type=int, default=frames, help='rendered training frames, of the stores in turn')
    parser.add_argument('--steps', type=int, default=steps, help='optimizer steps')
    parser.add_argument('--batch', type=int, default=batch)
    parser.add_argument('--lr', type=float, default=3e-3)
    parser.add_argument('--threads', type=int, default=2)


def start(args, make_dataset, validation: int):
    """Checks the stores to render (--store, else the defaults), seeds PyTorch and gives
    it its threads, and renders the training set and a validation set of ``validation``
    from seeds of its own (make_dataset(stores, count, seed, workers=) -> (xs, ys)):
    (training set, validation set, when rendering started); None after printing why a
    store cannot be read (here, not in a rendering worker's traceback). args.stores
    becomes the stores rendered."""
    args.stores = stores = args.stores or list(DEFAULT_STORES)
    for path in stores:
        try:
            load_store_config(path)
        except ConfigError as error:
            print(f'error: {error}', file=sys.stderr)
            return None
    import torch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    training = make_dataset(stores, args.frames, args.seed, workers=args.threads)
    return training, make_dataset(stores, validation, args.seed + 1_000_003, workers=args.threads), started


def fit(model, xs: np.ndarray, ys: np.ndarray, loss_of, args, started: float, flips: tuple = (3,),
        report_every: int = 100) -> None:
    """args.steps optimizer steps on random batches of (xs, ys), each batch mirrored
    along each axis of ``flips`` half the time (of the targets too, where they are maps)."""
    import torch
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps,
                                                   pct_start=0.15)
    rng = np.random.default_rng(args.seed)
    xt, yt = torch.from_numpy(xs), torch.from_numpy(ys)
    model.train()
    for step in range(1, args.steps + 1):
        index = torch.from_numpy(rng.integers(0, len(xs), args.batch))
        batch_x, batch_y = xt[index], yt[index]
        for axis in flips:
            if rng.random() < 0.5:
                batch_x = batch_x.flip(axis)
                if batch_y.dim() == batch_x.dim():
                    batch_y = batch_y.flip(axis)
        loss = loss_of(model(batch_x), batch_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % report_every == 0 or step == args.steps:
            print(f'step {step}/{args.steps} loss {loss.item():.3f} ({time.monotonic() - started:.0f} s)', flush=True)
    model.eval()


def export(model, path, input_shape: tuple, names: tuple, meta: dict) -> None:
    """The model as ONNX (opset 17, batch dimension dynamic) with ``meta`` as its
    metadata (JSON values)."""
    import json

    import onnx
    import torch
    path.parent.mkdir(parents=True, exist_ok=True)
    source, sink = names
    torch.onnx.export(model, (torch.zeros(1, *input_shape),), str(path), input_names=[source], output_names=[sink],
                      opset_version=17, dynamic_axes={source: {0: 'batch'}, sink: {0: 'batch'}}, dynamo=False)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=json.dumps(value)))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def render_in_parts(render, count: int, workers: int, *job) -> tuple:
    """render((*job, start, stop)) -> (inputs, targets) over [0, count), split among
    worker processes; each item is rendered from its own seed, so the result does not
    depend on the split. The parts concatenated."""
    chunk = -(-count // max(1, workers))
    jobs = [(*job, a, min(count, a + chunk)) for a in range(0, count, chunk)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        with multiprocessing.get_context('spawn').Pool(len(jobs)) as pool:
            parts = pool.map(render, jobs)
    else:
        parts = [render(j) for j in jobs]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
