"""uplink_node: the store's way to the cloud.

Subscribes to /jwo/receipts (jwo/Receipt), /jwo/review/requests and
/jwo/receipts/evidence (jwo/ReviewRequest: a review, the events behind a FINAL receipt)
and every gate's /jwo/gates/<id>/access (jwo/VisitAccess: the hash of the token the
gate handed the shopper). A receipt's token hash follows it to the cloud as an access
item, which addresses the visit's receipt page and deliveries: the outbox joins the
two durably, whichever arrives first (jwo_nodes.core.outbox.Outbox.link_access). Each message is converted to protobuf envelopes
(jwo_cloud.convert, pure) and written to the durable outbox (jwo_nodes.core.outbox:
SQLite WAL, synchronous=FULL) before anything else; the sender thread
(jwo_cloud.uplink) then delivers it to the cloud ingest over ZeroMQ + CURVE, one ack per
item, in order within a visit, with retries and backoff, streaming the clips a review
request references. The store holds only its own CURVE key pair and the ingest's public
key: no cloud credentials.
"""
import time

from jwo.msg import Receipt, ReviewRequest, VisitAccess
from rclpy.node import Node

from jwo_cloud import convert
from jwo_cloud.ingest import validate
from jwo_cloud.keys import KeyFileError
from jwo_cloud.uplink import UplinkSender
from jwo_cloud.wire import pb
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.outbox import AccessLink, NewItem, Outbox, OutboxError
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, Counters, Param, declare_params, run_node

PARAMS = [
    Param('store_config', str, 'store configuration YAML file (gives store id, currency, tax)'),
    Param('outbox_path', str, 'SQLite file of the durable outbox', 'runs/edge/outbox.sqlite3'),
    Param('ingest_endpoint', str, 'ZeroMQ endpoint of the cloud ingest',
          'tcp://127.0.0.1:7700'),
    Param('store_secret_key_file', str, "this store's CURVE key pair (jwo-cloud keygen)",
          'runs/edge/keys/store.key_secret'),
    Param('ingest_public_key_file', str, "the ingest's public CURVE key",
          'runs/edge/keys/ingest.key'),
    Param('clip_root', str, 'directory that relative clip references are under', ''),
    Param('clip_wait_s', float, 'a referenced clip file not there yet is waited for this long '
          '(the clip writer may still be at it) before it counts as clip_missing',
          30.0, 0.0, 3600.0),
    Param('chunk_bytes', int, 'clip bytes per message', 1 << 20, 4096, 4 << 20),
    Param('window', int, 'items in flight at most (one per visit)', 64, 1, 1024),
    Param('ack_timeout_s', float, 'resend an item not acknowledged within this', 10.0, 0.1, 600.0),
    Param('backoff_min_s', float, 'first retry delay (doubles per failure)', 0.2, 0.01, 60.0),
    Param('backoff_max_s', float, 'longest retry delay', 30.0, 0.1, 3600.0),
    Param('retention_s', float, 'keep acknowledged items this long (duplicate detection)',
          604800.0, 0.0, 31536000.0),
]

COUNTERS = ('receipts', 'review_requests', 'receipt_evidence', 'accesses', 'access_links', 'duplicates', 'malformed_message', 'outbox_errors',
            'pending', 'done', 'rejected_items', 'sent', 'acked', 'chunks_sent',
            'clip_bytes_sent', 'retries', 'timeouts', 'rejected', 'clip_missing',
            'not_connected', 'stale_acks', 'bad_acks')


