"""clip_node as a real process: camera frames and review requests in over DDS, the H.264
MP4 clip of each event in doubt out under clip_root, the event's own window marked; a window older than the frame ring
gives no file and is counted on /diagnostics. With uplink_node beside it, a clip that
is written after the uplink took the review request still reaches the bucket first."""
import time

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from jwo.msg import DoubtfulEvent, ReviewRequest
from sensor_msgs.msg import CompressedImage

from conftest import wait_until
from test_clips import decode, is_marked, read_levels
from jwo_cloud import layout, testing, wire
from jwo_cloud.bucket import DirBucket
from jwo_cloud.ingest import Ingest
from jwo_nodes.core.clips import clip_ref
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, EVENT_QOS, SENSOR_QOS, to_stamp

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
FRAME_NS = NS // 10
FRAMES = 30


def level(k: int) -> int:
    return max(0, 20 + 7 * k)


def frame(k: int) -> CompressedImage:
    ok, data = cv2.imencode('.jpg', np.full((48, 64, 3), level(k), np.uint8))
    assert ok
    msg = CompressedImage(format='jpeg', data=data.tobytes())
    msg.header.stamp = to_stamp(T0 + k * FRAME_NS)
    msg.header.frame_id = 'cam_front'
    return msg


def review(receipt_id: str, start_ns: int, end_ns: int) -> ReviewRequest:
    msg = ReviewRequest(receipt_id=receipt_id, store_id='demo', visit_code='v-test')
    msg.header.stamp = to_stamp(end_ns + 5 * NS)
    msg.events = [DoubtfulEvent(
        event_id='S1/7', reason_code='ambiguous_attribution', shelf_id='S1', bin_ids=['S1-B1'],
        delta_grams=[-350.0], window_start=to_stamp(start_ns), window_end=to_stamp(end_ns),
        candidate_visits=['v-test', 'v-other'], candidate_scores=[0.55, 0.45],
        proposed_sku='COLA-330', proposed_quantity=1, camera_ids=['cam_front'],
        clip_refs=[clip_ref('demo', receipt_id, 'S1/7', 'cam_front')])]
    return msg


@pytest.fixture
def graph(start_node, repo, tmp_path):
    clips = tmp_path / 'clips'
    node_process = start_node(
        'clip_node', '-r', '__ns:=/jwo', '--params-file', f'{repo}/config/params/clip_node.yaml',
        '-p', f'store_config:={repo}/config/stores/demo.yaml', '-p', f'clip_root:={clips}',
        '-p', 'buffer_s:=2.5', '-p', 'margin_s:=0.5', '-p', 'wait_s:=5.0')
    rclpy.init()
    node = rclpy.create_node('clip_test', namespace='/jwo')
    diagnostics = {}

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name == '/jwo/clip_node':
                diagnostics.update({kv.key: int(kv.value) for kv in status.values})
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, EVENT_QOS)
    frames = node.create_publisher(CompressedImage, 'cameras/cam_front/image/compressed', SENSOR_QOS)
    reviews = node.create_publisher(ReviewRequest, 'review/requests', DURABLE_EVENT_QOS)
    assert wait_until(lambda: frames.get_subscription_count() > 0
                      and reviews.get_subscription_count() > 0, 20), node_process.log()

    def spin_until(predicate, timeout):
        return wait_until(lambda: (rclpy.spin_once(node, timeout_sec=0.02), predicate())[1], timeout)

    def publish_frames(ks):
        # Best effort: frames sent before the node's reader has matched are lost, so an
        # old frame (dropped from the ring by the first real one) goes first until one
        # arrives.
        if not diagnostics.get('frames'):
            assert spin_until(lambda: frames.publish(frame(-1000)) or diagnostics.get('frames'), 10)
            spin_until(lambda: False, 1.5)       # the last warm-up frames counted
        before = diagnostics['frames']
        for k in ks:
            frames.publish(frame(k))
            time.sleep(0.03)                     # do not outrun the subscriber's queue
        assert spin_until(lambda: diagnostics['frames'] == before + len(ks), 10), str(diagnostics)

    yield publish_frames, reviews, diagnostics, spin_until, clips, node_process
    node.destroy_node()
    rclpy.shutdown()


