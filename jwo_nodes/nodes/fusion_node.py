"""fusion_node: gate events, shopper positions, shelf weight changes and the associates'
ID-check decisions in; live carts, receipts, review requests, the events behind FINAL
receipts (receipts/evidence) and ID-check requests out. All decisions are made by
jwo_nodes.core.fusion.

Restarts: every input is journaled in ``<state_dir>/fusion-<store_id>.jsonl`` before it
is acted on (jwo_nodes/core/fusion/journal.py, which says what is fsync'd when). A
restarted node replays the journal, publishes the receipts it had issued but not yet
published, and sends the visits still open to review (``fusion_restarted``). Gate events
and weight changes are transient-local: their publishers re-send what fusion missed
while it was down, and the journal drops the ones it already had.
"""
import functools
import time

from jwo.msg import (CartLine, CartUpdate, DoubtfulEvent, GateEvent, GateStatus, IdCheckDecision,
                     IdCheckRequest, Receipt, ReviewReason, ReviewRequest, SavingLine, ShelfStatus,
                     ShopperPositions, TrackPath, WeightChange)
from rclpy.node import Node

from jwo_nodes.core.clips import clip_ref
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.fusion import (NEEDS_REVIEW, ChangeInput, FusionJournal, FusionSettings, GateInput,
                                   IdDecisionInput, IdVerdict, JournalError, Outputs, TrackInput)
from jwo_nodes.core.held_item import HeldItem
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, EVENT_QOS, NO_PUBLISHER_EVENTS, NO_SUBSCRIPTION_EVENTS,
                                  REQUIRED, Counters, Param, declare_params, run_node, to_ns, to_stamp)

