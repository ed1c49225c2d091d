"""fusion_node: gate events, shopper positions and shelf weight changes in; live carts,
receipts and review requests out. All decisions are made by jwo_nodes.core.fusion."""
import time

from jwo_msgs.msg import (CartLine, CartUpdate, DoubtfulEvent, GateEvent, Receipt,
                          ReviewReason, ReviewRequest, ShelfStatus, ShopperPositions,
                          WeightChange)
from rclpy.node import Node

from jwo_nodes.core.clips import clip_ref
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.fusion import (NEEDS_REVIEW, ChangeInput, FusionCore, FusionSettings,
                                   GateInput, TrackInput)
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, EVENT_QOS, REQUIRED, Counters, Param,
                                  declare_params,
                                  run_node, to_ns, to_stamp)

PARAMS = [
    Param('store_config', str, 'Path of the store YAML (config/stores/<store>.yaml).', REQUIRED),
    Param('reach_radius_m', float, 'A shopper within this distance of a bin can reach into it (m).',
          0.9, 0.1, 3.0),
    Param('fallback_radius_m', float, 'Nearest shopper within this distance is a doubtful candidate (m).',
          2.5, 0.1, 10.0),
    Param('ambiguity_margin_m', float, 'Attribution is sure when the runner-up is this much farther (m).',
          0.4, 0.0, 5.0),
    Param('window_margin_s', float, 'Positions this long around a change count as at the shelf (s).',
          0.5, 0.0, 5.0),
    Param('hand_zone_m', float, 'A hand seen this close to a bin\'s shelf point is in the bin (m).',
          0.5, 0.05, 2.0),
    Param('hand_margin', float, 'Attribution by hands is sure when the runner-up\'s hand was in the '
          'bin for this much less of the change window (share of its frames).', 0.3, 0.05, 1.0),
    Param('review_threshold', float, 'Receipts below this confidence go to human review.',
          0.75, 0.0, 1.0),
    Param('stale_after_s', float, 'A sensor silent this long (wall clock) stops holding decisions back (s).',
          3.0, 0.5, 600.0),
    Param('tick_hz', float, 'How often pending decisions are re-checked without new input (Hz).',
          5.0, 0.5, 100.0),
]

COUNTERS = ('gate_events', 'weight_changes', 'position_updates', 'cart_updates', 'receipts',
            'receipts_needs_review')


