"""staff_view_node: the associates' web page, where they answer ID checks and watch the
shelves (stock, low-stock alerts, items on the wrong bin, silent sensors), and the
shoppers' product locator.

Follows fusion's /jwo/id_checks/requests (jwo/IdCheckRequest, durable: a restarted
node sees the open ones again), closes a request at any associate's decision
(/jwo/id_checks/decisions) or its visit's receipt (/jwo/receipts), and publishes the
decisions its page posts on /jwo/id_checks/decisions (jwo/IdCheckDecision, durable:
fusion gets them after its own restart). Every shelf's weight/changes (durable: a
restarted node counts the stock again from the store config's initial_units and their
history) and weight/status feed jwo_nodes.core.store_ops. The board is jwo_nodes.core.staff_view, the
web service jwo_nodes.web.staff_view (Flask on werkzeug, in a thread of this node, as
the live cart). The staff PIN is read from ``pin_file`` once and kept only hashed.
"""
import functools
import time
import uuid
from pathlib import Path

from jwo.msg import IdCheckDecision, IdCheckRequest, Receipt, ShelfStatus, WeightChange
from rclpy.node import Node

from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.staff_view import IdCheckBoard, IdCheckItem, LoginThrottle, StaffPin
from jwo_nodes.core.store_ops import StoreOps
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, EVENT_QOS, NO_PUBLISHER_EVENTS, NO_SUBSCRIPTION_EVENTS, REQUIRED,
                                  Counters, Param, declare_params, run_node, to_ns)
from jwo_nodes.web.live_cart import LiveCartServer
from jwo_nodes.web.staff_view import WEB_COUNTERS, StaffBoard, create_app

PARAMS = [
    Param('store_config', str, 'store configuration YAML file (its id and name)', REQUIRED),
    Param('pin_file', str, 'file holding the staff PIN or password (its first line; keep it mode 600): '
          'read once at start, kept only hashed, never logged', REQUIRED),
    Param('host', str, "address the web service listens on: the store network's, for the associates' "
          'devices (127.0.0.1: this machine only)', '127.0.0.1'),
    Param('port', int, 'TCP port of the web service; 0: any free one (logged)', 8091, 0, 65535),
    Param('keepalive_s', float, 'a quiet stream gets a comment this often', 15.0, 0.1, 300.0),
    Param('stale_after_s', float, 'a shelf whose heartbeat is silent this long (wall clock) is '
          'shown as stale', 3.0, 0.5, 600.0),
    Param('max_login_failures', int, 'wrong PINs allowed per minute (all devices together) before '
          'sign-ins are refused for the rest of it', 5, 1, 1000),
]


class StaffViewNode(Node):

    def __init__(self, **node_options):
        self._server = None    # destroy_node runs also when the start fails
        super().__init__('staff_view_node', **node_options)
        p = declare_params(self, PARAMS)
        store = load_store_config(p.store_config)
        where = f'node {self.get_fully_qualified_name()}'
        try:
            pin = StaffPin(Path(p.pin_file).expanduser().read_text().splitlines()[0].strip())
        except (OSError, IndexError, ValueError) as error:
            # The path only: the file's text is the PIN.
            raise ConfigError(where, 'pin_file', f'{p.pin_file}: no staff PIN there '
                              f'({type(error).__name__})') from None
        self.counters = Counters(self, f'staff_view/{store.store_id}', ('id_check_requests',) + WEB_COUNTERS)
        self.staff = StaffBoard(IdCheckBoard(), StoreOps(store, int(p.stale_after_s * 1e9), time.time_ns()))
        app = create_app(self.staff, pin, LoginThrottle(p.max_login_failures, 60 * 10 ** 9),
                         store=store, keepalive_s=p.keepalive_s, decide=self._decide)
        try:
            self._server = LiveCartServer(app, p.host, p.port)
        except OSError as error:
            raise ConfigError(where, 'host / port', f'cannot listen on {p.host}:{p.port}: {error}')
        self._decisions = self.create_publisher(IdCheckDecision, 'id_checks/decisions', DURABLE_EVENT_QOS,
                                                event_callbacks=NO_PUBLISHER_EVENTS)
        subscription = functools.partial(self.create_subscription, event_callbacks=NO_SUBSCRIPTION_EVENTS)
        subscription(IdCheckRequest, 'id_checks/requests', self._on_request, DURABLE_EVENT_QOS)
        subscription(IdCheckDecision, 'id_checks/decisions', self._on_decision, DURABLE_EVENT_QOS)
        subscription(Receipt, 'receipts', self._on_receipt, DURABLE_EVENT_QOS)
        for shelf_id in store.shelves:
            subscription(WeightChange, f'shelves/{shelf_id}/weight/changes', self._on_change, DURABLE_EVENT_QOS)
            subscription(ShelfStatus, f'shelves/{shelf_id}/weight/status', self._on_status, EVENT_QOS)
        self.create_timer(1.0, lambda: self.counters.values.update(self.staff.counts()))
        self._server.start()
        self.get_logger().info(f'staff view of store {store.store_id} on {self._server.url}staff')

    def _on_request(self, msg: IdCheckRequest) -> None:
        self.counters.count('id_check_requests')
        with self.staff.changing() as board:
            board.on_request(IdCheckItem(msg.visit_code, msg.sku, msg.name, msg.shelf_id, to_ns(msg.header.stamp)))

    def _on_decision(self, msg: IdCheckDecision) -> None:
        with self.staff.changing() as board:
            board.on_decision(msg.visit_code, msg.sku)

    def _on_receipt(self, msg: Receipt) -> None:
        with self.staff.changing() as board:
            board.on_visit_end(msg.visit_code)

    def _on_change(self, msg: WeightChange) -> None:
        with self.staff.changing_ops() as ops:
            ops.on_weight_change(msg.event_id, msg.bin_ids, msg.delta_grams, msg.noise_grams)

    def _on_status(self, msg: ShelfStatus) -> None:
        with self.staff.changing_ops() as ops:
            ops.on_shelf_status(msg.shelf_id, time.time_ns())

    def _decide(self, visit_code: str, sku: str, verified: bool, associate_id: str) -> None:
        """Publishes an associate's decision (from a web request thread), stamped now."""
        msg = IdCheckDecision(decision_id=uuid.uuid4().hex, visit_code=visit_code, sku=sku,
                              decision=IdCheckDecision.VERIFIED if verified else IdCheckDecision.REFUSED,
                              associate_id=associate_id)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._decisions.publish(msg)
        self.get_logger().info(f'ID check of {sku} for visit {visit_code}: '
                               f'{"verified" if verified else "refused"} by {associate_id}')

    def destroy_node(self):
        if self._server is not None:
            self.staff.stop()
            self._server.stop()
        return super().destroy_node()


def main(args=None):
    run_node(StaffViewNode, args)


if __name__ == '__main__':
    main()
