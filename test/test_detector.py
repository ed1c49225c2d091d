"""The detector: the shipped model on rendered frames of a scenario (recall and precision
of shoppers' floor points and of hands within a radius), batched runs equal single
runs, and the YOLO-format path on tiny ONNX models built here."""
import math
from pathlib import Path

import numpy as np
import pytest

from jwo_nodes.core import detector as det
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.render import CameraRenderer, RenderSettings, SceneFigures
from jwo_nodes.core.sim import NS, Timeline, load_scenario

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / 'models' / 'detector.onnx'
STORE = load_store_config(REPO / 'test/stores/suite.yaml')


@pytest.fixture(scope='module')
def detector():
    return det.Detector(det.DetectorSettings(model_path=str(MODEL)))


def rendered(store, paths: list) -> list:
    """Rendered frames of scenarios (never seen in training: it uses random scenes),
    with their ground truth: every 1.7 s of each, plus the middle of every reach."""
    out = []
    for path in paths:
        timeline = Timeline(load_scenario(path, store), store)
        figures = SceneFigures(timeline)
        renderers = [CameraRenderer(store, c, RenderSettings(seed=timeline.scenario.seed, noise_sigma=5.0))
                     for c in store.cameras.values()]
        times = list(range(NS, timeline.duration_ns, int(1.7 * NS)))
        times += [(e.start_ns + e.end_ns) // 2 for e in timeline.weight_events]
        for k, t in enumerate(times):
            for renderer in renderers:
                out.append((renderer.camera, renderer.render(figures.at(t), t / NS, k)))
    return out


@pytest.fixture(scope='module')
def frames():
    return rendered(STORE, [REPO / 'test/scenarios' / name for name in ('medium-1.yaml', 'hard-group-handoff.yaml')])


def match(truth: list, found: list, radius: float) -> tuple:
    """(true positives, false positives, false negatives): greedy nearest within radius."""
    left = list(found)
    tp = 0
    for u, v in truth:
        best = min(left, key=lambda p: math.hypot(p[0] - u, p[1] - v), default=None)
        if best is not None and math.hypot(best[0] - u, best[1] - v) <= radius:
            left.remove(best)
            tp += 1
    return tp, len(left), len(truth) - tp


def floor_error(camera, a, b) -> float:
    from jwo_nodes.core.frame_source import pixels_to_floor
    fa, fb = pixels_to_floor(camera, [a, b])
    return float(np.hypot(*(fa - fb)))


def test_shipped_model_is_small_and_opset_17_or_newer():
    onnx = pytest.importorskip('onnx')
    assert MODEL.is_file() and MODEL.stat().st_size < 5_000_000
    model = onnx.load(str(MODEL))
    assert max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')) >= 17


def scores(detector, frames) -> tuple:
    """{kind: (recall, precision, true count)} of shoppers' floor points and of hands,
    and the median floor error of the shoppers found."""
    results = []
    for start in range(0, len(frames), 16):
        results += detector.detect([f.image for _, f in frames[start:start + 16]])
    totals = {'shopper': [0, 0, 0], 'hand': [0, 0, 0]}
    errors = []
    for (camera, frame), found in zip(frames, results):
        # 0.3 m on the floor is ~19 px across and ~32 px down these cameras.
        for kind, truth in (('shopper', frame.people), ('hand', frame.hands)):
            points = [(d.u, d.v) for d in found if d.kind == kind]
            tp, fp, fn = match([(u, v) for _, u, v in truth], points, radius=16.0)
            for i, n in enumerate((tp, fp, fn)):
                totals[kind][i] += n
        for _, u, v in frame.people:
            near = [(d.u, d.v) for d in found if d.kind == 'shopper']
            if near:
                best = min(near, key=lambda p: math.hypot(p[0] - u, p[1] - v))
                if math.hypot(best[0] - u, best[1] - v) <= 16:
                    errors.append(floor_error(camera, best, (u, v)))
    found = {kind: (tp / max(1, tp + fn), tp / max(1, tp + fp), tp + fn) for kind, (tp, fp, fn) in totals.items()}
    print('recall, precision, count:', found, 'median floor error', np.median(errors))
    return found, float(np.median(errors))


def test_shipped_model_finds_shoppers_and_hands_on_rendered_frames(detector, frames):
    assert detector.format == det.CENTERNET and detector.stride == 4
    found, floor = scores(detector, frames)
    assert found['shopper'][2] > 100
    assert found['shopper'][0] >= 0.95 and found['shopper'][1] >= 0.95
    assert found['hand'][0] >= 0.9 and found['hand'][1] >= 0.9
    assert floor < 0.12


@pytest.mark.slow(30)
def test_shipped_model_finds_shoppers_and_hands_in_the_real_store_layout(detector):
    # The corner store's gondolas, boards at five and six levels and side-by-side reaches.
    # A model trained on the demo store alone took its boards for shoppers (precision
    # 0.46) and found 17 % of the hands in its facings.
    store = load_store_config(REPO / 'config/stores/corner.yaml')
    found, floor = scores(detector, rendered(store, [REPO / 'test/scenarios/corner/corner_medium-0.yaml']))
    assert found['shopper'][2] > 300 and found['hand'][2] > 50
    assert found['shopper'][0] >= 0.9 and found['shopper'][1] >= 0.95
    assert found['hand'][0] >= 0.85 and found['hand'][1] >= 0.8
    assert floor < 0.12


def test_batched_runs_give_what_single_runs_give(detector, frames):
    images = [f.image for _, f in frames[:4]]
    batched = detector.detect(images)
    single = [detector.detect([image])[0] for image in images]
    for a, b in zip(batched, single):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.kind == y.kind and abs(x.u - y.u) < 1e-3 and abs(x.v - y.v) < 1e-3


def test_providers_ask_for_cuda_only_where_it_runs():
    providers, note = det.choose_providers('no NVIDIA driver (libcuda.so.1 not found)')
    assert providers == ['CPUExecutionProvider'] and 'CPU' in note and 'libcuda' in note
    providers, note = det.choose_providers(None)
    assert providers[0] == 'CUDAExecutionProvider' and note is None


def test_cuda_problem_names_what_is_missing():
    class CpuBuild:
        @staticmethod
        def get_available_providers():
            return ['CPUExecutionProvider']
    assert 'no CUDA execution provider' in det.cuda_problem(CpuBuild)


def test_output_format_from_the_shape():
    assert det.output_format([2, 2, 48, 64]) == det.CENTERNET
    assert det.output_format([1, 84, 8400]) == det.YOLO_CHANNELS_FIRST
    assert det.output_format([1, 25200, 85]) == det.YOLO_ANCHORS_FIRST
    with pytest.raises(ValueError):
        det.output_format([1, 1000])


def tiny_yolo(path: Path, rows: np.ndarray, size: int = 64) -> Path:
    """An ONNX model with a YOLO-shaped output: the given rows, whatever the image."""
    onnx = pytest.importorskip('onnx')
    from onnx import TensorProto, helper, numpy_helper
    const = numpy_helper.from_array(rows.astype(np.float32)[None], 'rows')
    nodes = [helper.make_node('ReduceMean', ['image'], ['mean'], keepdims=0),
             helper.make_node('Mul', ['mean', 'zero'], ['nothing']),
             helper.make_node('Add', ['rows', 'nothing'], ['output0'])]
    graph = helper.make_graph(
        nodes, 'tiny_yolo', [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info('output0', TensorProto.FLOAT, list(const.dims))],
        initializer=[const, numpy_helper.from_array(np.array(0.0, np.float32), 'zero')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize('layout', ['v8', 'v5'])
def test_yolo_export_gives_person_box_bottoms(tmp_path, layout):
    # Input 64 x 64; a 128 x 64 frame is letterboxed: scale 0.5, padded 16 px above.
    boxes = [  # cx, cy, w, h (model pixels), person score, other-class score
        (20, 30, 8, 20, 0.9, 0.0),     # a person: bottom centre (20, 40) -> frame (40, 48)
        (21, 30, 8, 20, 0.8, 0.0),     # the same person again: suppressed
        (45, 28, 6, 16, 0.7, 0.0),     # another person: bottom (45, 36) -> frame (90, 40)
        (30, 30, 8, 8, 0.1, 0.95),     # not a person
    ]
    rows = []
    for cx, cy, w, h, person, other in boxes:
        classes = np.zeros(80)
        classes[0], classes[5] = person, other
        rows.append([cx, cy, w, h, *classes] if layout == 'v8' else [cx, cy, w, h, 1.0, *classes])
    rows = np.array(rows)
    if layout == 'v8':
        rows = rows.T                       # [84, A]
    model = tiny_yolo(tmp_path / 'yolo.onnx', rows)
    detector = det.Detector(det.DetectorSettings(model_path=str(model), shopper_threshold=0.5))
    assert detector.format == (det.YOLO_CHANNELS_FIRST if layout == 'v8' else det.YOLO_ANCHORS_FIRST)
    assert (detector.input_width, detector.input_height) == (64, 64)
    frame = np.zeros((64, 128, 3), np.uint8)
    found = detector.detect([frame, frame])
    assert len(found) == 2
    for result in found:
        points = sorted((round(d.u, 3), round(d.v, 3)) for d in result)
        assert points == [(40.0, 48.0), (90.0, 40.0)]
        assert all(d.kind == det.SHOPPER for d in result)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        det.Detector(det.DetectorSettings(model_path=str(tmp_path / 'nope.onnx')))
