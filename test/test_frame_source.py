"""OpenCV frame sources (video file, bad sources, reconnect) and the simulated renderer."""
import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from jwo_nodes.core import frame_source as fs
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.frame_source import FrameSource, FrameSourceError

REPO = Path(__file__).resolve().parent.parent
STORE = load_store_config(REPO / 'config/stores/demo.yaml')


def write_video(path: Path, frames: int = 8, size=(64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 + 25 * i, dtype=np.uint8))
    writer.release()
    return path


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / 'clip.avi')


def brightness(frame) -> float:
    return float(frame.mean())


def test_reads_a_video_file_once(video):
    source = FrameSource(str(video), loop=False)
    assert source.kind == fs.FILE
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert len(frames) == 8 and source.finished
    assert frames[0].shape == (48, 64, 3)
    levels = [brightness(f) for f in frames]
    assert levels == sorted(levels) and abs(levels[0] - 20) < 4 and abs(levels[-1] - 195) < 4
    assert source.read() is None
    source.close()


def test_loops_a_video_file_and_resizes(video):
    source = FrameSource(str(video), loop=True, size=(32, 24))
    levels = [brightness(source.read()) for _ in range(10)]
    assert not source.finished
    assert abs(levels[8] - levels[0]) < 4 and abs(levels[9] - levels[1]) < 4
    assert source.read().shape == (24, 32, 3)


@pytest.mark.parametrize('source, kind', [
    ('0', fs.DEVICE), ('/dev/video2', fs.DEVICE), ('rtsp://cam.local/stream', fs.STREAM),
    ('RTSP://cam.local/stream', fs.STREAM), ('https://cam.local/x.mjpg', fs.STREAM),
    ('videos/aisle.mp4', fs.FILE),
])
def test_source_kinds(source, kind):
    assert fs.source_kind(source) == kind


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(FrameSourceError, match=r"video file '.*missing\.mp4' does not exist"):
        FrameSource(str(tmp_path / 'missing.mp4'))
    text = tmp_path / 'notes.mp4'
    text.write_text('not a video at all')
    with pytest.raises(FrameSourceError, match='cannot open video file .*notes.mp4'):
        FrameSource(str(text))
    with pytest.raises(FrameSourceError, match="cannot open camera device '97'"):
        FrameSource('97')


def test_stream_errors_hide_passwords():
    def refuse(target):
        return FakeCapture([])  # never opens
    with pytest.raises(FrameSourceError) as error:
        FrameSource('rtsp://admin:hunter2@10.0.0.5:554/live', opener=refuse)
    assert 'hunter2' not in str(error.value) and 'rtsp://***@10.0.0.5:554/live' in str(error.value)


class FakeCapture:
    """A VideoCapture stand-in: plays a list of frames (None = a failed grab)."""

    def __init__(self, frames, opened=True):
        self.frames = list(frames)
        self.opened = opened and bool(frames)

    def isOpened(self):
        return self.opened

    def set(self, *args):
        return True

    def read(self):
        if not self.frames:
            return False, None
        frame = self.frames.pop(0)
        return frame is not None, frame

    def release(self):
        self.opened = False


def test_live_stream_reconnects_with_backoff():
    now = [0.0]
    image = np.zeros((4, 4, 3), np.uint8)
    captures = [FakeCapture([image, None]), FakeCapture([]), FakeCapture([]),
                FakeCapture([image, image])]
    opened = []

    def opener(target):
        opened.append(target)
        return captures.pop(0)

    source = FrameSource('rtsp://cam/live', opener=opener, clock=lambda: now[0],
                         backoff_s=(1.0, 8.0))
    assert source.read() is image
    assert source.read() is None and not source.connected and source.failed_grabs == 1
    assert source.read() is None and len(opened) == 1        # waits for the backoff
    now[0] = 1.0
    assert source.read() is None and len(opened) == 2        # reopen fails ...
    now[0] = 2.5
    assert source.read() is None and len(opened) == 2        # ... backoff doubled to 2 s
    now[0] = 3.0
    assert source.read() is None and len(opened) == 3        # fails again: 4 s
    now[0] = 7.0
    assert source.read() is image and source.reconnects == 1 and source.connected
    assert opened == ['rtsp://cam/live'] * 4