_DEFAULT = FusionSettings()
PARAMS = [
    Param('store_config', str, 'Path of the store YAML (config/stores/<store>.yaml).', REQUIRED),
    Param('state_dir', str, 'Folder of the journal of fusion\'s inputs (fusion-<store_id>.jsonl), '
          'replayed when the node restarts: open visits survive a crash (~ is the home folder).',
          '~/.local/state/jwo'),
    Param('journal_sync_s', float, 'Positions, statuses and ticks are fsync\'d to the journal at most '
          'this often; gate events and weight changes at once (s).', 0.2, 0.0, 10.0),
    Param('reach_free_m', float, 'A shopper this close to a bin\'s standing point is as likely as anybody '
          'to have reached into it (m).', _DEFAULT.reach_free_m, 0.0, 3.0),
    Param('reach_sigma_m', float, 'Farther away, the likelihood falls off as a normal of this spread (m).',
          _DEFAULT.reach_sigma_m, 0.05, 3.0),
    Param('candidate_radius_m', float, 'Tracks farther than this from a bin are no candidates (m).',
          _DEFAULT.candidate_radius_m, 0.1, 10.0),
    Param('window_margin_s', float, 'Positions this long around a change count as at the shelf (s).',
          _DEFAULT.window_margin_s, 0.0, 5.0),
    Param('hand_zone_m', float, 'A hand seen this close to a bin\'s shelf point is in the bin (m).',
          _DEFAULT.hand_zone_m, 0.05, 2.0),
    Param('hand_sigma_m', float, 'A hand in the bin counts by a normal fall-off of this spread from the '
          'bin\'s shelf point (m).', _DEFAULT.hand_sigma_m, 0.01, 1.0),
    Param('hand_floor', float, 'Where hands were seen in the bin, the weight left to a candidate whose '
          'hand was never there.', _DEFAULT.hand_floor, 0.0, 1.0),
    Param('hand_full_share', float, 'A hand in the bin for this share of the window counts as there '
          'all along.', _DEFAULT.hand_full_share, 0.05, 1.0),
    Param('hand_reached', float, 'A track whose hand was in the bin this share of the window, more than '
          'any other\'s, reached into it and was not walking past.', _DEFAULT.hand_reached, 0.0, 1.0),
    Param('background_weight', float, 'Weight of "somebody nobody tracked" against a sure shopper at '
          'the bin.', _DEFAULT.background_weight, 0.0, 1.0),
    Param('identity_floor', float, 'Probability that a track carries the right visit code at tracker '
          'confidence 0 (rising linearly to 1).', _DEFAULT.identity_floor, 0.0, 1.0),
    Param('stray_prior', float, 'Prior weight of taking one stray unit of another product lying on a bin.',
          _DEFAULT.stray_prior, 0.0, 10.0),
    Param('elsewhere_prior', float, 'Prior weight of a put-back on a bin of another product.',
          _DEFAULT.elsewhere_prior, 0.0, 10.0),
    Param('beside_prior', float, 'Prior weight of a put-back on the facing beside one of the product\'s '
          'own, against its own bin.', _DEFAULT.beside_prior, 0.0, 10.0),
    Param('one_hand_share', float, 'Weight of a shopper making a change while making another on another '
          'bin, against one change at a time.', _DEFAULT.one_hand_share, 0.0, 1.0),
    Param('two_hands_prior', float, 'Weight of two shoppers whose hands were both in a bin making its '
          'change together (the load cell sees the sum), against one of them alone.',
          _DEFAULT.two_hands_prior, 0.0, 1.0),
    Param('beam_width', int, 'Hypotheses kept while solving the open visits\' changes.',
          _DEFAULT.beam_width, 1, 10000),
    Param('max_unsure_changes', int, 'Unsure changes of finished visits kept in the hypotheses (what '
          'lies on a bin) before the oldest is settled.', _DEFAULT.max_unsure_changes, 0, 10000),
    Param('stale_after_s', float, 'A sensor silent this long (wall clock) stops holding decisions back (s).',
          _DEFAULT.stale_after_s, 0.5, 600.0),
    Param('tracker_stale_after_s', float, 'The tracker silent this long (no positions at all, wall clock) '
          'stops holding decisions back: its visits are decided without it and go to review (s).',
          _DEFAULT.tracker_stale_after_s, 1.0, 600.0),
    Param('unseen_exit_s', float, 'A walk-out nobody with a visit was seen at closes, this long after, '
          'the open visit no track has carried since (s).', _DEFAULT.unseen_exit_s, 1.0, 600.0),
    Param('tick_hz', float, 'How often pending decisions are re-checked without new input (Hz).',
          5.0, 0.5, 100.0),
]
# Parameters that are FusionSettings fields (the rest are the node's own).
_SETTINGS = [p.name for p in PARAMS if p.name in FusionSettings.__dataclass_fields__]

COUNTERS = ('gate_events', 'weight_changes', 'position_updates', 'cart_updates', 'receipts',
            'receipts_needs_review', 'receipt_evidence', 'resent_events', 'id_check_requests', 'id_check_decisions')


