"""What a hand holds, read from a small crop of the camera frame around it: whether it
holds a product, and that product's colour as chromaticity (the blue and green shares,
which do not change when the light dims or brightens). Fusion learns each product's
colour from the store's own takes and tells products of one weight apart by it.

The reader is a small ONNX model (``models/held_item.onnx``, trained by
``jwo_nodes.train.train_held_item`` on rendered frames): a 32 x 32 pixel crop of the
full-resolution frame centred on a detected hand, RGB in [0, 1], N x 3 x 32 x 32 in;
N x 3 out: the probability that the hand holds something, and the blue and green
shares of its colour. Crops, not the detector's input: the detector sees the frame at
a fifth of its pixels, where a product in a hand is two or three pixels wide.

Pure numpy/cv2 and ONNX Runtime: no rclpy, no clocks.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

CROP_PX = 32


@dataclass(frozen=True)
class HeldItem:
    holding: float       # probability that the hand holds a product
    blue: float          # chromaticity of its colour: blue / (blue + green + red)
    green: float


def crops(bgr: np.ndarray, points) -> np.ndarray:
    """N x 3 x 32 x 32 float32 RGB in [0, 1], centred on each (u, v) pixel; beyond the
    frame's edge the edge pixels repeat."""
    half = CROP_PX // 2
    padded = np.pad(bgr, ((half, half), (half, half), (0, 0)), mode='edge')
    out = np.empty((len(points), 3, CROP_PX, CROP_PX), np.float32)
    h, w = bgr.shape[:2]
    for i, (u, v) in enumerate(points):
        x = min(max(int(round(u)), 0), w - 1)
        y = min(max(int(round(v)), 0), h - 1)
        patch = padded[y:y + CROP_PX, x:x + CROP_PX]
        out[i] = patch[:, :, ::-1].transpose(2, 0, 1) / 255.0
    return out


def chromaticity(bgr) -> tuple:
    """(blue share, green share) of a BGR colour."""
    b, g, r = (float(c) for c in bgr)
    total = max(b + g + r, 1e-6)
    return b / total, g / total


class HeldItemReader:
    """One ONNX model, run on the crops around a frame's hands."""

    def __init__(self, model_path: str, threads: int = 0, ort=None):
        from jwo_nodes.core.detector import choose_providers, cuda_problem
        if ort is None:
            import onnxruntime as ort
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f'held-item model {str(path)!r} does not exist')
        providers, _ = choose_providers(cuda_problem(ort))
        options = ort.SessionOptions()
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def read(self, bgr: np.ndarray, points) -> list:
        """A HeldItem per (u, v) hand pixel of the frame."""
        if not len(points):
            return []
        out = self.session.run(None, {self.input_name: crops(bgr, points)})[0]
        return [HeldItem(float(h), float(b), float(g)) for h, b, g in out]


def default_model_path() -> Optional[str]:
    """models/held_item.onnx of the source checkout, or of <prefix>/share/jwo."""
    from jwo_nodes.paths import data_path
    found = data_path('models', 'held_item.onnx')
    return str(found) if found is not None else None