class UplinkNode(Node):

    def __init__(self, **node_options):
        super().__init__('uplink_node', **node_options)
        self.params = p = declare_params(self, PARAMS)
        where = f'node {self.get_fully_qualified_name()}'
        self.store = load_store_config(p.store_config)
        self.counters = Counters(self, f'uplink/{self.store.store_id}', COUNTERS)
        try:
            self.outbox = Outbox(p.outbox_path)
        except (OutboxError, OSError) as error:
            raise ConfigError(where, 'outbox_path', str(error))
        try:
            self.sender = UplinkSender(
                self.outbox, p.ingest_endpoint, p.store_secret_key_file,
                p.ingest_public_key_file, window=p.window, ack_timeout_s=p.ack_timeout_s,
                backoff_min_s=p.backoff_min_s, backoff_max_s=p.backoff_max_s,
                chunk_bytes=p.chunk_bytes, clip_root=p.clip_root, clip_wait_s=p.clip_wait_s,
                retention_s=p.retention_s,
                on_event=lambda name, detail: self.get_logger().warning(
                    f'{name}: {detail}', throttle_duration_sec=1.0))
        except (KeyFileError, OSError, ValueError) as error:
            self.outbox.close()
            self.outbox = None
            raise ConfigError(where, 'store_secret_key_file / ingest_public_key_file', str(error))
        # Durable: receipts issued while this node was down arrive when it comes back
        # (the outbox ignores the ones it already holds).
        self.create_subscription(Receipt, '/jwo/receipts', self._on_receipt, DURABLE_EVENT_QOS)
        self.create_subscription(ReviewRequest, '/jwo/review/requests', self._on_review,
                                 DURABLE_EVENT_QOS)
        self.create_subscription(ReviewRequest, '/jwo/receipts/evidence', self._on_evidence,
                                 DURABLE_EVENT_QOS)
        for gate_id in self.store.gates:
            self.create_subscription(VisitAccess, f'/jwo/gates/{gate_id}/access', self._on_access,
                                     DURABLE_EVENT_QOS)
        self.create_timer(1.0, self._update_counters)
        # The catalogue and floor plan the review console prices corrections and draws
        # evidence with; sent at every start (the cloud keeps the newest).
        self._store(convert.catalogue_items(self.store, time.time_ns()), 'catalogue')
        self.sender.start()
        counts = self.outbox.counts()
        self.get_logger().info(
            f'store {self.store.store_id} -> {p.ingest_endpoint}; outbox {p.outbox_path} '
            f'({counts["pending"]} pending)')

    def _store(self, items, kind: str) -> None:
        new_items = [NewItem(*item) for item in items]
        try:
            added = self.outbox.add(new_items)
        except Exception as error:   # disk full, I/O error: counted, never fatal
            self.counters.warn('outbox_errors', f'{kind} not stored: {error}')
            return
        self.counters.count('duplicates', len(new_items) - added)
        # Check what we will send with the ingest's own rules: an item it would refuse
        # is kept (rejected) for an operator instead of being resent forever.
        for item in new_items:
            if item.kind == 'clip':
                continue
            envelope = pb.Envelope()
            envelope.ParseFromString(item.payload)
            problem = validate(envelope, self.store.store_id)
            if problem:
                stored = self.outbox.get(item.item_id)
                if stored is not None and stored.state == 'pending':
                    self.outbox.mark_rejected(stored.seq, f'invalid: {problem}')
                self.counters.warn('malformed_message', f'{item.item_id}: {problem}')
        self.sender.wake()

    def _on_receipt(self, msg: Receipt) -> None:
        self.counters.count('receipts')
        try:
            items = convert.receipt_items(msg, self.store.store_id, time.time_ns(),
                                          self.store.currency, self.store.tax_rate_bp)
        except (ValueError, TypeError) as error:
            self.counters.warn('malformed_message', f'receipt {msg.receipt_id!r}: {error}')
            return
        self._store(items, 'receipt')
        if msg.entry_gate_id:
            (_, visit, _, _), = items
            self._link_access(msg.entry_gate_id, msg.visit_code, receipt_id=msg.receipt_id,
                              visit_key=visit)

    def _on_access(self, msg: VisitAccess) -> None:
        self.counters.count('accesses')
        self._link_access(msg.gate_id, msg.visit_code, token_sha256=bytes(msg.token_sha256))

    def _link_access(self, gate_id: str, visit_code: str, **known) -> None:
        def item_of(link: AccessLink) -> NewItem:
            return NewItem(*convert.access_item(link.receipt_id, link.visit_key, link.token_sha256,
                                                self.store.store_id, time.time_ns()))
        try:
            linked = self.outbox.link_access(gate_id, visit_code, item_of, **known)
        except Exception as error:   # disk full, I/O error: counted, never fatal
            self.counters.warn('outbox_errors', f'access of {gate_id}/{visit_code} not stored: {error}')
            return
        if linked:
            self.counters.count('access_links')
            self.sender.wake()

    def _on_review(self, msg: ReviewRequest) -> None:
        self._on_request(msg, convert.review_items, 'review_requests', 'review request')

    def _on_evidence(self, msg: ReviewRequest) -> None:
        self._on_request(msg, convert.evidence_items, 'receipt_evidence', 'receipt evidence')

    def _on_request(self, msg: ReviewRequest, items_of, counter: str, kind: str) -> None:
        self.counters.count(counter)
        try:
            items = items_of(msg, self.store.store_id, time.time_ns())
        except (ValueError, TypeError) as error:
            self.counters.warn('malformed_message', f'{kind} {msg.receipt_id!r}: {error}')
            return
        self._store(items, kind)

    def _update_counters(self) -> None:
        self.counters.values.update(self.sender.counters)
        counts = self.outbox.counts()
        self.counters.values.update(pending=counts['pending'], done=counts['done'],
                                    rejected_items=counts['rejected'])

    def destroy_node(self):
        # Also called by rclpy's shutdown for a node whose __init__ failed half-way.
        sender, outbox = getattr(self, 'sender', None), getattr(self, 'outbox', None)
        self.sender = self.outbox = None
        if sender is not None:
            sender.stop()
        if outbox is not None:
            outbox.close()
        return super().destroy_node()


def main(args=None):
    run_node(UplinkNode, args)


if __name__ == '__main__':
    main()
