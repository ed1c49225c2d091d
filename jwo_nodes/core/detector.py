"""Shopper and hand detection on camera frames with ONNX Runtime. No rclpy here.

Two kinds of model are understood, told apart by the shape of their output:

* jwo's own CenterNet-style model (``models/detector.onnx``, trained by
  ``jwo_nodes.train.train_detector``): RGB in [0, 1], N x 3 x H x W in; N x C x H/s x W/s
  heatmaps out (after a sigmoid), channel 0 peaking at shoppers' floor points (feet),
  channel 1 at hands. Peaks above a threshold that are the maximum of their 3 x 3
  neighbourhood are detections, refined to sub-cell precision by the weighted centroid
  of that neighbourhood.
* a standard YOLO export (Ultralytics v8 style ``[1, 84, A]``: 4 box + 80 class scores
  per anchor, or v5 style ``[1, A, 85]``: box, objectness, 80 classes; either
  orientation): the frame is letterboxed to the model's input, person boxes (class 0)
  above the threshold are kept after non-maximum suppression, and a shopper's floor
  point is the middle of the box's bottom edge. These models find no hands.

Frames of several cameras are run as one batch when the model's batch dimension is
dynamic (one run per frame otherwise). The CUDA provider is used when a GPU and the
CUDA libraries are there (checked before it is asked for), else the CPU.
"""
import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

SHOPPER, HAND = 'shopper', 'hand'
CENTERNET, YOLO_CHANNELS_FIRST, YOLO_ANCHORS_FIRST = 'centernet', 'yolo[1,C,A]', 'yolo[1,A,C]'
_YOLO_CLASSES = (84, 85)


@dataclass(frozen=True)
class DetectorSettings:
    model_path: str
    # Model input (pixels); a model with a fixed input size overrides these.
    input_width: int = 256
    input_height: int = 192
    shopper_threshold: float = 0.35
    hand_threshold: float = 0.35
    # YOLO path: boxes overlapping more than this are one (non-maximum suppression).
    nms_iou: float = 0.5
    # ONNX Runtime threads per run (0: its default).
    threads: int = 0


@dataclass(frozen=True)
class Detection:
    kind: str           # SHOPPER or HAND
    u: float            # pixel of the original frame (floor point for a shopper)
    v: float
    score: float


def cuda_problem(ort) -> Optional[str]:
    """Why ONNX Runtime cannot run on CUDA here, or None when it can.

    onnxruntime-gpu lists CUDAExecutionProvider whether or not there is a GPU and the
    CUDA libraries, and asking for it where they are missing logs a loud error before
    it falls back; so check first: a driver that sees a device, and a CUDA provider
    library whose dependencies load."""
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        return 'this onnxruntime build has no CUDA execution provider'
    try:
        cuda = ctypes.CDLL('libcuda.so.1')
    except OSError:
        return 'no NVIDIA driver (libcuda.so.1 not found)'
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return 'the NVIDIA driver sees no CUDA device'
    capi = Path(ort.__file__).parent / 'capi'
    try:
        ctypes.CDLL(str(capi / 'libonnxruntime_providers_shared.so'), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / 'libonnxruntime_providers_cuda.so'))
    except OSError as error:
        return f'the CUDA libraries onnxruntime needs do not load ({error})'
    return None


def choose_providers(cuda_unusable: Optional[str]) -> tuple:
    """(providers to ask for, a note for the log or None) given cuda_problem()."""
    if cuda_unusable is None:
        return ['CUDAExecutionProvider', 'CPUExecutionProvider'], None
    return ['CPUExecutionProvider'], f'detector on the CPU: {cuda_unusable}'


def output_format(shape) -> str:
    """The model kind from its output shape (a list of ints)."""
    if len(shape) == 4:
        return CENTERNET
    if len(shape) == 3:
        if shape[1] in _YOLO_CLASSES and shape[2] not in _YOLO_CLASSES:
            return YOLO_CHANNELS_FIRST
        if shape[2] in _YOLO_CLASSES:
            return YOLO_ANCHORS_FIRST
    raise ValueError(f'output shape {list(shape)} is neither N x C x h x w heatmaps nor a YOLO '
                     f'[1, 84|85, A] / [1, A, 84|85] export')


