"""Review clips without a ROS graph: the per-camera frame ring, clip references and the
H.264 MP4 writer (jwo_nodes.core.clips)."""
import os
from typing import NamedTuple

import av
import cv2
import numpy as np
import pytest

from jwo_nodes.core import clips
from jwo_nodes.core.clips import (NS, ClipError, EventWindow, FrameRing, StampedFrame, clip_ref,
                                  frame_rate, is_clip_ref, write_clip)

T0 = 1_700_000_000 * NS
FRAME_NS = NS // 10
NO_EVENT = EventWindow(0, 0)


def jpeg(level: int, size=(64, 48)) -> bytes:
    """A flat grey frame: its level is recognisable after H.264 compression."""
    ok, data = cv2.imencode('.jpg', np.full((size[1], size[0], 3), level, np.uint8))
    assert ok
    return data.tobytes()


def stamped(jpegs: list, frame_ns: int = FRAME_NS) -> list:
    return [StampedFrame(T0 + k * frame_ns, data) for k, data in enumerate(jpegs)]


class DecodedFrame(NamedTuple):
    time_s: float
    image: np.ndarray    # BGR


def decode(path) -> list:
    """Every frame of the file's video stream, decoded the way a browser does."""
    with av.open(str(path)) as container:
        return [DecodedFrame(float(frame.time), frame.to_ndarray(format='bgr24'))
                for frame in container.decode(video=0)]