class FusionNode(Node):
    def __init__(self):
        super().__init__('fusion_node')
        params = declare_params(self, PARAMS)
        store = load_store_config(params.store_config)
        self._core = FusionCore(store, FusionSettings(
            reach_radius_m=params.reach_radius_m, fallback_radius_m=params.fallback_radius_m,
            ambiguity_margin_m=params.ambiguity_margin_m, window_margin_s=params.window_margin_s,
            hand_zone_m=params.hand_zone_m, hand_margin=params.hand_margin,
            review_threshold=params.review_threshold, stale_after_s=params.stale_after_s))
        self._counters = Counters(self, 'fusion', COUNTERS)
        self._carts = self.create_publisher(CartUpdate, 'cart/updates', EVENT_QOS)
        self._receipts = self.create_publisher(Receipt, 'receipts', DURABLE_EVENT_QOS)
        self._reviews = self.create_publisher(ReviewRequest, 'review/requests', DURABLE_EVENT_QOS)
        for shelf_id in store.shelves:
            self.create_subscription(WeightChange, f'shelves/{shelf_id}/weight/changes',
                                     self._on_change, EVENT_QOS)
            self.create_subscription(ShelfStatus, f'shelves/{shelf_id}/weight/status',
                                     self._on_status, EVENT_QOS)
        for gate_id in store.gates:
            self.create_subscription(GateEvent, f'gates/{gate_id}/events', self._on_gate, DURABLE_EVENT_QOS)
        self.create_subscription(ShopperPositions, 'shoppers/positions', self._on_positions, EVENT_QOS)
        self.create_timer(1.0 / params.tick_hz, lambda: self._publish(self._core.advance(time.time_ns())))
        self.get_logger().info(f'fusion for store {store.store_id}: {len(store.shelves)} shelves, '
                               f'{len(store.gates)} gates')

    def _on_gate(self, msg: GateEvent) -> None:
        self._counters.count('gate_events')
        if msg.direction not in (GateEvent.ENTRY, GateEvent.EXIT):
            self._counters.warn('malformed_gate_event', f'{msg.event_id}: direction {msg.direction}')
            return
        self._publish(self._core.on_gate_event(GateInput(
            event_id=msg.event_id, gate_id=msg.gate_id, stamp_ns=to_ns(msg.header.stamp),
            is_entry=msg.direction == GateEvent.ENTRY, visit_code=msg.visit_code,
            group_size=msg.group_size), time.time_ns()))

    def _on_change(self, msg: WeightChange) -> None:
        self._counters.count('weight_changes')
        self._publish(self._core.on_weight_change(ChangeInput(
            event_id=msg.event_id, shelf_id=msg.shelf_id, bin_ids=tuple(msg.bin_ids),
            delta_grams=tuple(msg.delta_grams), start_ns=to_ns(msg.start_stamp),
            end_ns=to_ns(msg.end_stamp), noise_grams=msg.noise_grams), time.time_ns()))

    def _on_status(self, msg: ShelfStatus) -> None:
        self._publish(self._core.on_shelf_status(msg.shelf_id, to_ns(msg.processed_until),
                                                 time.time_ns()))

    def _on_positions(self, msg: ShopperPositions) -> None:
        self._counters.count('position_updates')
        tracks = [TrackInput(s.track_id, s.visit_code, s.x, s.y,
                             (s.hand_x, s.hand_y) if s.hand_seen else None, s.confidence)
                  for s in msg.shoppers]
        self._publish(self._core.on_positions(to_ns(msg.header.stamp), tracks, time.time_ns()))

    def _publish(self, out) -> None:
        for counter, message in self._core.problems:
            self._counters.warn(counter, message)
        self._core.problems.clear()
        for cart in out.carts:
            msg = CartUpdate(visit_code=cart.visit_code, revision=cart.revision,
                             cause_event_id=cart.cause_event_id,
                             lines=[_line(line) for line in cart.lines], total_cents=cart.total_cents)
            msg.header.stamp = to_stamp(cart.stamp_ns)
            self._carts.publish(msg)
            self._counters.count('cart_updates')
        for receipt in out.receipts:
            self._publish_receipt(receipt)

    def _publish_receipt(self, receipt) -> None:
        msg = Receipt(
            receipt_id=receipt.receipt_id, store_id=receipt.store_id, visit_code=receipt.visit_code,
            entry_stamp=to_stamp(receipt.entry_ns), exit_stamp=to_stamp(receipt.exit_ns),
            lines=[_line(line) for line in receipt.lines], subtotal_cents=receipt.subtotal_cents,
            tax_cents=receipt.tax_cents, total_cents=receipt.total_cents,
            status=Receipt.NEEDS_REVIEW if receipt.status == NEEDS_REVIEW else Receipt.FINAL,
            reasons=[ReviewReason(code=r.code, event_id=r.event_id, detail=r.detail) for r in receipt.reasons],
            confidence=receipt.confidence)
        msg.header.stamp = to_stamp(receipt.exit_ns)
        self._receipts.publish(msg)
        self._counters.count('receipts')
        self.get_logger().info(f'receipt {receipt.receipt_id}: {receipt.status}, '
                               f'{len(receipt.lines)} lines, total {receipt.total_cents} cents')
        if receipt.status != NEEDS_REVIEW:
            return
        self._counters.count('receipts_needs_review')
        request = ReviewRequest(receipt_id=receipt.receipt_id, store_id=receipt.store_id,
                                visit_code=receipt.visit_code,
                                events=[_doubt(d, receipt) for d in receipt.doubts])
        request.header.stamp = to_stamp(receipt.exit_ns)
        self._reviews.publish(request)


def _line(line) -> CartLine:
    return CartLine(sku=line.sku, name=line.name, quantity=line.quantity,
                    unit_price_cents=line.unit_price_cents, line_total_cents=line.line_total_cents,
                    confidence=float(line.confidence))


def _doubt(doubt, receipt) -> DoubtfulEvent:
    # clip_node writes these clips (one per camera that sees the bin) from its frame
    # ring; the uplink sends them before the review request.
    return DoubtfulEvent(
        event_id=doubt.event_id, reason_code=doubt.reason_code, shelf_id=doubt.shelf_id,
        bin_ids=list(doubt.bin_ids), delta_grams=list(doubt.delta_grams),
        window_start=to_stamp(doubt.window_start_ns), window_end=to_stamp(doubt.window_end_ns),
        candidate_visits=list(doubt.candidate_visits),
        candidate_scores=[float(s) for s in doubt.candidate_scores],
        proposed_sku=doubt.proposed_sku, proposed_quantity=doubt.proposed_quantity,
        camera_ids=list(doubt.camera_ids),
        clip_refs=[clip_ref(receipt.store_id, receipt.receipt_id, doubt.event_id, camera_id)
                   for camera_id in doubt.camera_ids])


def main(args=None):
    run_node(FusionNode, args)


if __name__ == '__main__':
    main()
