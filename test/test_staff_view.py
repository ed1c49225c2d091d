"""The staff view: its board, PIN and store operations without ROS, then staff_view_node
as a real process driven over DDS (fusion's ID-check requests in, the associates'
decisions out; the shelves' weight changes and heartbeats) and used in headless
Chromium: a wrong PIN is refused, an associate signs in, sees the request, confirms it,
the decision goes out and the request leaves the list; the shelves page shows a
low-stock alert, a stray item and the silent shelves; a shopper finds a product."""
import http.client
import re
import subprocess
import time
from pathlib import Path

import pytest
import rclpy
from jwo.msg import IdCheckDecision, IdCheckRequest, Receipt, ShelfStatus, WeightChange
from rclpy.executors import SingleThreadedExecutor

from conftest import BIN, wait_until
from jwo_nodes import headless_chromium
from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.staff_view import IdCheckBoard, IdCheckItem, LoginThrottle, StaffPin
from jwo_nodes.core.store_ops import ProductPlace, StockLevel, StoreOps, Stray, locate
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, EVENT_QOS, to_stamp

REPO = Path(__file__).resolve().parent.parent
STORE = str(REPO / 'config/stores/demo.yaml')
PARAMS = str(REPO / 'config/params/staff_view_node.yaml')
PIN = '4711-open'


def item(visit_code, sku='WINE-750', stamp_ns=1):
    return IdCheckItem(visit_code, sku, 'Red wine 750 ml', 'S5', stamp_ns)


def test_the_board_lists_open_requests_until_a_decision_or_the_receipt():
    board = IdCheckBoard()
    board.on_request(item('v2', stamp_ns=20))
    board.on_request(item('v1', stamp_ns=10))
    board.on_request(item('v1', 'BEER', stamp_ns=15))
    board.on_request(item('v1', stamp_ns=10))                 # re-sent: once
    assert [(c.visit_code, c.sku) for c in board.open_checks()] == [('v1', 'WINE-750'), ('v1', 'BEER'),
                                                                    ('v2', 'WINE-750')]
    version = board.version
    board.on_decision('v1', 'WINE-750')
    board.on_visit_end('v2')
    assert [(c.visit_code, c.sku) for c in board.open_checks()] == [('v1', 'BEER')] and board.version > version
    board.on_request(item('v1'))                              # re-sent after its decision
    board.on_request(item('v2', 'BEER'))                      # after its visit's receipt
    assert [(c.visit_code, c.sku) for c in board.open_checks()] == [('v1', 'BEER')]


def test_the_pin_is_kept_hashed_and_wrong_ones_are_throttled():
    pin = StaffPin(PIN)
    assert pin.matches(PIN) and not pin.matches('4711') and not pin.matches('')
    assert PIN.encode() not in repr(vars(pin)).encode()
    with pytest.raises(ValueError):
        StaffPin('')
    throttle = LoginThrottle(max_failures=2, window_ns=60)
    throttle.failed(0)
    throttle.failed(10)
    assert not throttle.allowed(59) and throttle.allowed(60)


# -- the node ---------------------------------------------------------------------