class FusionNode(Node):
    def __init__(self, **node_options):
        self._fusion = None    # destroy_node runs also when the start fails
        super().__init__('fusion_node', **node_options)
        params = declare_params(self, PARAMS)
        store = load_store_config(params.store_config)
        settings = FusionSettings(**{name: getattr(params, name) for name in _SETTINGS})
        try:
            self._fusion = FusionJournal(store, settings, params.state_dir, time.time_ns(),
                                         sync_interval_s=params.journal_sync_s)
        except (JournalError, OSError) as error:
            raise ConfigError(f'node {self.get_fully_qualified_name()}', 'state_dir', str(error))
        self._counters = Counters(self, 'fusion', COUNTERS)
        publisher = functools.partial(self.create_publisher, event_callbacks=NO_PUBLISHER_EVENTS)
        subscription = functools.partial(self.create_subscription, event_callbacks=NO_SUBSCRIPTION_EVENTS)
        self._carts = publisher(CartUpdate, 'cart/updates', EVENT_QOS)
        self._receipts = publisher(Receipt, 'receipts', DURABLE_EVENT_QOS)
        self._reviews = publisher(ReviewRequest, 'review/requests', DURABLE_EVENT_QOS)
        # A FINAL receipt's events, for a dispute of it: not on review/requests, where
        # clip_node would cut clips for them and the cloud would queue a review.
        self._evidence = publisher(ReviewRequest, 'receipts/evidence', DURABLE_EVENT_QOS)
        # Durable both ways: a staff view that (re)starts sees the open requests, and a
        # restarted fusion gets the decisions it missed (the journal drops the others).
        self._id_checks = publisher(IdCheckRequest, 'id_checks/requests', DURABLE_EVENT_QOS)
        self._store_id = store.store_id
        # The executor takes what is ready in this order: a weight change does not wait
        # behind the heartbeats of the store's other shelves.
        for shelf_id in store.shelves:
            subscription(WeightChange, f'shelves/{shelf_id}/weight/changes', self._on_change, DURABLE_EVENT_QOS)
        for gate_id in store.gates:
            subscription(GateEvent, f'gates/{gate_id}/events', self._on_gate, DURABLE_EVENT_QOS)
        subscription(ShopperPositions, 'shoppers/positions', self._on_positions, EVENT_QOS)
        subscription(IdCheckDecision, 'id_checks/decisions', self._on_id_decision, DURABLE_EVENT_QOS)
        for gate_id in store.gates:
            subscription(GateStatus, f'gates/{gate_id}/status', self._on_gate_status, EVENT_QOS)
        for shelf_id in store.shelves:
            subscription(ShelfStatus, f'shelves/{shelf_id}/weight/status', self._on_status, EVENT_QOS)
        self.create_timer(1.0 / params.tick_hz, lambda: self._publish(self._fusion.advance(time.time_ns())))
        self.get_logger().info(f'fusion for store {store.store_id}: {len(store.shelves)} shelves, '
                               f'{len(store.gates)} gates; journal {self._fusion.path}')
        self._report_recovery()

    def _report_recovery(self) -> None:
        recovery = self._fusion.recovery
        log = self.get_logger()
        if recovery.inputs:
            log.warning(f'restarted: replayed {recovery.inputs} inputs; open visits sent to review: '
                        f'{", ".join(recovery.restarted) or "none"}')
        if recovery.torn_bytes:
            log.error(f'the journal ended in {recovery.torn_bytes} unreadable bytes (cut off)')
        for line, error in recovery.failed:
            log.error(f'journal line {line}: fusion failed on it and skipped it: {error}')
        self._publish(Outputs(receipts=recovery.receipts))

    def _on_gate(self, msg: GateEvent) -> None:
        self._counters.count('gate_events')
        if msg.direction not in (GateEvent.ENTRY, GateEvent.EXIT):
            self._counters.warn('malformed_gate_event', f'{msg.event_id}: direction {msg.direction}')
            return
        event = GateInput(event_id=msg.event_id, gate_id=msg.gate_id, stamp_ns=to_ns(msg.header.stamp),
                          is_entry=msg.direction == GateEvent.ENTRY, visit_code=msg.visit_code,
                          group_size=msg.group_size)
        self._publish_new(msg.event_id, 'duplicate_gate_event',
                          self._fusion.on_gate_event(event, time.time_ns()))

    def _on_change(self, msg: WeightChange) -> None:
        self._counters.count('weight_changes')
        change = ChangeInput(event_id=msg.event_id, shelf_id=msg.shelf_id, bin_ids=tuple(msg.bin_ids),
                             delta_grams=tuple(msg.delta_grams), start_ns=to_ns(msg.start_stamp),
                             end_ns=to_ns(msg.end_stamp), noise_grams=msg.noise_grams,
                             after_restart=msg.restart != WeightChange.RESTART_NONE)
        self._publish_new(msg.event_id, 'duplicate_weight_change',
                          self._fusion.on_weight_change(change, time.time_ns()))

    def _on_id_decision(self, msg: IdCheckDecision) -> None:
        self._counters.count('id_check_decisions')
        if msg.decision not in (IdCheckDecision.VERIFIED, IdCheckDecision.REFUSED):
            self._counters.warn('malformed_id_decision', f'{msg.decision_id}: decision {msg.decision}')
            return
        decision = IdDecisionInput(
            decision_id=msg.decision_id, visit_code=msg.visit_code, sku=msg.sku,
            verdict=IdVerdict.VERIFIED if msg.decision == IdCheckDecision.VERIFIED else IdVerdict.REFUSED,
            associate_id=msg.associate_id, stamp_ns=to_ns(msg.header.stamp))
        self._publish_new(msg.decision_id, 'duplicate_id_decision',
                          self._fusion.on_id_decision(decision, time.time_ns()))

    def _on_gate_status(self, msg: GateStatus) -> None:
        self._publish(self._fusion.on_gate_status(msg.gate_id, to_ns(msg.processed_until), msg.last_event_id,
                                                  time.time_ns()))

    def _on_status(self, msg: ShelfStatus) -> None:
        self._publish(self._fusion.on_shelf_status(msg.shelf_id, to_ns(msg.processed_until),
                                                   time.time_ns()))

    def _on_positions(self, msg: ShopperPositions) -> None:
        self._counters.count('position_updates')
        tracks = [TrackInput(s.track_id, s.visit_code, s.x, s.y,
                             (s.hand_x, s.hand_y) if s.hand_seen else None, s.confidence,
                             HeldItem(s.hand_holding, s.hand_item_blue, s.hand_item_green)
                             if s.hand_seen and s.hand_holding > 0 else None)
                  for s in msg.shoppers]
        self._publish(self._fusion.on_positions(to_ns(msg.header.stamp), tracks, time.time_ns()))

    def _publish_new(self, event_id: str, duplicate_counter: str, out) -> None:
        """Publishes what a gate event, weight change or ID-check decision led to (None:
        the journal had it already)."""
        if out is not None:
            self._publish(out)
        elif self._fusion.resent(event_id):
            self._counters.count('resent_events')   # a publisher's history after our restart
        else:
            self._counters.warn(duplicate_counter, f'{event_id} seen before')

    def _publish(self, out) -> None:
        """Publishes what an input led to (the carts as first looked at), then the carts
        of the joint solve, which may re-weigh earlier changes."""
        problems = self._fusion.core.problems
        for counter, message in problems:
            self._counters.warn(counter, message)
        problems.clear()
        self._publish_carts(out.carts)
        for receipt in out.receipts:
            self._publish_receipt(receipt)
            self._fusion.published(receipt.receipt_id)
        self._publish_carts(self._fusion.solved_carts())

    def _publish_carts(self, carts: list) -> None:
        for cart in carts:
            msg = CartUpdate(visit_code=cart.visit_code, revision=cart.revision,
                             cause_event_id=cart.cause_event_id,
                             lines=[_line(line) for line in cart.lines], savings=_savings(cart.savings),
                             savings_cents=cart.savings_cents, total_cents=cart.total_cents)
            msg.header.stamp = to_stamp(cart.stamp_ns)
            self._carts.publish(msg)
            self._counters.count('cart_updates')
            for check in cart.id_checks:
                request = IdCheckRequest(store_id=self._store_id, visit_code=check.visit_code,
                                         event_id=check.event_id, shelf_id=check.shelf_id, sku=check.sku,
                                         name=check.name)
                request.header.stamp = to_stamp(check.stamp_ns)
                self._id_checks.publish(request)
                self._counters.count('id_check_requests')

    def _publish_receipt(self, receipt) -> None:
        msg = Receipt(
            receipt_id=receipt.receipt_id, store_id=receipt.store_id, visit_code=receipt.visit_code,
            entry_stamp=to_stamp(receipt.entry_ns), entry_gate_id=receipt.entry_gate_id,
            exit_stamp=to_stamp(receipt.exit_ns),
            lines=[_line(line) for line in receipt.lines], savings=_savings(receipt.savings),
            savings_cents=receipt.savings_cents, subtotal_cents=receipt.subtotal_cents,
            tax_cents=receipt.tax_cents, total_cents=receipt.total_cents,
            status=Receipt.NEEDS_REVIEW if receipt.status == NEEDS_REVIEW else Receipt.FINAL,
            reasons=[ReviewReason(code=r.code, event_id=r.event_id, detail=r.detail) for r in receipt.reasons],
            confidence=receipt.confidence)
        msg.header.stamp = to_stamp(receipt.exit_ns)
        self._receipts.publish(msg)
        self._counters.count('receipts')
        self.get_logger().info(f'receipt {receipt.receipt_id}: {receipt.status}, '
                               f'{len(receipt.lines)} lines, total {receipt.total_cents} cents')
        review = receipt.status == NEEDS_REVIEW
        if not (review or receipt.doubts):
            return
        self._counters.count('receipts_needs_review' if review else 'receipt_evidence')
        request = ReviewRequest(receipt_id=receipt.receipt_id, store_id=receipt.store_id,
                                visit_code=receipt.visit_code,
                                events=[_doubt(d, receipt, clips=review) for d in receipt.doubts])
        request.header.stamp = to_stamp(receipt.exit_ns)
        (self._reviews if review else self._evidence).publish(request)

    def destroy_node(self):
        if self._fusion is not None:
            self._fusion.close()
        super().destroy_node()


