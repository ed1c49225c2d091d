"""`jwo bench-live-cart`: how soon a cart update is on the shopper's screen.

    jwo bench-live-cart                      # 200 updates at 10 Hz
    jwo bench-live-cart --updates 500 --rate-hz 50 --json runs/live-cart.json

Starts a live_cart_node as its own process (as the store runs it), gives it a visit's
token hash as a gate does (jwo/VisitAccess), opens that visit's live cart in headless
Chromium, then publishes ``--updates`` CartUpdates of the visit (a take, a put-back, a
take, ...) at ``--rate-hz``, as fusion does. Per update: from just before publish()
(time.time_ns()) to when the page's DOM shows it (a MutationObserver on the cart's
revision, stamped performance.timeOrigin + performance.now(): the same wall clock, on
this machine). Needs the chromium and chromium-driver packages.
"""
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import rclpy
from jwo.msg import CartLine, CartUpdate, VisitAccess

from jwo_nodes import headless_chromium
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.scoring import percentiles
from jwo_nodes.core.visit_access import new_token, token_hash
from jwo_nodes.demo import free_port
from jwo_nodes.graph import default_params_dir
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, EVENT_QOS, to_stamp

VISIT = 'v-benchlive01'
# Records, per revision, when the page's cart first showed it (epoch ms).
OBSERVE_DRAWS = '''
window.jwoDrawn = {};
const cart = document.getElementById('cart');
new MutationObserver(function () {
  const revision = cart.dataset.revision;
  if (!(revision in window.jwoDrawn)) window.jwoDrawn[revision] = performance.timeOrigin + performance.now();
}).observe(cart, {attributes: true, attributeFilter: ['data-revision']});
'''


def add_arguments(parser) -> None:
    parser.add_argument('--store', default='config/stores/demo.yaml', help='store config (products, currency)')
    parser.add_argument('--updates', type=int, default=200, help='cart updates to publish')
    parser.add_argument('--rate-hz', type=float, default=10.0, help='cart updates per second')
    parser.add_argument('--json', metavar='FILE', help='also write the figures here')


def run(args) -> int:
    if not headless_chromium.available():
        print('error: needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)',
              file=sys.stderr)
        return 2
    if args.updates < 1 or not 0 < args.rate_hz <= 1000:
        print('error: --updates must be at least 1 and --rate-hz in (0, 1000]', file=sys.stderr)
        return 2
    try:
        store = load_store_config(args.store)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    port = free_port()
    params = default_params_dir() / 'live_cart_node.yaml'
    node = subprocess.Popen([str(Path(sys.executable).parent / 'live_cart_node'), '--ros-args', '-r', '__ns:=/jwo',
                             '--params-file', str(params), '-p', f'store_config:={Path(args.store).resolve()}',
                             '-p', f'port:={port}'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    rclpy.init()
    publisher = rclpy.create_node('bench_live_cart', namespace='/jwo')
    browser = None
    try:
        # As the store's first gate would, at the visit's entry.
        gate_id = next(iter(store.gates))
        access = publisher.create_publisher(VisitAccess, f'gates/{gate_id}/access', DURABLE_EVENT_QOS)
        carts = publisher.create_publisher(CartUpdate, 'cart/updates', EVENT_QOS)
        token = new_token()
        grant = VisitAccess(gate_id=gate_id, visit_code=VISIT, token_sha256=list(token_hash(token)))
        grant.header.stamp = to_stamp(time.time_ns())
        access.publish(grant)
        link = f'http://127.0.0.1:{port}/cart/{token}'
        if not _wait(lambda: node.poll() is None and _opens(link) and carts.get_subscription_count() > 0, 30.0):
            print('error: live_cart_node did not come up (or did not match) in 30 s', file=sys.stderr)
            return 1
        browser = headless_chromium.HeadlessChromium()
        browser.driver.get(link)
        if not _wait(lambda: browser.driver.execute_script(
                "return document.getElementById('status').textContent.startsWith('Live')"), 10.0):
            print('error: the live cart page did not connect its stream in 10 s', file=sys.stderr)
            return 1
        browser.driver.execute_script(OBSERVE_DRAWS)
        products = list(store.products.values())[:3]
        published = {}
        period_ns = int(1e9 / args.rate_hz)
        next_ns = time.monotonic_ns()
        for revision in range(1, args.updates + 1):
            msg = _cart(revision, products)
            time.sleep(max(0.0, (next_ns - time.monotonic_ns()) / 1e9))
            published[revision] = time.time_ns()
            carts.publish(msg)
            next_ns += period_ns
        _wait(lambda: str(args.updates) in browser.driver.execute_script('return window.jwoDrawn'), 10.0)
        drawn = browser.driver.execute_script('return window.jwoDrawn')
    finally:
        if browser is not None:
            browser.quit()
        publisher.destroy_node()
        rclpy.try_shutdown()
        node.send_signal(2)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
    latencies = [drawn_ms - published[int(revision)] / 1e6 for revision, drawn_ms in drawn.items()
                 if int(revision) in published]
    figures = percentiles(latencies, points=(50, 90, 99))
    figures.update(updates=args.updates, drawn=len(latencies), rate_hz=args.rate_hz)
    if not latencies:
        print('error: the page drew none of the updates', file=sys.stderr)
        return 1
    print(f'CartUpdate published -> drawn in the browser ({len(latencies)} of {args.updates} updates '
          f'drawn, at {args.rate_hz:g} Hz): median {figures["p50"]:.1f} ms, p90 {figures["p90"]:.1f} ms, '
          f'p99 {figures["p99"]:.1f} ms, max {figures["max"]:.1f} ms')
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + '\n')
    return 0


def _cart(revision: int, products: list) -> CartUpdate:
    """The visit's whole cart at a revision: one more unit of a product, or one put back."""
    lines = []
    for index, product in enumerate(products):
        quantity = (revision + index) % 3
        if quantity:
            lines.append(CartLine(sku=product.sku, name=product.name, quantity=quantity,
                                  unit_price_cents=product.price_cents,
                                  line_total_cents=quantity * product.price_cents,
                                  confidence=1.0 if index else 0.5))
    msg = CartUpdate(visit_code=VISIT, revision=revision, cause_event_id=f'bench/{revision}', lines=lines,
                     total_cents=sum(line.line_total_cents for line in lines))
    msg.header.stamp = to_stamp(time.time_ns())
    return msg


def _opens(link: str) -> bool:
    try:
        with urllib.request.urlopen(link, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
