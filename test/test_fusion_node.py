"""fusion_node as a real process: typed messages in over DDS, carts and receipts out;
bad input logged, counted on /diagnostics, and no cart loses an item."""
import os
import signal
import time
from pathlib import Path

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from jwo.msg import (CartUpdate, GateEvent, IdCheckDecision, IdCheckRequest, Receipt, ReviewRequest,
                     ShelfStatus, ShopperPosition, ShopperPositions, WeightChange)

from conftest import wait_until
from jwo_nodes.core.clips import clip_ref
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.fusion import FUSION_RESTARTED
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, EVENT_QOS, to_stamp

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
SHELVES = tuple(load_store_config(Path(__file__).resolve().parent.parent / 'config/stores/demo.yaml').shelves)
WHERE = {'G1': (0.6, 4.0), 'S1-B1': (2.0, 1.2)}   # floor points of the restart test


def fusion_args(repo, state_dir) -> tuple:
    # -p after the params file: a node's entry in the file wins over -p given before it.
    return ('-r', '__ns:=/jwo', '--params-file', f'{repo}/config/params/fusion_node.yaml',
            '-p', f'store_config:={repo}/config/stores/demo.yaml', '-p', f'state_dir:={state_dir}')


@pytest.fixture
def store_side():
    """The rest of the store as one test node: the gate's, a shelf's and the tracker's
    publishers and the shelves' heartbeats; carts, receipts, reviews, FINAL receipts'
    evidence and fusion's diagnostics in."""
    rclpy.init()
    node = rclpy.create_node('fusion_test', namespace='/jwo')
    got = {'carts': [], 'receipts': [], 'reviews': [], 'evidence': [], 'diagnostics': {}}
    node.create_subscription(CartUpdate, 'cart/updates', got['carts'].append, EVENT_QOS)
    node.create_subscription(Receipt, 'receipts', got['receipts'].append, EVENT_QOS)
    node.create_subscription(ReviewRequest, 'review/requests', got['reviews'].append,
                             DURABLE_EVENT_QOS)
    node.create_subscription(ReviewRequest, 'receipts/evidence', got['evidence'].append,
                             DURABLE_EVENT_QOS)

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name == '/jwo/fusion_node':
                got['diagnostics'] = {kv.key: int(kv.value) for kv in status.values}
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, EVENT_QOS)
    pubs = {
        'gate': node.create_publisher(GateEvent, 'gates/G1/events', DURABLE_EVENT_QOS),
        'change': node.create_publisher(WeightChange, 'shelves/S1/weight/changes', DURABLE_EVENT_QOS),
        'positions': node.create_publisher(ShopperPositions, 'shoppers/positions', EVENT_QOS),
        'status': {s: node.create_publisher(ShelfStatus, f'shelves/{s}/weight/status', EVENT_QOS)
                   for s in SHELVES},
    }
    yield node, pubs, got
    node.destroy_node()
    rclpy.shutdown()


def listening(pubs) -> bool:
    return pubs['gate'].get_subscription_count() > 0 and pubs['positions'].get_subscription_count() > 0


@pytest.fixture
def graph(start_node, store_side, repo, tmp_path):
    fusion = start_node('fusion_node', *fusion_args(repo, tmp_path / 'state'))
    node, pubs, got = store_side
    assert wait_until(lambda: listening(pubs), 20)

    def spin(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.02)

    yield node, pubs, got, spin, fusion


def gate(event_id, t, direction, code, group=1):
    msg = GateEvent(event_id=event_id, gate_id='G1', direction=direction, visit_code=code,
                    credential_kind=GateEvent.CREDENTIAL_APP_QR, group_size=group)
    msg.header.stamp = to_stamp(t)
    return msg


def change(event_id, shelf, bin_id, delta, t):
    msg = WeightChange(event_id=event_id, shelf_id=shelf, bin_ids=[bin_id], delta_grams=[delta],
                       start_stamp=to_stamp(t - NS), end_stamp=to_stamp(t), noise_grams=1.5)
    msg.header.stamp = to_stamp(t)
    return msg


