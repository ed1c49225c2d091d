"""Review clips without a ROS graph: the per-camera frame ring, clip references and the
MP4 writer (jwo_nodes.core.clips)."""
import os

import cv2
import numpy as np
import pytest

from jwo_nodes.core.clips import (NS, ClipError, FrameRing, clip_ref, frame_rate, is_clip_ref,
                                  write_clip)

T0 = 1_700_000_000 * NS


def jpeg(level: int, size=(64, 48)) -> bytes:
    """A flat grey frame: its level is recognisable after MPEG-4 compression."""
    ok, data = cv2.imencode('.jpg', np.full((size[1], size[0], 3), level, np.uint8))
    assert ok
    return data.tobytes()


def read_levels(path) -> list:
    capture = cv2.VideoCapture(str(path))
    levels = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        levels.append(int(round(float(image.mean()))))
    capture.release()
    return levels


def test_ring_keeps_buffer_s_of_stamp_time_in_stamp_order():
    ring = FrameRing(buffer_s=2.0)
    assert ring.newest_ns is None and ring.frames_between(0, T0 * 2) == []
    for k in (0, 2, 1, 3):                                  # one frame late
        assert ring.add(T0 + k * NS // 2, b'%d' % k)
    assert not ring.add(T0 + NS // 2, b'again')             # stamp already held
    assert [f for _, f in ring.frames_between(T0, T0 + 10 * NS)] == [b'0', b'1', b'2', b'3']
    assert ring.horizon_ns is None and not ring.dropped_from(T0)
    assert ring.add(T0 + 5 * NS // 2, b'5')                 # 2.5 s: frame 0 is older than 2 s
    assert ring.frames_between(T0, T0 + 10 * NS)[0] == (T0 + NS // 2, b'1')
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


def test_write_clip_writes_every_frame_in_order(tmp_path):
    levels = [30, 80, 130, 180, 230]
    path = tmp_path / 'demo' / 'R1' / 'S1%2F7.cam_front.mp4'
    assert write_clip(path, [jpeg(level) for level in levels], 5.0) == 5
    assert os.listdir(path.parent) == [path.name]           # no temporary left behind
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    capture.release()
    assert read_levels(path) == pytest.approx(levels, abs=6)


def test_write_clip_skips_bad_frames_and_scales_odd_sizes(tmp_path):
    path = tmp_path / 'clip.mp4'
    frames = [jpeg(40), b'not a jpeg', jpeg(200, size=(128, 96)), jpeg(120)]
    assert write_clip(path, frames, 10.0) == 3
    assert read_levels(path) == pytest.approx([40, 200, 120], abs=6)


def test_write_clip_with_nothing_to_write_leaves_no_file(tmp_path):
    path = tmp_path / 'clip.mp4'
    with pytest.raises(ClipError):
        write_clip(path, [b'garbage', b''], 10.0)
    assert list(tmp_path.iterdir()) == []


def test_write_clip_replaces_atomically(tmp_path):
    path = tmp_path / 'clip.mp4'
    write_clip(path, [jpeg(50)] * 3, 10.0)
    write_clip(path, [jpeg(210)] * 4, 10.0)
    assert read_levels(path) == pytest.approx([210] * 4, abs=6)
    assert list(tmp_path.iterdir()) == [path]
