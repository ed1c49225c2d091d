"""fusion_node killed with SIGKILL mid-visit and started again: the visit survives in
its journal and its receipt holds what was taken before the crash, sent to review as
fusion_restarted (the tracker's frames of the outage are lost)."""
import os
import signal
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from jwo_msgs.msg import (CartUpdate, GateEvent, Receipt, ReviewRequest, ShelfStatus,
                          ShopperPosition, ShopperPositions, WeightChange)

from conftest import wait_until
from jwo_nodes.core.fusion import FUSION_RESTARTED
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, EVENT_QOS, to_stamp

NS = 1_000_000_000
SHELVES = ('S1', 'S2', 'S3', 'S4')
WHERE = {'G1': (0.6, 4.0), 'S1-B1': (2.0, 1.2)}


@pytest.fixture
def store_side():
    """The rest of the store as one test node: the gate's and a shelf's transient-local
    publishers, the tracker's frames and the shelves' heartbeats; receipts and review
    requests in."""
    rclpy.init()
    node = rclpy.create_node('fusion_restart_test', namespace='/jwo')
    got = {'carts': [], 'receipts': [], 'reviews': [], 'diagnostics': {}}
    node.create_subscription(CartUpdate, 'cart/updates', got['carts'].append, EVENT_QOS)
    node.create_subscription(Receipt, 'receipts', got['receipts'].append, DURABLE_EVENT_QOS)
    node.create_subscription(ReviewRequest, 'review/requests', got['reviews'].append, DURABLE_EVENT_QOS)

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name == '/jwo/fusion_node':
                got['diagnostics'] = {kv.key: int(kv.value) for kv in status.values}
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, EVENT_QOS)
    pubs = {
        'gate': node.create_publisher(GateEvent, 'gates/G1/events', DURABLE_EVENT_QOS),
        'change': node.create_publisher(WeightChange, 'shelves/S1/weight/changes', DURABLE_EVENT_QOS),
        'positions': node.create_publisher(ShopperPositions, 'shoppers/positions', EVENT_QOS),
        'status': [node.create_publisher(ShelfStatus, f'shelves/{s}/weight/status', EVENT_QOS)
                   for s in SHELVES],
    }
    yield node, pubs, got
    node.destroy_node()
    rclpy.shutdown()


def test_a_visit_survives_kill_9(start_node, store_side, repo, tmp_path):
    node, pubs, got = store_side
    args = ('-r', '__ns:=/jwo', '--params-file', f'{repo}/config/params/fusion_node.yaml',
            '-p', f'store_config:={repo}/config/stores/demo.yaml', '-p', f'state_dir:={tmp_path}/state')
    t = time.time_ns()
    place = ['G1']

    def frames(seconds):
        """The tracker and the shelves go on, whether fusion listens or not."""
        nonlocal t
        for _ in range(int(seconds * 10)):
            t += NS // 10
            x, y = WHERE[place[0]]
            msg = ShopperPositions(shoppers=[ShopperPosition(track_id='track-1', visit_code='v-test',
                                                             x=x, y=y, confidence=1.0)])
            msg.header.stamp = to_stamp(t)
            pubs['positions'].publish(msg)
            for shelf, publisher in zip(SHELVES, pubs['status']):
                publisher.publish(ShelfStatus(shelf_id=shelf, processed_until=to_stamp(t - NS // 4)))
            rclpy.spin_once(node, timeout_sec=0.05)

    def listening():
        return pubs['gate'].get_subscription_count() > 0 and pubs['positions'].get_subscription_count() > 0

    fusion = start_node('fusion_node', *args)
    assert wait_until(listening, 30), fusion.log()
    entry = GateEvent(event_id='G1/1', gate_id='G1', direction=GateEvent.ENTRY, visit_code='v-test',
                      credential_kind=GateEvent.CREDENTIAL_APP_QR, group_size=1)
    entry.header.stamp = to_stamp(t)
    pubs['gate'].publish(entry)
    frames(1)
    place[0] = 'S1-B1'
    frames(2)
    take = WeightChange(event_id='S1/1', shelf_id='S1', bin_ids=['S1-B1'], delta_grams=[-350.5],
                        start_stamp=to_stamp(t - NS), end_stamp=to_stamp(t), noise_grams=1.5)
    take.header.stamp = to_stamp(t)
    pubs['change'].publish(take)
    deadline = time.monotonic() + 10
    while not got['carts'] and time.monotonic() < deadline:
        frames(0.2)
    assert [(line.sku, line.quantity) for line in got['carts'][-1].lines] == [('COLA-330', 1)], fusion.log()

    os.killpg(fusion.process.pid, signal.SIGKILL)
    fusion.process.wait()
    frames(1)                                        # lost: nobody listens
    fusion = start_node('fusion_node', *args)
    deadline = time.monotonic() + 30
    while 'fusion for store' not in fusion.log() and time.monotonic() < deadline:
        frames(0.2)
    place[0] = 'G1'
    frames(2)
    leave = GateEvent(event_id='G1/2', gate_id='G1', direction=GateEvent.EXIT, visit_code='v-test',
                      credential_kind=GateEvent.CREDENTIAL_APP_QR, group_size=1)
    leave.header.stamp = to_stamp(t)
    pubs['gate'].publish(leave)
    deadline = time.monotonic() + 15
    while not got['receipts'] and time.monotonic() < deadline:
        frames(0.2)
    assert got['receipts'], fusion.log()
    [receipt] = got['receipts']
    assert receipt.visit_code == 'v-test'
    assert [(line.sku, line.quantity) for line in receipt.lines] == [('COLA-330', 1)]
    assert receipt.status == Receipt.NEEDS_REVIEW
    assert FUSION_RESTARTED in [reason.code for reason in receipt.reasons]
    assert wait_until(lambda: (frames(0.2), got['reviews'])[1], 5)
    assert got['reviews'][0].receipt_id == receipt.receipt_id
    # The gate's and the shelf's histories came again, and were known.
    assert wait_until(lambda: (frames(0.2), got['diagnostics'].get('resent_events', 0) >= 2)[1], 5)
    assert 'duplicate_gate_event' not in got['diagnostics'], got['diagnostics']
    assert 'restarted: replayed' in fusion.log() and 'v-test' in fusion.log()