class Fusion:
    """Stands in for fusion: publishes ID-check requests and receipts, takes decisions."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('staff_view_test_fusion', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.requests = self.node.create_publisher(IdCheckRequest, '/jwo/id_checks/requests', DURABLE_EVENT_QOS)
        self.receipts = self.node.create_publisher(Receipt, '/jwo/receipts', DURABLE_EVENT_QOS)
        self.decisions = []
        self.node.create_subscription(IdCheckDecision, '/jwo/id_checks/decisions', self.decisions.append,
                                      DURABLE_EVENT_QOS)

    def request(self, visit_code: str, sku: str, name: str) -> None:
        msg = IdCheckRequest(store_id='demo', visit_code=visit_code, event_id='S5/3', shelf_id='S5', sku=sku,
                             name=name)
        msg.header.stamp = to_stamp(time.time_ns())
        self.requests.publish(msg)

    def spin_until(self, predicate, timeout: float) -> bool:
        return wait_until(lambda: self.executor.spin_once(timeout_sec=0.02) or predicate(), timeout)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def fusion():
    fusion = Fusion()
    yield fusion
    fusion.close()


@pytest.fixture
def pin_file(tmp_path):
    path = tmp_path / 'staff-pin'
    path.write_text(PIN + '\n')
    path.chmod(0o600)
    return path


def node_args(pin_file, *extra: str) -> list:
    return ['-r', '__ns:=/jwo', '--params-file', PARAMS, '-p', f'store_config:={STORE}',
            '-p', f'pin_file:={pin_file}', *extra]


def started(node) -> str:
    assert wait_until(lambda: 'staff view of store' in node.log() or node.process.poll() is not None, 20.0)
    assert node.process.poll() is None, node.log()
    return re.search(r'on (http://\S+/)staff', node.log()).group(1)


def test_a_start_without_a_pin_fails_with_one_line_naming_the_file(tmp_path):
    missing = tmp_path / 'no-such-pin'
    result = subprocess.run([str(BIN / 'staff_view_node'), '--ros-args', *node_args(missing)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2 and result.stderr.count('\n') == 1
    assert 'pin_file' in result.stderr and str(missing) in result.stderr


def test_the_events_and_decisions_need_a_signed_in_associate(start_node, pin_file):
    base = started(start_node('staff_view_node', *node_args(pin_file, '-p', 'port:=0')))
    host, port = re.match(r'http://([^:]+):(\d+)/', base).groups()
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for method, path in (('GET', '/staff/events'), ('POST', '/staff/id-checks')):
            connection.request(method, path, body='visit_code=v1&sku=WINE-750&decision=verified',
                               headers={'Content-Type': 'application/x-www-form-urlencoded'})
            response = connection.getresponse()
            response.read()
            assert response.status == 403, path
    finally:
        connection.close()


needs_chromium = pytest.mark.skipif(not headless_chromium.available(),
                                    reason='needs the chromium and chromium-driver packages')


@pytest.fixture
def browser():
    chromium = headless_chromium.HeadlessChromium()
    yield chromium.driver
    chromium.quit()


def sign_in(driver, base: str, associate_id: str, pin: str) -> None:
    driver.get(base + 'staff')
    driver.find_element('id', 'associate_id').send_keys(associate_id)
    driver.find_element('id', 'pin').send_keys(pin)
    driver.find_element('id', 'sign-in').click()


def rows(driver) -> list:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#check-rows tr'))"
        ".map(tr => [tr.dataset.visit, tr.dataset.sku, tr.querySelector('.name').textContent]);")


@needs_chromium
def test_an_associate_signs_in_sees_a_request_and_confirms_it(start_node, fusion, pin_file, browser):
    fusion.request('v-ana', 'WINE-750', 'Red wine 750 ml')       # before the node: durable
    node = start_node('staff_view_node', *node_args(pin_file, '-p', 'port:=0', '-p', 'keepalive_s:=0.5'))
    base = started(node)

    sign_in(browser, base, 'A7', 'not-the-pin')
    # The form's answer is a new page: wait for it (a loaded machine takes its time).
    assert wait_until(lambda: browser.find_elements('id', 'error'), 10.0), browser.page_source
    assert browser.find_element('id', 'error').text == 'Wrong associate id or PIN.'
    assert not browser.find_elements('id', 'check-rows')

    sign_in(browser, base, 'A7', PIN)
    assert wait_until(lambda: rows(browser) == [['v-ana', 'WINE-750', 'Red wine 750 ml']], 10.0), node.log()
    fusion.request('v-bo', 'BEER-330', 'Lager 330 ml')
    assert wait_until(lambda: len(rows(browser)) == 2, 10.0)

    browser.find_element('css selector', 'tr[data-visit="v-ana"] button.verify').click()
    assert fusion.spin_until(lambda: fusion.decisions, 10.0), node.log()
    [decision] = fusion.decisions
    assert (decision.visit_code, decision.sku, decision.decision, decision.associate_id) == \
        ('v-ana', 'WINE-750', IdCheckDecision.VERIFIED, 'A7')
    assert decision.decision_id and decision.header.stamp.sec > 0
    # The node hears its own decision: the request leaves every associate's list.
    assert wait_until(lambda: rows(browser) == [['v-bo', 'BEER-330', 'Lager 330 ml']], 10.0)

    receipt = Receipt(receipt_id='demo-v-bo', store_id='demo', visit_code='v-bo')
    fusion.receipts.publish(receipt)                              # bo left: moot
    assert wait_until(lambda: rows(browser) == [], 10.0)
    assert browser.find_element('id', 'empty').is_displayed()
    assert PIN not in node.log()
    assert node.stop() == 0


# -- store operations ---------------------------------------------------------------

NS = 1_000_000_000


@pytest.fixture(scope='module')
def demo():
    return load_store_config(STORE)


def units(ops) -> dict:
    return {b.bin_id: (b.units, b.level, b.strays) for b in ops.stock()}


def test_stock_follows_the_weights_with_low_stock_and_restock_alerts(demo):
    ops = StoreOps(demo, 3 * NS, started_wall_ns=0)
    ops.on_weight_change('S1/1', ['S1-B1'], [-700.4], 1.5)        # two colas
    ops.on_weight_change('S1/1', ['S1-B1'], [-700.4], 1.5)        # re-sent: once
    ops.on_weight_change('S1/2', ['S1-B1'], [+350.1], 1.5)        # one back
    assert units(ops)['S1-B1'] == (23, StockLevel.OK, ())
    for n in range(4):
        ops.on_weight_change(f'S5/{n}', ['S5-B1'], [-1251.0], 1.5)
    assert units(ops)['S5-B1'][:2] == (2, StockLevel.LOW)         # the wine's low_stock_units
    ops.on_weight_change('S5/9', ['S5-B1'], [-2500.0], 1.5)
    assert units(ops)['S5-B1'][:2] == (0, StockLevel.EMPTY)
    assert units(ops)['S1-B2'][:2] == (18, StockLevel.OK)        # no threshold: alert only when empty


def test_an_item_put_back_on_the_wrong_bin_is_a_stray_until_it_is_taken(demo):
    ops = StoreOps(demo, 3 * NS, started_wall_ns=0)
    ops.on_weight_change('S1/1', ['S1-B2'], [+165.2], 1.5)        # chips on the water bin
    assert units(ops)['S1-B2'] == (18, StockLevel.OK, (Stray('CHIPS-150', 'Salted chips 150 g', 1),))
    ops.on_weight_change('S1/2', ['S1-B2'], [-165.0], 1.5)        # the next shopper takes them
    assert units(ops)['S1-B2'] == (18, StockLevel.OK, ())
    ops.on_weight_change('S1/3', ['S1-B2'], [-77.0], 1.5)         # nothing weighs that
    assert ops.unexplained == 1


def test_a_shelf_silent_for_stale_after_is_stale(demo):
    ops = StoreOps(demo, 3 * NS, started_wall_ns=0)
    for shelf_id in demo.shelves:
        ops.on_shelf_status(shelf_id, 10 * NS)
    ops.on_shelf_status('S1', 14 * NS)
    assert ops.stale_shelves(13 * NS) == [] and ops.stale_shelves(14 * NS) == ['S2', 'S3', 'S4', 'S5']


def test_the_locator_finds_a_products_bins_by_name_or_sku(demo):
    assert locate(demo, ' Wine ') == [ProductPlace('WINE-750', 'Red wine 750 ml', (('S5-B1', 'S5', 9.3, 4.0),))]
    assert [p.sku for p in locate(demo, 'yog')] == ['YOG-STRAW', 'YOG-PLAIN']
    assert locate(demo, '') == [] and locate(demo, 'caviar') == []


@needs_chromium
def test_the_ops_page_shows_stock_alerts_strays_and_silent_shelves_and_shoppers_find_products(
        start_node, fusion, pin_file, browser):
    node = start_node('staff_view_node', *node_args(pin_file, '-p', 'port:=0'))
    base = started(node)
    changes = {s: fusion.node.create_publisher(WeightChange, f'/jwo/shelves/{s}/weight/changes', DURABLE_EVENT_QOS)
               for s in ('S1', 'S5')}
    status = fusion.node.create_publisher(ShelfStatus, '/jwo/shelves/S1/weight/status', EVENT_QOS)
    assert wait_until(lambda: all(p.get_subscription_count() for p in changes.values()), 10.0), node.log()
    for event_id, shelf, bin_id, delta in (('S5/1', 'S5', 'S5-B1', -5002.0), ('S1/1', 'S1', 'S1-B2', 165.1)):
        changes[shelf].publish(WeightChange(event_id=event_id, shelf_id=shelf, bin_ids=[bin_id],
                                            delta_grams=[delta], noise_grams=1.5))

    browser.get(base + 'staff/ops')                               # not signed in: the sign-in form
    assert browser.find_elements('id', 'pin')
    sign_in(browser, base, 'A7', PIN)
    assert wait_until(lambda: browser.find_elements('id', 'check-rows'), 10.0)
    browser.get(base + 'staff/ops')

    def alerts():
        status.publish(ShelfStatus(shelf_id='S1'))                # only S1 reports
        browser.refresh()
        return [(li.get_attribute('class'), li.get_attribute('data-shelf') or li.get_attribute('data-bin'))
                for li in browser.find_elements('css selector', '#alerts li')]
    expected = [('stale', s) for s in ('S2', 'S3', 'S4', 'S5')] + [('low', 'S5-B1'), ('stray', 'S1-B2')]
    assert wait_until(lambda: alerts() == expected, 15.0), (alerts(), browser.page_source, node.log())
    assert browser.find_element('css selector', 'tr[data-bin="S5-B1"] .units').text == '2'

    browser.get(base + 'where')                                   # a shopper: no sign-in needed
    browser.delete_all_cookies()
    browser.get(base + 'where')
    browser.find_element('id', 'q').send_keys('wine')
    browser.find_element('id', 'find').click()                   # the answer is a new page: wait for it
    assert wait_until(lambda: browser.find_elements('css selector', '#places li[data-sku="WINE-750"]'), 10.0)
    assert browser.find_element('css selector', '#places li[data-sku="WINE-750"]').text == \
        'Red wine 750 ml: shelf S5, bin S5-B1'
    assert node.stop() == 0
