"""Review clips: the recent JPEG frames of each camera, and the MP4 clip of an event in
doubt that a reviewer watches. No rclpy: plain stamps, bytes and files.

A clip is written to a temporary name in its final directory and renamed into place
(os.replace) only once it is fsync'd and reads back with every frame, so a reader (the
uplink) finds a clip complete or not at all.
"""
import bisect
import os
import re
import tempfile
from typing import Optional

NS = 1_000_000_000
CLIP_SUFFIX = '.mp4'
_UNSAFE = re.compile(r'[^A-Za-z0-9_-]')


class ClipError(Exception):
    pass


class FrameRing:
    """The frames of one camera over the last ``buffer_s`` seconds of stamp time (from
    its newest frame back), in stamp order; older frames are dropped."""

    def __init__(self, buffer_s: float):
        self.buffer_ns = int(buffer_s * NS)
        self._stamps = []
        self._frames = []
        # Frames stamped at or before this were dropped (None: none so far).
        self.horizon_ns: Optional[int] = None

    @property
    def newest_ns(self) -> Optional[int]:
        return self._stamps[-1] if self._stamps else None

    def add(self, stamp_ns: int, jpeg: bytes) -> bool:
        """Keeps a frame; False for a stamp already held or one older than the ring."""
        if self._stamps and stamp_ns < self._stamps[-1] - self.buffer_ns:
            return False
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            return False
        self._stamps.insert(i, stamp_ns)
        self._frames.insert(i, jpeg)
        cut = bisect.bisect_left(self._stamps, self._stamps[-1] - self.buffer_ns)
        if cut:
            self.horizon_ns = self._stamps[cut - 1]
            del self._stamps[:cut]
            del self._frames[:cut]
        return True

    def frames_between(self, t0_ns: int, t1_ns: int) -> list:
        """(stamp_ns, jpeg) of the frames stamped in [t0_ns, t1_ns], oldest first."""
        lo = bisect.bisect_left(self._stamps, t0_ns)
        hi = bisect.bisect_right(self._stamps, t1_ns)
        return list(zip(self._stamps[lo:hi], self._frames[lo:hi]))

    def dropped_from(self, t0_ns: int) -> bool:
        """Whether frames stamped at or after t0_ns may have been dropped already."""
        return self.horizon_ns is not None and t0_ns <= self.horizon_ns


def _escape(value: str) -> str:
    # Injective and filesystem-safe: only [A-Za-z0-9_-] stay, the rest is %XX of its
    # UTF-8 bytes, so no component is empty, '.', '..' or holds a '/'.
    if not value:
        raise ValueError('an empty id cannot name a clip')
    return _UNSAFE.sub(lambda m: ''.join(f'%{b:02X}' for b in m.group().encode()), value)


def clip_ref(store_id: str, receipt_id: str, event_id: str, camera_id: str) -> str:
    """The clip of one camera for one event in doubt of one receipt, relative to the
    clip root: ``<store>/<receipt>/<event>.<camera>.mp4``, each id escaped."""
    return (f'{_escape(store_id)}/{_escape(receipt_id)}/'
            f'{_escape(event_id)}.{_escape(camera_id)}{CLIP_SUFFIX}')


def is_clip_ref(ref: str) -> bool:
    """A relative path that stays under the clip root and names an MP4 file."""
    parts = ref.split('/')
    return (ref.endswith(CLIP_SUFFIX) and not ref.startswith('/')
            and all(part not in ('', '.', '..') for part in parts))


def frame_rate(stamps_ns: list, fallback_fps: float) -> float:
    """Frames per second of stamp time over the given stamps, so a clip plays at the
    pace it was filmed whatever frames were lost; the fallback for fewer than two."""
    if len(stamps_ns) < 2 or stamps_ns[-1] <= stamps_ns[0]:
        return fallback_fps
    return (len(stamps_ns) - 1) * NS / (stamps_ns[-1] - stamps_ns[0])


def write_clip(path, jpegs: list, fps: float) -> int:
    """Writes the JPEG frames as an MP4 (MPEG-4 part 2, 'mp4v') at ``fps`` to path,
    atomically. Frames that do not decode are left out; one of another size is scaled
    to the first frame's. Returns the number of frames written; raises ClipError when
    none decode or the file does not read back whole."""
    # Imported here: fusion_node uses clip_ref and need not load OpenCV.
    import cv2
    import numpy as np

    directory, name = os.path.split(os.fspath(path))
    os.makedirs(directory or '.', exist_ok=True)
    # The temporary name keeps the .mp4 suffix: OpenCV picks the container by it.
    fd, temporary = tempfile.mkstemp(dir=directory or '.', prefix=f'.{name}.', suffix=CLIP_SUFFIX)
    os.close(fd)
    writer, written = None, 0
    try:
        # One frame decoded at a time: a long window must not hold every image at once.
        for jpeg in jpegs:
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) if jpeg else None
            if image is None:        # (imdecode asserts on an empty buffer)
                continue
            if writer is None:
                size = (image.shape[1], image.shape[0])
                writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*'mp4v'), float(fps), size)
                if not writer.isOpened():
                    raise ClipError('the MP4 writer does not open')
            elif (image.shape[1], image.shape[0]) != size:
                image = cv2.resize(image, size)
            writer.write(image)
            written += 1
        if writer is None:
            raise ClipError(f'none of {len(jpegs)} frames decode')
        writer.release()
        check = cv2.VideoCapture(temporary)
        frames = int(check.get(cv2.CAP_PROP_FRAME_COUNT)) if check.isOpened() else -1
        check.release()
        if frames != written:
            raise ClipError(f'wrote {written} frames, {max(frames, 0)} read back')
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        if writer is not None:
            writer.release()
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return written
