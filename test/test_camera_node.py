"""camera_node as a real process: frames of a video file (and of the simulator) arrive
as JPEG CompressedImage messages that decode with cv2.imdecode."""
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CompressedImage

from conftest import BIN, wait_until
from jwo_nodes.ros_common import SENSOR_QOS, to_ns

REPO = Path(__file__).resolve().parent.parent
STORE = str(REPO / 'config/stores/demo.yaml')
PARAMS = str(REPO / 'config/params/camera_node.yaml')
SCENARIO = REPO / 'config/scenarios/demo.yaml'
TOPIC = '/jwo/cameras/cam_front/image/compressed'


class Listener:
    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('camera_test_listener', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.images = []
        self.node.create_subscription(CompressedImage, TOPIC, self.images.append, SENSOR_QOS)

    def spin_until(self, predicate, timeout: float) -> bool:
        def step():
            self.executor.spin_once(timeout_sec=0.02)
            return predicate()
        return wait_until(step, timeout, interval=0.0)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def listener():
    listener = Listener()
    yield listener
    listener.close()


def camera_args(*extra: str) -> list:
    return ['--params-file', PARAMS, '-p', f'store_config:={STORE}',
            '-p', 'camera_id:=cam_front', *extra]


@pytest.fixture
def video(tmp_path) -> Path:
    """2 s of 320x240 frames at 10 fps: a white square moving right on a dark ground."""
    path = tmp_path / 'aisle.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (320, 240))
    for i in range(20):
        frame = np.full((240, 320, 3), 30, np.uint8)
        cv2.rectangle(frame, (10 + 10 * i, 100), (50 + 10 * i, 140), (255, 255, 255), -1)
        writer.write(frame)
    writer.release()
    return path


def decode(msg) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)


def test_publishes_video_file_frames_as_jpeg(start_node, listener, video):
    node = start_node('camera_node', *camera_args('-p', f'source:={video}', '-p', 'fps:=20.0',
                                                  '-p', 'jpeg_quality:=90'))
    assert listener.spin_until(lambda: len(listener.images) >= 25, 20.0), node.log()
    first, last = listener.images[0], listener.images[-1]
    assert (first.format, first.header.frame_id) == ('jpeg', 'cam_front')
    image = decode(first)
    # Resized to the configured camera size, so the homography's pixels stay valid.
    assert image.shape == (480, 640, 3)
    assert image[5, 5].max() < 60 and image[240, :, :].max() > 200  # dark ground, white square
    stamps = [to_ns(m.header.stamp) for m in listener.images]
    assert stamps == sorted(stamps) and abs(stamps[-1] - time.time_ns()) < 5 * 10**9
    rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
    assert 10 < rate < 28, rate
    assert decode(last) is not None
    assert node.stop() == 0


def test_stops_at_the_end_of_a_file_without_loop(start_node, listener, video):
    node = start_node('camera_node', *camera_args('-p', f'source:={video}', '-p', 'fps:=40.0',
                                                  '-p', 'loop:=false'))
    assert listener.spin_until(lambda: 'ended' in node.log(), 20.0), node.log()
    listener.spin_until(lambda: False, 0.3)
    assert len(listener.images) <= 20  # (the first ones may pass before discovery)
    listener.images.clear()
    listener.spin_until(lambda: False, 1.0)
    assert listener.images == []  # nothing after the end ...
    assert node.process.poll() is None  # ... and the node keeps running


@pytest.mark.parametrize('args, message', [
    (['-p', f'store_config:={STORE}', '-p', 'camera_id:=cam_side'], "no camera 'cam_side'"),
    (camera_args('-p', 'source:=/nonexistent/clip.mp4'), 'does not exist'),
    (camera_args(), 'scenario'),  # the demo cameras are simulated
])
def test_bad_config_fails_with_one_line(args, message):
    result = subprocess.run([str(BIN / 'camera_node'), '--ros-args', *args],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


@pytest.mark.skipif(not SCENARIO.exists(), reason='no demo scenario yet')
def test_sim_frames_show_the_shoppers(start_node, listener):
    from jwo_nodes.core import sim
    from jwo_nodes.core.config import load_store_config
    store = load_store_config(STORE)
    timeline = sim.Timeline(sim.load_scenario(SCENARIO, store), store)
    start_ns = time.time_ns() - 20 * 10**9  # scenario time 20 s now: people in the store
    start_node('camera_node', *camera_args('-p', f'scenario:={SCENARIO}',
                                           '-p', f'sim_start_ns:={start_ns}'))
    assert listener.spin_until(lambda: len(listener.images) >= 3, 20.0)
    camera = store.cameras['cam_front']
    msg = listener.images[-1]
    image = decode(msg)
    assert image.shape == (camera.height, camera.width, 3)
    # The frame is the renderer's picture of the scenario at the frame's stamp (JPEG
    # aside): the shoppers are where the simulator has them.
    from jwo_nodes.core.render import CameraRenderer, RenderSettings, SceneFigures
    t_ns = to_ns(msg.header.stamp) - start_ns
    expected = CameraRenderer(store, camera, RenderSettings(seed=timeline.scenario.seed, noise_sigma=0.0)
                              ).render(SceneFigures(timeline).at(t_ns), t_ns / 1e9)
    assert expected.people, 'nobody in view at that time: pick another instant'
    assert np.abs(image.astype(int) - expected.image).mean() < 8