def test_device_index_is_opened_as_an_integer():
    opened = []

    def opener(target):
        opened.append(target)
        return FakeCapture([np.zeros((4, 4, 3), np.uint8)])
    FrameSource('0', opener=opener)
    assert opened == [0]


# -- renderer ---------------------------------------------------------------------

def pixel(camera, x, y):
    u, v = fs.floor_to_pixels(camera, [(x, y)])[0]
    return int(round(u)), int(round(v))


def test_homography_round_trip():
    camera = STORE.cameras['cam_back']
    u, v = pixel(camera, 5.0, 6.0)
    assert (u, v) == (320, 240)   # 5.0 m / 0.015625, the middle row
    assert np.allclose(fs.pixels_to_floor(camera, [(u, v)]), [(5.0, 6.0)], atol=0.01)


def render_at(camera, people, settings=None):
    from jwo_nodes.core.render import CameraRenderer, Figure, RenderSettings
    renderer = CameraRenderer(STORE, camera, settings or RenderSettings(noise_sigma=0.0))
    return renderer.render([Figure(f'p{i}', x, y, None) for i, (x, y) in enumerate(people)])


def test_renderer_draws_people_where_the_homography_says():
    camera = STORE.cameras['cam_back']
    empty = render_at(camera, []).image
    frame = render_at(camera, [(5.0, 6.0), (1.5, 5.0)])
    assert frame.image.shape == (camera.height, camera.width, 3) and frame.image.dtype == np.uint8
    truth = {p: (round(u), round(v)) for p, u, v in frame.people}
    assert truth == {'p0': pixel(camera, 5.0, 6.0), 'p1': pixel(camera, 1.5, 5.0)}
    for x, y in [(5.0, 6.0), (1.5, 5.0)]:
        u, v = pixel(camera, x, y)
        assert np.abs(frame.image[v, u].astype(int) - empty[v, u]).max() > 30
    # Away from the people the floor is untouched.
    u, v = pixel(camera, 8.0, 4.5)
    assert np.array_equal(frame.image[v, u], empty[v, u])
    # cam_front does not see y = 6: that person is not in its frame.
    front = render_at(STORE.cameras['cam_front'], [(5.0, 6.5)])
    assert front.people == []


def test_renderer_follows_a_rotated_homography():
    # Pixels -> metres: 1 px = 2 cm, rotated by 30 degrees, offset (1, 2).
    a = math.radians(30)
    s = 0.02
    h = ((s * math.cos(a), -s * math.sin(a), 1.0),
         (s * math.sin(a), s * math.cos(a), 2.0), (0.0, 0.0, 1.0))
    camera = dataclasses.replace(STORE.cameras['cam_front'], width=320, height=240,
                                 homography=tuple(v for row in h for v in row))
    people = [(2.6, 5.2), (1.44, 4.24)]  # about pixels (150, 100) and (60, 60)
    frame = render_at(camera, people)
    truth = {p: (u, v) for p, u, v in frame.people}
    for i, (x, y) in enumerate(people):
        u, v = truth[f'p{i}']
        assert 0 <= u < 320 and 0 <= v < 240
        assert np.allclose(fs.pixels_to_floor(camera, [(u, v)]), [(x, y)], atol=0.03)


def test_frames_are_coded_as_cameras_send_them():
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    jpeg = fs.encode_jpeg(frame)
    assert cv2.imdecode(jpeg, cv2.IMREAD_COLOR).shape == frame.shape
    assert len(fs.encode_jpeg(frame, 20)) < len(jpeg) < len(fs.encode_jpeg(frame, 100))
    with pytest.raises(ValueError, match=r'cannot code a frame of shape \(0, 0, 3\) as JPEG'):
        fs.encode_jpeg(np.zeros((0, 0, 3), np.uint8))
