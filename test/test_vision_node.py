"""vision_tracker_node as a real process: fed rendered frames of both demo cameras and
an ENTRY event over DDS, it publishes shoppers/positions stamped with the frames'
stamps, with one track carrying the visit code where the shopper really is and its
hand at the bins it takes from, holding the product taken; a frame that is not an image is counted on
/diagnostics and the node keeps going."""
import array
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from jwo.msg import GateEvent, ShopperPositions
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CompressedImage

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.held_item import chromaticity
from jwo_nodes.core.render import CameraRenderer, RenderSettings, SceneFigures, product_colour
from jwo_nodes.core.sim import NS, Timeline, parse_scenario
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, EVENT_QOS, SENSOR_QOS, to_ns, to_stamp

REPO = Path(__file__).resolve().parent.parent
STORE_PATH = str(REPO / 'config/stores/demo.yaml')
STORE = load_store_config(STORE_PATH)
SCENARIO = {
    'name': 'vision-node', 'seed': 5,
    'parties': [{'id': 'ana', 'gate': 'G1', 'enter_at_s': 0.5,
                 'credential': {'kind': 'qr', 'token': 'app-1'},
                 'script': [{'take': {'bin': 'S1-B2'}}, {'take': {'bin': 'S3-B1'}}, 'leave']}],
}


class Feeder:
    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('vision_test_feeder', namespace='/jwo', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.images = {c: self.node.create_publisher(CompressedImage, f'cameras/{c}/image/compressed', SENSOR_QOS)
                       for c in STORE.cameras}
        self.gate = self.node.create_publisher(GateEvent, 'gates/G1/events', DURABLE_EVENT_QOS)
        self.positions = []
        self.diagnostics = []
        self.node.create_subscription(ShopperPositions, 'shoppers/positions', self.positions.append, EVENT_QOS)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, EVENT_QOS)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def feeder():
    feeder = Feeder()
    yield feeder
    feeder.close()


def jpeg(image) -> array.array:
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    out = array.array('B')
    out.frombytes(data.tobytes())
    return out


