"""`jwo bench-vision` (`make bench-vision`): the detector and the vision tracker's work
per time step on this machine, in one run.

    jwo bench-vision [--model models/detector.onnx] [--steps 60]

On rendered frames of the demo store's cameras (jwo_nodes.core.render, scenario
config/scenarios/demo.yaml):

1. model only, ONNX Runtime (the provider the node would pick) against OpenCV's DNN
   module running the same ONNX file, one frame per run: frames/s;
2. the whole detection (resize, model, heatmap peaks) one frame at a time against all
   cameras' frames of a time step as one batch, for 1 to --max-cameras cameras (the
   demo's frames repeated): frames/s and the ratio batched / one at a time;
3. what vision_tracker_node does per time step (JPEG decode of every camera's frame,
   batched detection, projection to the floor, clothing colour, tracking): how many
   cameras at --fps it keeps up with, i.e. the largest count whose step takes less
   than 1 / fps.
"""
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from jwo_nodes.core.appearance import AppearanceSampler, AppearanceSettings
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.detector import Detector, DetectorSettings, default_model_path, preprocess
from jwo_nodes.core.frame_source import encode_jpeg
from jwo_nodes.core.render import CameraRenderer, RenderSettings, SceneFigures
from jwo_nodes.core.sim import NS, Timeline, load_scenario
from jwo_nodes.core.perception import HandParallax, floor_detections
from jwo_nodes.core.tracker import Tracker


def add_arguments(parser) -> None:
    parser.add_argument('--model', help='detector ONNX (default: the shipped models/detector.onnx)')
    parser.add_argument('--store', default='config/stores/demo.yaml')
    parser.add_argument('--scenario', default='config/scenarios/demo.yaml')
    parser.add_argument('--steps', type=int, default=60, help='time steps rendered and timed')
    parser.add_argument('--max-cameras', type=int, default=32)
    parser.add_argument('--fps', type=float, default=10.0, help='camera frame rate to keep up with')


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float('inf')


def _timed(function, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return time.perf_counter() - started


def run(args) -> int:
    model = args.model or default_model_path()
    if not model or not Path(model).is_file():
        print(f'error: no detector model at {model!r}', file=sys.stderr)
        return 2
    store = load_store_config(args.store)
    timeline = Timeline(load_scenario(args.scenario, store), store)
    figures = SceneFigures(timeline)
    cameras = list(store.cameras.values())
    renderers = [CameraRenderer(store, c, RenderSettings(seed=timeline.scenario.seed)) for c in cameras]
    times = np.linspace(NS, timeline.duration_ns - NS, args.steps).astype(np.int64)
    steps = [[r.render(figures.at(int(t)), t / NS, k).image for r in renderers]
             for k, t in enumerate(times)]
    detector = Detector(DetectorSettings(model_path=model))
    print(f'detector {model}: {detector.format}, input {detector.input_width}x{detector.input_height}, '
          f'{detector.provider}; {len(steps)} time steps of {len(cameras)} cameras '
          f'({cameras[0].width}x{cameras[0].height})', flush=True)
    if detector.provider_note:
        print(f'  ({detector.provider_note})')
    frames = [f for step in steps for f in step]

    # 1. model only: ONNX Runtime against OpenCV DNN, same file, same input
    blobs = [preprocess(f, detector.input_width, detector.input_height)[None] for f in frames]
    ort_s = _timed(lambda: [detector.session.run(None, {detector.input_name: b}) for b in blobs], 1)
    print(f'\n1. model only, one frame per run ({len(blobs)} frames)')
    print(f'   ONNX Runtime ({detector.provider}): {_rate(len(blobs), ort_s):8.1f} frames/s')
    try:
        net = cv2.dnn.readNetFromONNX(model)

        def opencv_all():
            for b in blobs:
                net.setInput(b)
                net.forward()
        opencv_all()  # the first forward pass sets the network up
        cv_s = _timed(opencv_all, 1)
        print(f'   OpenCV DNN {cv2.__version__}:       {_rate(len(blobs), cv_s):8.1f} frames/s  '
              f'(ONNX Runtime / OpenCV: {cv_s / ort_s:.2f})')
    except cv2.error as error:
        print(f'   OpenCV DNN {cv2.__version__}: cannot run this model ({str(error).strip().splitlines()[-1]})')

    # 2. whole detection: one frame at a time against one batch per time step
    print('\n2. detection (resize, model, peaks): one frame at a time against one batch per time step')
    print('   cameras   one at a time    batched     batched / one at a time')
    counts = [n for n in (1, 2, 4, 8, 16, 32) if n <= args.max_cameras]
    for n in counts:
        batches = [[step[i % len(step)] for i in range(n)] for step in steps]
        single_s = _timed(lambda: [detector.detect([f]) for batch in batches for f in batch], 1)
        batch_s = _timed(lambda: [detector.detect(batch) for batch in batches], 1)
        total = n * len(batches)
        print(f'   {n:7d}   {_rate(total, single_s):8.1f} f/s   {_rate(total, batch_s):8.1f} f/s   '
              f'{single_s / batch_s:6.2f}', flush=True)

    # 3. the tracker node's work per time step
    print(f'\n3. vision_tracker_node per time step (JPEG decode, batched detection, floor, colour, tracking) '
          f'at {args.fps:g} fps')
    budget = 1.0 / args.fps
    keeps_up = 0
    for n in counts:
        jpegs = [[encode_jpeg(step[i % len(step)]).tobytes() for i in range(n)]
                 for step in steps]
        views = [cameras[i % len(cameras)] for i in range(n)]
        tracker = Tracker(list(store.gates.values()))
        samplers = {camera.id: AppearanceSampler(camera) for camera in views}
        parallaxes = {camera.id: HandParallax(store, camera, AppearanceSettings().torso_lean) for camera in views}
        started = time.perf_counter()
        for k, step in enumerate(jpegs):
            images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in step]
            tracker.step(int(times[k]), *floor_detections(views, images, detector.detect(images), samplers,
                                                                  parallaxes=parallaxes))
        per_step = (time.perf_counter() - started) / len(jpegs)
        ok = per_step < budget
        keeps_up = n if ok else keeps_up
        print(f'   {n:3d} cameras: {per_step * 1000:7.1f} ms per step '
              f'({"keeps up" if ok else "falls behind"} at {args.fps:g} fps)', flush=True)
    print(f'\nkeeps up with {keeps_up} cameras at {args.fps:g} fps on this machine '
          f'({detector.provider})')
    return 0
