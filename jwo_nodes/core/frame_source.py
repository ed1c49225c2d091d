"""Camera frames: OpenCV sources opened from a config string, and the camera
calibration (image pixels <-> floor metres). No rclpy here; the simulated store is
rendered by jwo_nodes.core.render.

Frames travel as JPEG (encode_jpeg), the same coding for camera_node, the offline
vision checks and the held-item reader's training.

A source string is a device index ('0'), a device path ('/dev/video0'), a video file
path or a stream URL (rtsp://, rtsps://, http://, https://). A live source (device,
stream) that drops out is reopened with exponential backoff; a file plays once or
loops.
"""
import re
import time
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from jwo_nodes.core.config import Camera

DEVICE, FILE, STREAM = 'device', 'file', 'stream'
_STREAM_SCHEMES = ('rtsp://', 'rtsps://', 'http://', 'https://')
# JPEG quality of the frames cameras publish (camera_node's jpeg_quality).
JPEG_QUALITY = 80


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """The frame as JPEG bytes; ValueError naming the frame if it cannot be coded."""
    try:
        ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    except cv2.error as error:
        ok, why = False, str(error).strip().splitlines()[-1]
    else:
        why = 'the encoder refused it'
    if not ok:
        shape = getattr(image, 'shape', None)
        raise ValueError(f'cannot code a frame of shape {shape} as JPEG: {why}')
    return data


class FrameSourceError(Exception):
    """A source that cannot be opened; the message names it (without any password)."""


def source_kind(source: str) -> str:
    text = source.strip()
    if text.isdigit() or text.startswith('/dev/video'):
        return DEVICE
    if text.lower().startswith(_STREAM_SCHEMES):
        return STREAM
    return FILE


def redact(source: str) -> str:
    """The source with any user:password@ of a URL masked, for logs and errors."""
    return re.sub(r'(?<=://)[^/@]+@', '***@', source)


class FrameSource:
    """Frames from one OpenCV source.

    ``read()`` returns a BGR frame, or None when none could be had this time (a failed
    grab; a live source is then reopened with backoff on later calls, a file that
    ended without ``loop`` stays finished). ``size`` (width, height), when given, is the
    size every returned frame has (frames of another size are resized), so pixel
    coordinates stay those of the camera's homography.
    """

    def __init__(self, source: str, *, loop: bool = True, size: Optional[tuple] = None,
                 backoff_s: tuple = (0.5, 10.0),
                 opener: Callable = cv2.VideoCapture, clock: Callable[[], float] = time.monotonic):
        self.source = source.strip()
        self.kind = source_kind(self.source)
        self.loop = loop
        self.size = tuple(size) if size else None
        self._backoff_min, self._backoff_max = backoff_s
        self._backoff = self._backoff_min
        self._opener = opener
        self._clock = clock
        self._retry_at = 0.0
        self.finished = False
        self.failed_grabs = 0
        self.reconnects = 0
        if self.kind == FILE and not Path(self.source).is_file():
            raise FrameSourceError(f'video file {self.source!r} does not exist')
        self._capture = self._open()
        if self._capture is None:
            what = {DEVICE: 'camera device', FILE: 'video file', STREAM: 'stream'}[self.kind]
            raise FrameSourceError(f'cannot open {what} {redact(self.source)!r}'
                                   + (' (no such device or no permission)' if self.kind == DEVICE
                                      else ' (not a video OpenCV can decode)' if self.kind == FILE
                                      else ' (unreachable, refused or not a video stream)'))

    @property
    def connected(self) -> bool:
        return self._capture is not None

    def _open(self):
        target = int(self.source) if self.source.isdigit() else self.source
        try:
            capture = self._opener(target)
        except cv2.error:
            return None
        if capture is None or not capture.isOpened():
            if capture is not None:
                capture.release()
            return None
        if self.kind == DEVICE:
            # The newest frame matters: no queue of old frames on a slow reader.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if self.size:
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        return capture

    def read(self) -> Optional[np.ndarray]:
        if self.finished:
            return None
        if self._capture is None:
            if self._clock() < self._retry_at:
                return None
            self._capture = self._open()
            if self._capture is None:
                self._schedule_retry()
                return None
            self.reconnects += 1
            self._backoff = self._backoff_min
        ok, frame = self._grab()
        if not ok and self.kind == FILE:
            if not self.loop:
                self.finished = True
                return None
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._grab()
            if not ok:  # not even the first frame again: reopen it
                self._capture.release()
                self._capture = self._open()
                ok, frame = self._grab() if self._capture is not None else (False, None)
        if not ok:
            self.failed_grabs += 1
            if self.kind != FILE:
                self._capture.release()
                self._capture = None
                self._schedule_retry()
            elif self._capture is None:
                self.finished = True
            return None
        if self.size and (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        return frame

    def _grab(self):
        try:
            ok, frame = self._capture.read()
        except cv2.error:
            return False, None
        return (ok and frame is not None and frame.size > 0), frame

    def _schedule_retry(self) -> None:
        self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


# -- camera calibration -------------------------------------------------------------

def homography(camera: Camera) -> np.ndarray:
    """Image pixels -> floor metres, 3x3."""
    return np.array(camera.homography, dtype=np.float64).reshape(3, 3)


def floor_to_pixels(camera: Camera, points) -> np.ndarray:
    """Floor points (N x 2, metres) -> image points (N x 2, pixels)."""
    inverse = np.linalg.inv(homography(camera))
    floor = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(floor, inverse).reshape(-1, 2)


def pixels_to_floor(camera: Camera, points) -> np.ndarray:
    image = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(image, homography(camera)).reshape(-1, 2)


def nadir(camera: Camera) -> np.ndarray:
    """The floor point under a ceiling camera looking straight down (its image centre):
    what stands higher appears displaced away from it."""
    return pixels_to_floor(camera, [(camera.width / 2, camera.height / 2)])[0]