def test_tracks_a_shopper_on_camera_frames(start_node, feeder):
    node = start_node('vision_tracker_node', '-r', '__ns:=/jwo', '-p', f'store_config:={STORE_PATH}')
    subscribers = lambda: sum(p.get_subscription_count() for p in feeder.images.values())
    deadline = time.monotonic() + 20
    while subscribers() < len(feeder.images) and time.monotonic() < deadline:
        feeder.spin(0.1)
    assert subscribers() == len(feeder.images), node.log()
    feeder.spin(0.5)
    timeline = Timeline(parse_scenario(SCENARIO, STORE), STORE)
    figures = SceneFigures(timeline)
    renderers = {c: CameraRenderer(STORE, cam, RenderSettings(seed=5)) for c, cam in STORE.cameras.items()}
    base = time.time_ns()
    entry = GateEvent(event_id='e1', gate_id='G1', direction=GateEvent.ENTRY, visit_code='v-TESTVISION1',
                      credential_kind=GateEvent.CREDENTIAL_APP_QR, group_size=1)
    entry.header.stamp = to_stamp(base + timeline.scenario.parties[0].enter_at_ns)
    feeder.gate.publish(entry)
    truth = {}
    period = NS // 8
    sent = 0
    for k in range(timeline.duration_ns // period + 1):
        t = k * period
        stamp = base + t
        people = timeline.positions(t)
        truth[stamp] = [(p.x, p.y) for p in people]
        for camera_id, renderer in renderers.items():
            msg = CompressedImage(format='jpeg')
            msg.header.stamp = to_stamp(stamp)
            msg.header.frame_id = camera_id
            msg.data = jpeg(renderer.render(figures.at(t), t / NS, k).image)
            feeder.images[camera_id].publish(msg)
        sent += 1
        if k == 20:   # garbage on one camera, after the time step it belongs to
            bad = CompressedImage(format='jpeg')
            bad.header.stamp = to_stamp(stamp + 1)
            bad.data = array.array('B', b'not a jpeg at all')
            feeder.images['cam_front'].publish(bad)
        feeder.spin(0.06)
    feeder.spin(2.0)
    assert node.process.poll() is None, node.log()
    stamps = [to_ns(m.header.stamp) for m in feeder.positions]
    assert len(stamps) >= 0.8 * sent, (len(stamps), sent, node.log())
    assert stamps == sorted(set(stamps)) and set(stamps) <= set(truth) | {s + 1 for s in truth}
    # Where the shopper is seen, one track with the visit code is there.
    errors, coded = [], 0
    for msg in feeder.positions:
        stamp = to_ns(msg.header.stamp)
        people = truth.get(stamp) or truth.get(stamp - 1) or []
        for s in msg.shoppers:
            assert 0.0 < s.confidence <= 1.0
            if s.visit_code:
                coded += 1
                assert s.visit_code == 'v-TESTVISION1'
                if people:
                    errors.append(min(math.hypot(s.x - x, s.y - y) for x, y in people))
    assert coded >= 0.6 * len(feeder.positions), node.log()
    assert np.median(errors) < 0.2 and np.percentile(errors, 95) < 0.5, (np.median(errors), np.percentile(errors, 95))
    codes = {s.track_id for m in feeder.positions for s in m.shoppers if s.visit_code}
    assert len(codes) <= 2
    # The hand reaching into each bin the shopper takes from comes with the track, near
    # the bin's shelf point (fusion's hand zone: 0.5 m by default).
    hands = [(s.hand_x, s.hand_y) for m in feeder.positions for s in m.shoppers if s.visit_code and s.hand_seen]
    for bin_id in ('S1-B2', 'S3-B1'):
        zx, zy = STORE.shelf_point(bin_id)
        assert sum(math.hypot(x - zx, y - zy) <= 0.5 for x, y in hands) >= 3, (bin_id, hands)
    # ... and, as the arm comes back, what it holds: the product's colour.
    for bin_id in ('S1-B2', 'S3-B1'):
        zx, zy = STORE.shelf_point(bin_id)
        want = chromaticity(product_colour(STORE.bin(bin_id).sku))
        held = [(s.hand_item_blue, s.hand_item_green) for m in feeder.positions for s in m.shoppers
                if s.hand_seen and s.hand_holding >= 0.5 and math.hypot(s.hand_x - zx, s.hand_y - zy) <= 0.5]
        assert held and min(math.hypot(b - want[0], g - want[1]) for b, g in held) < 0.05, (bin_id, held)
    # The garbage frame is counted as bad input on /diagnostics.
    feeder.spin(1.5)
    counts = {}
    for array_msg in feeder.diagnostics:
        for status in array_msg.status:
            if status.name == '/jwo/vision_tracker_node':
                counts = {kv.key: kv.value for kv in status.values}
    assert int(counts.get('bad_frames', 0)) >= 1, counts
    assert int(counts.get('batches', 0)) >= 0.8 * sent
    assert 'detector on the CPU' in node.log() or 'CUDA' in node.log()


@pytest.mark.parametrize('queued', [50, 1])
def test_a_slow_inference_holds_up_neither_the_frames_nor_the_gate_events(queued):
    """The node in this process with a detector that takes 0.3 s a batch: the executor's
    callbacks (frames, gate events) return at once, the time steps are tracked in
    order on the inference thread, and destroying the node waits for the ones queued.
    With room for one waiting step, the older ones are dropped and counted."""
    from rclpy.parameter import Parameter

    from jwo_nodes.nodes.vision_tracker_node import VisionTrackerNode
    context = rclpy.Context()
    rclpy.init(context=context)
    node = VisionTrackerNode(context=context, namespace='/jwo',
                             parameter_overrides=[Parameter('store_config', value=STORE_PATH),
                                                  Parameter('frame_queue', value=queued)])
    try:
        detect = node.detector.detect

        def slow_detect(frames):
            time.sleep(0.3)
            return detect(frames)
        node.detector.detect = slow_detect
        published = []
        node.publisher.publish = published.append
        renderers = {c: CameraRenderer(STORE, cam, RenderSettings(seed=5)) for c, cam in STORE.cameras.items()}
        figures = SceneFigures(Timeline(parse_scenario(SCENARIO, STORE), STORE))
        base, steps = time.time_ns(), 4
        in_callbacks = 0.0

        def call(callback, *args):
            nonlocal in_callbacks
            started = time.perf_counter()
            callback(*args)
            in_callbacks += time.perf_counter() - started
        for k in range(steps):
            t = k * NS // 10
            for camera_id, renderer in renderers.items():
                msg = CompressedImage(format='jpeg')
                msg.header.stamp = to_stamp(base + t)
                msg.data = jpeg(renderer.render(figures.at(t), t / NS, k).image)
                call(node._on_frame, camera_id, msg)
            entry = GateEvent(event_id=f'e{k}', gate_id='G1', direction=GateEvent.ENTRY,
                              visit_code=f'v-{k}', group_size=1)
            entry.header.stamp = to_stamp(base + t)
            call(node._on_gate, entry)
        time.sleep(node.params.batch_wait_s + 0.05)
        call(node._on_timer)                  # the last time step waits for no camera
        # Decoding happens in the callbacks, inference (1.2 s here) does not.
        assert in_callbacks < 0.3, in_callbacks
        assert len(published) < steps
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    stamps = [to_ns(m.header.stamp) - base for m in published]
    dropped = node.counters.values['dropped_batches']
    assert node.counters.values['entries'] == steps and node.counters.values['batches'] == len(stamps)
    assert stamps == sorted(stamps) and set(stamps) <= {k * NS // 10 for k in range(steps)}
    assert len(stamps) + dropped == steps and stamps[-1] == (steps - 1) * NS // 10
    assert dropped == 0 if queued >= steps else dropped >= 1