def test_clip_of_an_event_in_doubt_and_a_window_gone_from_the_ring(graph):
    publish_frames, reviews, diagnostics, spin_until, clips, node_process = graph
    publish_frames(range(FRAMES))        # 3 s of stamps; the ring keeps the last 2.5 s

    # Window 1.2-1.6 s, 0.5 s margin: frames 7 to 21.
    reviews.publish(review('demo-v-inside', T0 + 12 * FRAME_NS, T0 + 16 * FRAME_NS))
    # Window 10 s before the first frame: never in the ring.
    reviews.publish(review('demo-v-gone', T0 - 10 * NS, T0 - 9 * NS))
    assert spin_until(lambda: diagnostics.get('clips_written') == 1
                      and diagnostics.get('clips_missing') == 1, 15), (diagnostics, node_process.log())

    path = clips / clip_ref('demo', 'demo-v-inside', 'S1/7', 'cam_front')
    assert path.is_file() and path.parent == clips / 'demo' / 'demo-v-inside'
    assert list(path.parent.iterdir()) == [path]            # no temporary file left
    assert read_levels(path) == pytest.approx([level(k) for k in range(7, 22)], abs=6)
    frames = decode(path)
    assert [frame.time_s for frame in frames] == pytest.approx(    # the pace of the stamps
        [(k - 7) * FRAME_NS / NS for k in range(7, 22)])
    assert [is_marked(frame.image) for frame in frames] == [12 <= k <= 16 for k in range(7, 22)]

    assert not (clips / 'demo' / 'demo-v-gone').exists()
    assert 'clips_missing' in node_process.log()
    assert node_process.process.poll() is None, node_process.log()


def test_uplink_waits_for_a_clip_written_after_the_review_request(graph, start_node, repo, tmp_path):
    publish_frames, reviews, diagnostics, spin_until, clips, _ = graph
    keys = testing.make_keys(tmp_path / 'keys')
    bucket = DirBucket(tmp_path / 'bucket')
    ingest = Ingest(bucket, keys.server_secret, keys.enrolled, tmp_path / 'spool',
                    bind='tcp://127.0.0.1:0')
    ingest.start()
    try:
        uplink = start_node(
            'uplink_node', '--params-file', f'{repo}/config/params/uplink_node.yaml',
            '-p', f'store_config:={repo}/config/stores/demo.yaml',
            '-p', f'outbox_path:={tmp_path / "outbox.sqlite3"}',
            '-p', f'ingest_endpoint:={ingest.endpoint}',
            '-p', f'store_secret_key_file:={keys.store_secret}',
            '-p', f'ingest_public_key_file:={keys.server_public}', '-p', f'clip_root:={clips}')
        assert spin_until(lambda: reviews.get_subscription_count() == 2, 20), uplink.log()
        publish_frames(range(15))
        # The window's end and margin (2.1 s) are ahead of the newest frame: the clip
        # waits for frames the uplink cannot wait for.
        reviews.publish(review('demo-v-late', T0 + 12 * FRAME_NS, T0 + 16 * FRAME_NS))
        spin_until(lambda: False, 1.0)
        path = clips / clip_ref('demo', 'demo-v-late', 'S1/7', 'cam_front')
        assert not path.exists()
        publish_frames(range(15, 25))
        ref = clip_ref('demo', 'demo-v-late', 'S1/7', 'cam_front')
        clip_key = layout.clip_key('demo', wire.clip_id(ref))
        review_key = layout.pending_key('demo', 'demo-v-late')
        assert wait_until(lambda: review_key in bucket.list(''), 20), (bucket.list(''), uplink.log())
        assert bucket.get(clip_key) == path.read_bytes()
        assert read_levels(path) == pytest.approx([level(k) for k in range(7, 22)], abs=6)
        assert 'clip_missing' not in uplink.log()
    finally:
        ingest.stop()
