"""Review clips: the recent JPEG frames of each camera, and the clip of an event in doubt
that a reviewer watches. No rclpy: plain stamps, bytes and files.

A clip is H.264 in MP4 (4:2:0), the format every current browser's <video> plays,
encoded with the libx264 that PyAV's wheel bundles. It is written to a temporary name in
its final directory and renamed into place (os.replace) only once it is fsync'd and
decodes back with every frame, so a reader (the uplink) finds a clip complete or not at
all.
"""
import bisect
import os
import re
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple, Optional

NS = 1_000_000_000
CLIP_SUFFIX = '.mp4'
_UNSAFE = re.compile(r'[^A-Za-z0-9_-]')

_CODEC = 'libx264'
# veryfast: 10 s of 640x480 at 10 fps in about 0.7 s on one core, the quality 'medium'
# gives these noisy frames in twice the time. No B-frames: with them the MP4's decode
# times ignore gaps in the stamps, and a clip whose camera lost frames near its end
# would end early (the file is a third larger for it).
_ENCODER_OPTIONS = {'preset': 'veryfast', 'crf': '23', 'bf': '0'}
# One thread: a clip must not take both cores of a small edge box from fusion.
_ENCODER_THREADS = 1
# The moov index ahead of the frames: the player starts before the whole file is in.
_MP4_OPTIONS = {'movflags': '+faststart'}
# Frame times in MPEG's 90 kHz ticks.
_TICKS_PER_S = 90_000
_TIME_BASE = Fraction(1, _TICKS_PER_S)

EVENT_TEXT = 'EVENT'
EVENT_BGR = (0, 0, 255)


class StampedFrame(NamedTuple):
    stamp_ns: int
    jpeg: bytes


@dataclass(frozen=True)
class EventWindow:
    """The stamps an event in doubt spans, [start_ns, end_ns]."""

    start_ns: int
    end_ns: int

    def holds(self, stamp_ns: int) -> bool:
        return self.start_ns <= stamp_ns <= self.end_ns


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
        """The StampedFrames stamped in [t0_ns, t1_ns], oldest first."""
        lo = bisect.bisect_left(self._stamps, t0_ns)
        hi = bisect.bisect_right(self._stamps, t1_ns)
        return [StampedFrame(stamp, jpeg)
                for stamp, jpeg in zip(self._stamps[lo:hi], self._frames[lo:hi])]

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
    """A relative path that stays under the clip root and names a clip file."""
    parts = ref.split('/')
    return (ref.endswith(CLIP_SUFFIX) and not ref.startswith('/')
            and all(part not in ('', '.', '..') for part in parts))


def frame_rate(stamps_ns: list, fallback_fps: float) -> float:
    """Frames per second of stamp time over the given stamps (a clip shows its last
    frame for one interval of it); the fallback for fewer than two."""
    if len(stamps_ns) < 2 or stamps_ns[-1] <= stamps_ns[0]:
        return fallback_fps
    return (len(stamps_ns) - 1) * NS / (stamps_ns[-1] - stamps_ns[0])


def mark_event(image) -> None:
    """Marks a BGR frame as inside the event's window, in place: a red border and a red
    EVENT label in the top left corner, so a reviewer sees when the weight changed
    between the clip's margins (the label small: shelves are often at the top)."""
    import cv2
    font = cv2.FONT_HERSHEY_SIMPLEX
    height, width = image.shape[:2]
    border = max(2, min(width, height) // 60)
    scale = max(0.3, height / 600)
    thickness = max(1, border // 3)
    (text_width, text_height), baseline = cv2.getTextSize(EVENT_TEXT, font, scale, thickness)
    # A rectangle's outline is centred on its edge: twice the border, half of it inside.
    cv2.rectangle(image, (0, 0), (width - 1, height - 1), EVENT_BGR, 2 * border)
    cv2.rectangle(image, (0, 0), (text_width + 4 * border, text_height + baseline + 2 * border),
                  EVENT_BGR, cv2.FILLED)
    cv2.putText(image, EVENT_TEXT, (2 * border, border + text_height), font, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)


def write_clip(path, frames: list, window: EventWindow, fallback_fps: float) -> int:
    """Writes the frames (StampedFrame, in stamp order) as an H.264 MP4 to path,
    atomically: each frame shown at its stamp, the last for one frame interval, and the
    frames inside ``window`` marked (mark_event). Frames that do not decode are left
    out; one of another size is scaled to the first frame's (rounded down to even
    sides, as 4:2:0 chroma needs). Returns the number of frames written; raises
    ClipError when none decode or the file does not decode back whole."""
    # Imported here: fusion_node uses clip_ref and need not load OpenCV or FFmpeg.
    import av
    import cv2
    import numpy as np

    directory, name = os.path.split(os.fspath(path))
    os.makedirs(directory or '.', exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory or '.', prefix=f'.{name}.', suffix='.tmp')
    os.close(fd)
    fps = frame_rate([frame.stamp_ns for frame in frames], fallback_fps)
    written = 0
    try:
        with av.open(temporary, 'w', format='mp4', options=_MP4_OPTIONS) as container:
            stream, first_ns, last_pts = None, None, -1
            # One frame decoded at a time: a long window must not hold every image at once.
            for frame in frames:
                image = (cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
                         if frame.jpeg else None)   # (imdecode asserts on an empty buffer)
                if image is None:
                    continue
                if stream is None:
                    stream = _h264_stream(container, image.shape[1], image.shape[0], fps)
                    first_ns = frame.stamp_ns
                if window.holds(frame.stamp_ns):
                    mark_event(image)
                # PyAV scales a frame of another size to the stream's.
                video_frame = av.VideoFrame.from_ndarray(image, format='bgr24')
                # Two stamps closer than a tick must not share one: the encoder refuses.
                last_pts = max(last_pts + 1, (frame.stamp_ns - first_ns) * _TICKS_PER_S // NS)
                video_frame.pts, video_frame.time_base = last_pts, _TIME_BASE
                container.mux(stream.encode(video_frame))
                written += 1
            if stream is None:
                raise ClipError(f'none of {len(frames)} frames decode')
            container.mux(stream.encode(None))
        decoded = _decoded_h264_frames(temporary)
        if decoded != written:
            raise ClipError(f'wrote {written} frames, {decoded} decode back')
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return written


def _h264_stream(container, width: int, height: int, fps: float):
    # A frame lasts until the next one's stamp; the rate gives the last one's length.
    stream = container.add_stream(_CODEC, rate=Fraction(fps).limit_denominator(1000),
                                  options=_ENCODER_OPTIONS)
    stream.width, stream.height = width - width % 2, height - height % 2
    stream.pix_fmt = 'yuv420p'       # browsers play 4:2:0 only
    stream.time_base = stream.codec_context.time_base = _TIME_BASE
    stream.codec_context.thread_count = _ENCODER_THREADS
    return stream


def _decoded_h264_frames(path) -> int:
    """How many frames of H.264 the file decodes to (0 for another codec)."""
    import av
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if stream.codec_context.name != 'h264':
                return 0
            return sum(1 for _ in container.decode(stream))
    except (av.error.FFmpegError, IndexError):
        return 0