def _line(line) -> CartLine:
    return CartLine(sku=line.sku, name=line.name, quantity=line.quantity,
                    unit_price_cents=line.unit_price_cents, line_total_cents=line.line_total_cents,
                    confidence=float(line.confidence), sold_by_weight=line.sold_by_weight, grams=line.grams,
                    age_restricted=line.age_restricted, id_verified=line.id_verified)


def _savings(savings: tuple) -> list:
    return [SavingLine(promotion_id=s.promotion_id, name=s.name, skus=list(s.skus), cents=s.cents)
            for s in savings]


def _doubt(doubt, receipt, clips: bool) -> DoubtfulEvent:
    # clip_node writes these clips (one per camera that sees the bin) from its frame
    # ring, for review requests only; the uplink sends them before the review request.
    return DoubtfulEvent(
        event_id=doubt.event_id, reason_code=doubt.reason_code, shelf_id=doubt.shelf_id,
        bin_ids=list(doubt.bin_ids), delta_grams=list(doubt.delta_grams),
        window_start=to_stamp(doubt.window_start_ns), window_end=to_stamp(doubt.window_end_ns),
        candidate_visits=list(doubt.candidate_visits),
        candidate_scores=[float(s) for s in doubt.candidate_scores],
        proposed_sku=doubt.proposed_sku, proposed_quantity=doubt.proposed_quantity,
        camera_ids=list(doubt.camera_ids),
        candidate_skus=[p.sku for p in doubt.candidate_products],
        candidate_quantities=[p.quantity for p in doubt.candidate_products],
        candidate_unit_grams=[float(p.unit_grams) for p in doubt.candidate_products],
        candidate_product_scores=[float(p.probability) for p in doubt.candidate_products],
        clip_refs=[clip_ref(receipt.store_id, receipt.receipt_id, doubt.event_id, camera_id)
                   for camera_id in doubt.camera_ids] if clips else [],
        proposed_visit=doubt.proposed_visit,
        tracks=[TrackPath(track_id=path.track_id, visit_code=path.visit_code,
                          stamps=[to_stamp(ns) for ns in path.stamps_ns], x=list(path.xs), y=list(path.ys))
                for path in doubt.tracks])


def main(args=None):
    run_node(FusionNode, args)


if __name__ == '__main__':
    main()
