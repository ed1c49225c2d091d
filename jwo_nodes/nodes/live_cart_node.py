"""live_cart_node: the shopper's live running receipt, served to their phone.

Learns each visit's token hash from its gate (/jwo/gates/<id>/access, jwo/VisitAccess,
durable), follows fusion's /jwo/cart/updates and kills a visit's token at its EXIT event
(/jwo/gates/<id>/events) or its receipt (/jwo/receipts), all in
jwo_nodes.core.live_cart; the web service (jwo_nodes.web.live_cart: Flask on werkzeug's
threaded WSGI server, in a thread of this node) shows the cart a token opens and pushes
every change to the page as a server-sent event.
"""
import functools

from jwo.msg import CartUpdate, GateEvent, Receipt, VisitAccess
from rclpy.node import Node

from jwo_nodes.core import live_cart, visit_access
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, EVENT_QOS, NO_SUBSCRIPTION_EVENTS, Counters, Param,
                                  declare_params, run_node, to_ns)
from jwo_nodes.web.live_cart import WEB_COUNTERS, CartBoard, LiveCartServer, create_app

PARAMS = [
    Param('store_config', str, 'store configuration YAML file (its gates, name and currency)'),
    Param('host', str, 'address the web service listens on: the store network\'s, for phones '
          '(127.0.0.1: this machine only)', '127.0.0.1'),
    Param('port', int, 'TCP port of the web service; 0: any free one (logged)', 8090, 0, 65535),
    Param('keepalive_s', float, 'a quiet cart stream gets a comment this often, so a phone that '
          'went away frees its stream', 15.0, 0.1, 300.0),
    Param('max_streams', int, 'cart streams open at once at most (each holds a server thread); '
          'more are answered 503', 256, 1, 10000),
    Param('max_visit_s', float, "a visit's token dies this long after its entry (by stamps) even "
          'without an exit', 14400.0, 60.0, 604800.0),
]


class LiveCartNode(Node):

    def __init__(self, **node_options):
        self._server = None    # destroy_node runs also when the start fails
        super().__init__('live_cart_node', **node_options)
        self.params = p = declare_params(self, PARAMS)
        store = load_store_config(p.store_config)
        self.counters = Counters(self, f'live_cart/{store.store_id}', live_cart.COUNTER_NAMES + WEB_COUNTERS)
        self.board = CartBoard(live_cart.LiveCarts(max_visit_ns=int(p.max_visit_s * 1e9)), p.max_streams)
        app = create_app(self.board, store_name=store.name, currency=store.currency,
                         keepalive_s=p.keepalive_s)
        try:
            self._server = LiveCartServer(app, p.host, p.port)
        except OSError as error:
            raise ConfigError(f'node {self.get_fully_qualified_name()}', 'host / port',
                              f'cannot listen on {p.host}:{p.port}: {error}')
        subscription = functools.partial(self.create_subscription, event_callbacks=NO_SUBSCRIPTION_EVENTS)
        # QoS as the publishers offer them: the durable ones bring what was published
        # before this node started (or restarted).
        for gate_id in store.gates:
            subscription(VisitAccess, f'gates/{gate_id}/access', self._on_access, DURABLE_EVENT_QOS)
            subscription(GateEvent, f'gates/{gate_id}/events', self._on_gate, DURABLE_EVENT_QOS)
        subscription(CartUpdate, 'cart/updates', self._on_cart, EVENT_QOS)
        subscription(Receipt, 'receipts', self._on_receipt, DURABLE_EVENT_QOS)
        self.create_timer(1.0, lambda: self.counters.values.update(self.board.counts()))
        self._server.start()
        self.get_logger().info(f'live carts of store {store.store_id} on {self._server.url}cart/<token>')

    def _on_access(self, msg: VisitAccess) -> None:
        access = visit_access.VisitAccess(msg.gate_id, msg.visit_code, to_ns(msg.header.stamp),
                                          msg.token_sha256.tobytes())
        with self.board.changing() as carts:
            carts.on_access(access)

    def _on_cart(self, msg: CartUpdate) -> None:
        lines = tuple(live_cart.LiveLine(line.sku, line.name, line.quantity, line.line_total_cents,
                                         float(line.confidence), line.grams if line.sold_by_weight else 0)
                      for line in msg.lines)
        cart = live_cart.LiveCart(msg.visit_code, msg.revision, to_ns(msg.header.stamp), lines,
                                  msg.total_cents, tuple(live_cart.Saving(s.name, s.cents) for s in msg.savings))
        with self.board.changing() as carts:
            carts.on_cart(cart)

    def _on_gate(self, msg: GateEvent) -> None:
        if msg.direction == GateEvent.EXIT:
            with self.board.changing() as carts:
                carts.on_end(msg.visit_code, to_ns(msg.header.stamp))

    def _on_receipt(self, msg: Receipt) -> None:
        with self.board.changing() as carts:
            carts.on_end(msg.visit_code, to_ns(msg.header.stamp))

    def destroy_node(self):
        if self._server is not None:
            self.board.stop()
            self._server.stop()
        return super().destroy_node()


def main(args=None):
    run_node(LiveCartNode, args)


if __name__ == '__main__':
    main()