def preprocess(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """BGR frame -> (3, height, width) float32 RGB in [0, 1], stretched to the size."""
    small = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def letterbox(bgr: np.ndarray, width: int, height: int) -> tuple:
    """(3, height, width) float32 RGB in [0, 1] with the frame scaled to fit and centred
    on grey, the scale, and the (x, y) padding."""
    h, w = bgr.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    canvas = np.full((height, width, 3), 114, np.uint8)
    px, py = (width - nw) // 2, (height - nh) // 2
    canvas[py:py + nh, px:px + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return (np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0,
            scale, (px, py))


def heatmap_peaks(heatmap: np.ndarray, threshold: float) -> list:
    """(x, y, score) of the local maxima (3 x 3) above threshold, in cells, sub-cell
    refined."""
    hm = np.ascontiguousarray(heatmap, dtype=np.float32)
    peaks = (hm >= cv2.dilate(hm, np.ones((3, 3), np.uint8))) & (hm > threshold)
    out = []
    h, w = hm.shape
    for y, x in zip(*np.nonzero(peaks)):
        y0, y1, x0, x1 = max(0, y - 1), min(h, y + 2), max(0, x - 1), min(w, x + 2)
        patch = hm[y0:y1, x0:x1]
        total = float(patch.sum())
        gy, gx = np.mgrid[y0:y1, x0:x1]
        out.append((float((patch * gx).sum() / total), float((patch * gy).sum() / total), float(hm[y, x])))
    return out


class Detector:
    """One ONNX model, run on batches of BGR frames."""

    def __init__(self, settings: DetectorSettings, ort=None):
        if ort is None:
            import onnxruntime as ort
        self.settings = settings
        path = Path(settings.model_path)
        if not path.is_file():
            raise FileNotFoundError(f'detector model {str(path)!r} does not exist')
        self.providers, self.provider_note = choose_providers(cuda_problem(ort))
        options = ort.SessionOptions()
        # Threads that spin while waiting for work take the CPU the cameras and the
        # other nodes on this machine need.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        if settings.threads:
            options.intra_op_num_threads = settings.threads
        self.session = ort.InferenceSession(str(path), options, providers=self.providers)
        self.provider = self.session.get_providers()[0]
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = list(model_input.shape)
        self.batch_dynamic = not isinstance(shape[0], int)
        self.input_height = shape[2] if isinstance(shape[2], int) else settings.input_height
        self.input_width = shape[3] if isinstance(shape[3], int) else settings.input_width
        # The output's real shape (symbolic dimensions resolved) from one warm-up run.
        probe = np.zeros((1, 3, self.input_height, self.input_width), np.float32)
        out = self.session.run(None, {self.input_name: probe})[0]
        self.format = output_format(out.shape)
        self.stride = self.input_width / out.shape[3] if self.format == CENTERNET else 1.0

    def detect(self, frames: list) -> list:
        """One list of Detections per frame (pixels of that frame)."""
        if not frames:
            return []
        if self.format == CENTERNET:
            batch = np.stack([preprocess(f, self.input_width, self.input_height) for f in frames])
            heatmaps = self._run(batch)
            return [self._decode_heatmaps(hm, f.shape) for hm, f in zip(heatmaps, frames)]
        boxes = [letterbox(f, self.input_width, self.input_height) for f in frames]
        outputs = self._run(np.stack([b[0] for b in boxes]))
        return [self._decode_yolo(out, scale, pad) for out, (_, scale, pad) in zip(outputs, boxes)]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.batch_dynamic or len(batch) == 1:
            return self.session.run(None, {self.input_name: batch})[0]
        return np.concatenate([self.session.run(None, {self.input_name: batch[i:i + 1]})[0]
                               for i in range(len(batch))])

    def _decode_heatmaps(self, heatmaps: np.ndarray, frame_shape) -> list:
        sx = frame_shape[1] / self.input_width * self.stride
        sy = frame_shape[0] / self.input_height * self.stride
        found = []
        for channel, kind, threshold in ((0, SHOPPER, self.settings.shopper_threshold),
                                         (1, HAND, self.settings.hand_threshold)):
            if channel >= heatmaps.shape[0]:
                continue
            for x, y, score in heatmap_peaks(heatmaps[channel], threshold):
                found.append(Detection(kind, x * sx, y * sy, score))
        return found

    def _decode_yolo(self, output: np.ndarray, scale: float, pad: tuple) -> list:
        rows = output.T if self.format == YOLO_CHANNELS_FIRST else output      # A x C
        if rows.shape[1] == 85:
            scores = rows[:, 4] * rows[:, 5]
        else:
            scores = rows[:, 4]
        keep = scores > self.settings.shopper_threshold
        rows, scores = rows[keep], scores[keep]
        if not len(rows):
            return []
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        rects = [[float(a - c / 2), float(b - d / 2), float(c), float(d)] for a, b, c, d in zip(cx, cy, w, h)]
        chosen = cv2.dnn.NMSBoxes(rects, [float(s) for s in scores], self.settings.shopper_threshold,
                                  self.settings.nms_iou)
        found = []
        for i in np.array(chosen).reshape(-1):
            u = (float(cx[i]) - pad[0]) / scale
            v = (float(cy[i] + h[i] / 2) - pad[1]) / scale
            found.append(Detection(SHOPPER, u, v, float(scores[i])))
        return found


def default_model_path() -> Optional[str]:
    """models/detector.onnx of the source checkout, or of <prefix>/share/jwo."""
    from jwo_nodes.paths import data_path
    found = data_path('models', 'detector.onnx')
    return str(found) if found is not None else None