def centre_level(image) -> int:
    """The grey level of a frame's middle, away from the event marks."""
    height, width = image.shape[:2]
    return int(round(float(image[height // 3:2 * height // 3, width // 3:2 * width // 3].mean())))


def read_levels(path) -> list:
    return [centre_level(frame.image) for frame in decode(path)]


def red_share(region) -> float:
    """The share of the region's pixels in the event marks' red."""
    return float(((region[..., 2] > 170) & (region[..., 1] < 90) & (region[..., 0] < 90)).mean())


def is_marked(image) -> bool:
    """The red border of a frame inside the event's window, on its left edge."""
    return red_share(image[image.shape[0] // 2, :1]) == 1.0


def marked_frames(path) -> list:
    return [is_marked(frame.image) for frame in decode(path)]


def test_ring_keeps_buffer_s_of_stamp_time_in_stamp_order():
    ring = FrameRing(buffer_s=2.0)
    assert ring.newest_ns is None and ring.frames_between(0, T0 * 2) == []
    for k in (0, 2, 1, 3):                                  # one frame late
        assert ring.add(T0 + k * NS // 2, b'%d' % k)
    assert not ring.add(T0 + NS // 2, b'again')             # stamp already held
    assert [f for _, f in ring.frames_between(T0, T0 + 10 * NS)] == [b'0', b'1', b'2', b'3']
    assert ring.horizon_ns is None and not ring.dropped_from(T0)
    assert ring.add(T0 + 5 * NS // 2, b'5')                 # 2.5 s: frame 0 is older than 2 s
    assert ring.frames_between(T0, T0 + 10 * NS)[0] == StampedFrame(T0 + NS // 2, b'1')
    assert ring.horizon_ns == T0 and ring.dropped_from(T0) and not ring.dropped_from(T0 + 1)
    assert not ring.add(T0 - NS, b'old')                    # older than the ring
    assert ring.newest_ns == T0 + 5 * NS // 2


def test_frames_between_is_inclusive():
    ring = FrameRing(buffer_s=60.0)
    for k in range(10):
        ring.add(T0 + k * NS, bytes([k]))
    assert [s for s, _ in ring.frames_between(T0 + 2 * NS, T0 + 4 * NS)] == [
        T0 + 2 * NS, T0 + 3 * NS, T0 + 4 * NS]
    assert ring.frames_between(T0 + 2 * NS + 1, T0 + 3 * NS - 1) == []
    assert ring.frames_between(T0 + 20 * NS, T0 + 30 * NS) == []


def test_clip_ref_is_deterministic_relative_and_safe():
    ref = clip_ref('demo', 'demo-v-abc123', 'S1/7', 'cam_front')
    assert ref == 'demo/demo-v-abc123/S1%2F7.cam_front.mp4'
    assert clip_ref('demo', 'demo-v-abc123', 'S1/7', 'cam_front') == ref
    assert is_clip_ref(ref)
    # Nothing an id holds can leave its path component or the clip root.
    odd = clip_ref('../x', '/etc/passwd', '..', 'cam .mp4')
    assert is_clip_ref(odd) and odd.count('/') == 2 and '..' not in odd
    # Distinct ids, distinct clips.
    assert clip_ref('demo', 'R', 'S1/7', 'cam') != clip_ref('demo', 'R', 'S1_7', 'cam')
    assert clip_ref('demo', 'R', 'a.b', 'c') != clip_ref('demo', 'R', 'a', 'b.c')
    with pytest.raises(ValueError):
        clip_ref('demo', '', 'S1/7', 'cam')
    for bad in ('/abs/x.mp4', 'a/../x.mp4', 'a//x.mp4', 'x.webm', './x.mp4'):
        assert not is_clip_ref(bad), bad


def test_frame_rate_follows_the_stamps():
    assert frame_rate([T0, T0 + NS // 5, T0 + 2 * NS // 5], 10.0) == pytest.approx(5.0)
    assert frame_rate([T0], 10.0) == 10.0
    assert frame_rate([], 12.5) == 12.5


def test_write_clip_writes_h264_that_browsers_play(tmp_path):
    levels = [30, 80, 130, 180, 230]
    path = tmp_path / 'demo' / 'R1' / 'S1%2F7.cam_front.mp4'
    assert write_clip(path, stamped([jpeg(level) for level in levels], NS // 5), NO_EVENT, 10.0) == 5
    assert os.listdir(path.parent) == [path.name]           # no temporary left behind
    with av.open(str(path)) as container:
        assert container.format.name.split(',')[0] == 'mov'
        stream = container.streams.video[0]
        # H.264 ('avc1' in MP4) in 4:2:0: what <video> plays in Chromium, Firefox and
        # Safari alike (MPEG-4 part 2, 'mp4v', plays in none of them).
        assert (stream.codec_context.name, stream.codec_tag) == ('h264', 'avc1')
        assert stream.codec_context.pix_fmt == 'yuv420p'
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 48)
        assert container.duration / 1e6 == pytest.approx(1.0)   # 5 frames at 5 fps
    data = path.read_bytes()
    assert data.index(b'moov') < data.index(b'mdat')          # the index first: plays while loading
    frames = decode(path)
    assert [frame.time_s for frame in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [centre_level(frame.image) for frame in frames] == pytest.approx(levels, abs=6)


def test_write_clip_shows_each_frame_at_its_stamp(tmp_path):
    path = tmp_path / 'clip.mp4'
    # Frames 3 and 4 were lost: frame 2 stays up until frame 5's stamp.
    frames = [StampedFrame(T0 + k * FRAME_NS, jpeg(20 * k + 40)) for k in (0, 1, 2, 5, 6)]
    assert write_clip(path, frames, NO_EVENT, 10.0) == 5
    assert [frame.time_s for frame in decode(path)] == pytest.approx([0.0, 0.1, 0.2, 0.5, 0.6])
    with av.open(str(path)) as container:
        # The last frame lasts one interval of the stamps' rate: 4 in 0.6 s.
        assert container.duration / 1e6 == pytest.approx(0.75, abs=0.001)


def test_write_clip_marks_the_frames_of_the_event_window(tmp_path):
    path = tmp_path / 'clip.mp4'
    frames = stamped([jpeg(100 + 10 * k, size=(160, 120)) for k in range(10)])
    window = EventWindow(T0 + 3 * FRAME_NS, T0 + 6 * FRAME_NS)    # frames 3 to 6
    assert write_clip(path, frames, window, 10.0) == 10
    decoded = decode(path)
    assert [is_marked(frame.image) for frame in decoded] == [3 <= k <= 6 for k in range(10)]
    # The EVENT label in the top left corner, inside the border; nothing in the top right.
    assert [red_share(frame.image[3:12, 3:35]) > 0.5 for frame in decoded] == [
        3 <= k <= 6 for k in range(10)]
    assert [red_share(frame.image[4:12, -40:-8]) for frame in decoded] == [0.0] * 10
    # The middle of every frame is the camera's.
    assert [centre_level(frame.image) for frame in decoded] == pytest.approx(
        [100 + 10 * k for k in range(10)], abs=6)


def test_write_clip_skips_bad_frames_and_scales_odd_sizes(tmp_path):
    path = tmp_path / 'clip.mp4'
    # 4:2:0 chroma needs even sides: 65x49 is written as 64x48, the later frames too.
    frames = stamped([jpeg(40, size=(65, 49)), b'not a jpeg', jpeg(200, size=(128, 96)),
                      jpeg(120), b''])
    assert write_clip(path, frames, NO_EVENT, 10.0) == 3
    assert {frame.image.shape for frame in decode(path)} == {(48, 64, 3)}
    assert read_levels(path) == pytest.approx([40, 200, 120], abs=6)


def test_write_clip_with_nothing_to_write_leaves_no_file(tmp_path):
    path = tmp_path / 'clip.mp4'
    with pytest.raises(ClipError, match='none of 2 frames decode'):
        write_clip(path, stamped([b'garbage', b'']), NO_EVENT, 10.0)
    assert list(tmp_path.iterdir()) == []


def test_write_clip_replaces_atomically(tmp_path):
    path = tmp_path / 'clip.mp4'
    write_clip(path, stamped([jpeg(50)] * 3), NO_EVENT, 10.0)
    write_clip(path, stamped([jpeg(210)] * 4), NO_EVENT, 10.0)
    assert read_levels(path) == pytest.approx([210] * 4, abs=6)
    assert list(tmp_path.iterdir()) == [path]


def test_a_clip_that_does_not_decode_back_whole_is_never_put_in_place(tmp_path, monkeypatch):
    path = tmp_path / 'clip.mp4'
    write_clip(path, stamped([jpeg(50)] * 3), NO_EVENT, 10.0)
    before = path.read_bytes()
    monkeypatch.setattr(clips, '_decoded_h264_frames', lambda _: 2)
    with pytest.raises(ClipError, match='wrote 4 frames, 2 decode back'):
        write_clip(path, stamped([jpeg(210)] * 4), NO_EVENT, 10.0)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_the_read_back_counts_only_h264(tmp_path):
    mpeg4 = tmp_path / 'mpeg4.mp4'
    writer = cv2.VideoWriter(str(mpeg4), cv2.VideoWriter_fourcc(*'mp4v'), 10.0, (64, 48))
    for level in (40, 80, 120):
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
    assert len(decode(mpeg4)) == 3 and clips._decoded_h264_frames(mpeg4) == 0
    (tmp_path / 'junk.mp4').write_bytes(b'not a video')
    assert clips._decoded_h264_frames(tmp_path / 'junk.mp4') == 0
    h264 = tmp_path / 'h264.mp4'
    write_clip(h264, stamped([jpeg(40)] * 3), NO_EVENT, 10.0)
    assert clips._decoded_h264_frames(h264) == 3