def tracker_frame(pubs, t: int, *shoppers) -> None:
    """One tracker frame stamped t (these ShopperPositions), and every shelf's status
    reporting it has processed up to a quarter second before."""
    msg = ShopperPositions(shoppers=list(shoppers))
    msg.header.stamp = to_stamp(t)
    pubs['positions'].publish(msg)
    for shelf, publisher in pubs['status'].items():
        publisher.publish(ShelfStatus(shelf_id=shelf, processed_until=to_stamp(t - NS // 4)))


def test_receipt_over_dds_and_bad_input_counted(graph):
    node, pubs, got, spin, fusion = graph
    where = {'G1': (0.6, 4.0), 'S1-B1': (2.0, 1.2)}
    place = ['G1']

    t = T0

    def advance(seconds):
        nonlocal t
        for _ in range(int(seconds * 10)):
            t += NS // 10
            tracker_frame(pubs, t, ShopperPosition(track_id='track-1', visit_code='v-test', confidence=1.0,
                                                   x=where[place[0]][0], y=where[place[0]][1]))
            spin(0.01)

    pubs['gate'].publish(gate('G1/1', t, GateEvent.ENTRY, 'v-test'))
    advance(1)
    pubs['gate'].publish(gate('G1/1', t, GateEvent.ENTRY, 'v-test'))          # duplicate event
    pubs['gate'].publish(gate('G1/2', t, GateEvent.EXIT, 'v-nobody'))         # exit without entry
    place[0] = 'S1-B1'
    advance(2)
    pubs['change'].publish(change('S1/1', 'S1', 'S1-B1', -700.5, t))          # two colas
    pubs['change'].publish(change('S1/2', 'S9', 'S9-B1', -100.0, t))          # unknown shelf
    pubs['change'].publish(change('S1/3', 'S1', 'S1-B1', float('nan'), t))    # NaN reading
    stale = ShopperPositions()
    stale.header.stamp = to_stamp(t - 5 * NS)                                 # stamp going back
    pubs['positions'].publish(stale)
    advance(1)
    place[0] = 'G1'
    advance(1)
    pubs['gate'].publish(gate('G1/3', t, GateEvent.EXIT, ''))                 # walk-out
    advance(2)
    assert wait_until(lambda: (spin(0.1), got['receipts'])[1], 10)
    receipt = got['receipts'][0]
    assert receipt.visit_code == 'v-test' and receipt.status == Receipt.FINAL
    assert got['reviews'] == []                   # a final receipt has no review, no clips
    # ... but the change behind its line goes with it, for a dispute of it.
    assert wait_until(lambda: (spin(0.1), got['evidence'])[1], 5)
    evidence, = got['evidence']
    assert evidence.receipt_id == receipt.receipt_id and evidence.visit_code == 'v-test'
    assert [(e.event_id, e.reason_code, e.proposed_visit, e.proposed_sku, e.proposed_quantity, list(e.clip_refs))
            for e in evidence.events] == [('S1/1', '', 'v-test', 'COLA-330', 2, [])]
    assert [(l.sku, l.quantity, l.line_total_cents) for l in receipt.lines] == [('COLA-330', 2, 298)]
    # The store's 2 for 2.50 on colas, on the live cart and the receipt alike.
    assert [(s.promotion_id, s.cents) for s in receipt.savings] == [('cola-2-for-250', 48)]
    assert got['carts'][-1].total_cents == receipt.subtotal_cents == 250
    assert wait_until(lambda: (spin(0.2), got['diagnostics'].get('malformed_weight_change', 0) >= 1)[1], 5)
    counted = got['diagnostics']
    for name in ('duplicate_gate_event', 'exit_without_entry', 'unknown_shelf',
                 'malformed_weight_change', 'out_of_order_positions'):
        assert counted.get(name) == 1, (name, counted)
    assert wait_until(lambda: (spin(0.2), got['diagnostics'].get('receipt_evidence') == 1)[1], 5)
    assert fusion.process.poll() is None, fusion.log()


def test_review_request_references_a_clip_per_camera(graph):
    """Two shoppers in reach of one bin: both receipts go to review, and each event in
    doubt names the clip of every camera that sees the shelf."""
    node, pubs, got, spin, fusion = graph
    t = T0

    def advance(seconds, x, y):
        nonlocal t
        for _ in range(int(seconds * 10)):
            t += NS // 10
            tracker_frame(pubs, t, ShopperPosition(track_id='track-a', visit_code='v-a', x=x, y=y, confidence=1.0),
                          ShopperPosition(track_id='track-b', visit_code='v-b', x=x + 0.1, y=y, confidence=1.0))
            spin(0.01)

    pubs['gate'].publish(gate('G1/1', t, GateEvent.ENTRY, 'v-a'))
    pubs['gate'].publish(gate('G1/2', t, GateEvent.ENTRY, 'v-b'))
    advance(1, 0.6, 4.0)
    advance(2, 2.0, 1.2)                                                      # both at S1-B1
    pubs['change'].publish(change('S1/1', 'S1', 'S1-B1', -350.2, t))
    advance(1, 2.0, 1.2)
    advance(1, 0.6, 4.0)
    pubs['gate'].publish(gate('G1/3', t, GateEvent.EXIT, 'v-a'))             # tap-outs
    pubs['gate'].publish(gate('G1/4', t, GateEvent.EXIT, 'v-b'))
    advance(2, 0.6, 4.0)
    assert wait_until(lambda: (spin(0.1), len(got['reviews']) == 2)[1], 10), got['receipts']
    for request in got['reviews']:
        assert [r.status for r in got['receipts'] if r.receipt_id == request.receipt_id] == [
            Receipt.NEEDS_REVIEW]
        [event] = request.events
        assert event.event_id == 'S1/1' and list(event.camera_ids) == ['cam_front']
        assert list(event.clip_refs) == [clip_ref('demo', request.receipt_id, 'S1/1', 'cam_front')]
    assert fusion.process.poll() is None, fusion.log()


def test_the_hand_in_the_bin_decides_over_dds(graph, repo):
    """Two shoppers in reach of one bin, the hand of one seen in it (as the vision tracker
    publishes it): the item is that visit's, and nobody goes to review."""
    node, pubs, got, spin, fusion = graph
    hand_x, hand_y = load_store_config(f'{repo}/config/stores/demo.yaml').shelf_point('S1-B1')
    t = T0

    def advance(seconds, x, y, reaching=False):
        nonlocal t
        for _ in range(int(seconds * 10)):
            t += NS // 10
            tracker_frame(pubs, t, ShopperPosition(track_id='track-a', visit_code='v-a', x=x, y=y, confidence=1.0,
                                                   hand_seen=reaching, hand_x=hand_x, hand_y=hand_y),
                          ShopperPosition(track_id='track-b', visit_code='v-b', x=x + 0.1, y=y, confidence=1.0))
            spin(0.01)

    pubs['gate'].publish(gate('G1/1', t, GateEvent.ENTRY, 'v-a'))
    pubs['gate'].publish(gate('G1/2', t, GateEvent.ENTRY, 'v-b'))
    advance(1, 0.6, 4.0)
    advance(1, 2.0, 1.2)
    advance(1.5, 2.0, 1.2, reaching=True)
    pubs['change'].publish(change('S1/1', 'S1', 'S1-B1', -350.2, t))
    advance(0.5, 2.0, 1.2, reaching=True)
    advance(1, 2.0, 1.2)
    advance(1, 0.6, 4.0)
    pubs['gate'].publish(gate('G1/3', t, GateEvent.EXIT, 'v-a'))
    pubs['gate'].publish(gate('G1/4', t, GateEvent.EXIT, 'v-b'))
    advance(2, 0.6, 4.0)
    assert wait_until(lambda: (spin(0.1), len(got['receipts']) == 2)[1], 10), got['receipts']
    receipts = {r.visit_code: r for r in got['receipts']}
    assert [(l.sku, l.quantity) for l in receipts['v-a'].lines] == [('COLA-330', 1)]
    assert list(receipts['v-b'].lines) == []
    assert {r.status for r in receipts.values()} == {Receipt.FINAL} and got['reviews'] == []
    assert fusion.process.poll() is None, fusion.log()


def test_a_visit_survives_kill_9(start_node, store_side, repo, tmp_path):
    """fusion_node killed with SIGKILL mid-visit and started again: the visit survives
    in its journal and its receipt holds what was taken before the crash, sent to
    review as fusion_restarted (the tracker's frames of the outage are lost)."""
    node, pubs, got = store_side
    args = fusion_args(repo, tmp_path / 'state')
    t = time.time_ns()
    place = ['G1']

    def frames(seconds):
        """The tracker and the shelves go on, whether fusion listens or not."""
        nonlocal t
        for _ in range(int(seconds * 10)):
            t += NS // 10
            x, y = WHERE[place[0]]
            tracker_frame(pubs, t, ShopperPosition(track_id='track-1', visit_code='v-test', x=x, y=y, confidence=1.0))
            rclpy.spin_once(node, timeout_sec=0.05)

    fusion = start_node('fusion_node', *args)
    assert wait_until(lambda: listening(pubs), 30), fusion.log()
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


def test_an_age_restricted_take_asks_for_an_id_check_and_the_decision_verifies_it(graph):
    """The demo store's wine (S5): fusion publishes the ID-check request (durable) at the
    take; an associate's decision comes back over DDS, twice (dropped the second time);
    the receipt is FINAL with the line verified."""
    node, pubs, got, spin, fusion = graph
    requests = []
    node.create_subscription(IdCheckRequest, 'id_checks/requests', requests.append, DURABLE_EVENT_QOS)
    decisions = node.create_publisher(IdCheckDecision, 'id_checks/decisions', DURABLE_EVENT_QOS)
    wine_change = node.create_publisher(WeightChange, 'shelves/S5/weight/changes', DURABLE_EVENT_QOS)
    wine_bin = load_store_config(Path(__file__).resolve().parent.parent / 'config/stores/demo.yaml').bin('S5-B1')
    where = {'G1': (0.6, 4.0), 'S5-B1': (wine_bin.x, wine_bin.y)}
    assert wait_until(lambda: (spin(0.05), decisions.get_subscription_count() > 0
                               and wine_change.get_subscription_count() > 0)[1], 10)
    t = T0

    def advance(seconds, at):
        nonlocal t
        for _ in range(int(seconds * 10)):
            t += NS // 10
            tracker_frame(pubs, t, ShopperPosition(track_id='track-w', visit_code='v-wine', x=where[at][0],
                                                   y=where[at][1], confidence=1.0))
            spin(0.01)

    pubs['gate'].publish(gate('G1/1', t, GateEvent.ENTRY, 'v-wine'))
    advance(1, 'G1')
    advance(2, 'S5-B1')
    wine_change.publish(change('S5/1', 'S5', 'S5-B1', -1251.0, t))
    advance(1, 'S5-B1')
    assert wait_until(lambda: (spin(0.05), requests)[1], 10), fusion.log()
    [request] = requests
    assert (request.visit_code, request.sku, request.event_id, request.shelf_id) == ('v-wine', 'WINE-750', 'S5/1', 'S5')
    for _ in range(2):                                   # a re-sent decision counts once
        decision = IdCheckDecision(decision_id='d-1', visit_code='v-wine', sku='WINE-750',
                                   decision=IdCheckDecision.VERIFIED, associate_id='A7')
        decision.header.stamp = to_stamp(t)
        decisions.publish(decision)
    advance(1, 'G1')
    pubs['gate'].publish(gate('G1/2', t, GateEvent.EXIT, 'v-wine'))
    advance(2, 'G1')
    assert wait_until(lambda: (spin(0.1), got['receipts'])[1], 10), fusion.log()
    [receipt] = got['receipts']
    assert receipt.status == Receipt.FINAL, receipt.reasons
    assert [(l.sku, l.age_restricted, l.id_verified) for l in receipt.lines] == [('WINE-750', True, True)]
    assert wait_until(lambda: (spin(0.2), got['diagnostics'].get('duplicate_id_decision', 0) == 1)[1], 5), \
        got['diagnostics']
