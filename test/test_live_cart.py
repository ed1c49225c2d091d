"""The live cart's pure parts (no ROS): tokens and their handoff file, which token opens
which cart and when it dies (core.live_cart), and the web service's board and events
(web.live_cart) through Flask's test client."""
import json
import threading
import time

import pytest

from conftest import wait_until
from jwo_nodes.core import visit_access
from jwo_nodes.core.fusion.receipts import SURE
from jwo_nodes.core.live_cart import LiveCart, LiveCarts, LiveLine, Saving
from jwo_nodes.core.visit_access import VisitAccess, token_hash
from jwo_nodes.web.live_cart import NOT_FOUND, CartBoard, cart_document, create_app

S = 1_000_000_000
T0 = 1_700_000_000 * S
COLA = LiveLine('COLA-330', 'Cola 330 ml can', 2, 298, 1.0)
CHIPS = LiveLine('CHIPS-150', 'Chips 150 g', 1, 229, 0.6)


def access(code: str, token: str, stamp_ns: int = T0) -> VisitAccess:
    return VisitAccess('G1', code, stamp_ns, token_hash(token))


def cart(code: str, revision: int, *lines, stamp_ns: int = T0 + S, savings=()) -> LiveCart:
    return LiveCart(code, revision, stamp_ns, tuple(lines), sum(line.line_total_cents for line in lines),
                    tuple(savings))


# -- tokens and the handoff file --------------------------------------------------

def test_tokens_are_long_random_and_url_safe_and_only_their_hash_is_published():
    tokens = {visit_access.new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) >= 43 and set(t) <= set('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')
               for t in tokens)
    issued = visit_access.grant('G1', 'v-abc', T0)
    assert issued.access.token_sha256 == token_hash(issued.token) and len(issued.access.token_sha256) == 32
    assert issued.token not in repr(issued)


def test_handoff_file_is_private_appended_and_read_back_in_order(tmp_path):
    first, second = visit_access.grant('G1', 'v-1', T0), visit_access.grant('G1', 'v-2', T0 + S)
    visit_access.append_handoff(tmp_path, first)
    visit_access.append_handoff(tmp_path, second)
    path = visit_access.handoff_path(tmp_path, 'G1')
    assert path.name == 'access-G1.jsonl' and path.stat().st_mode & 0o777 == 0o600
    assert visit_access.read_handoff(path) == [first, second]
    assert [g.token for g in visit_access.read_handoff(path)] == [first.token, second.token]
    with open(path, 'a') as handle:           # a line still being written
        handle.write('{"gate_id": "G1", "visit_')
    assert visit_access.read_handoff(path) == [first, second]
    assert visit_access.read_handoff(tmp_path / 'access-G2.jsonl') == []


# -- which token opens which cart ----------------------------------------------------

def test_a_token_opens_its_own_visits_cart_and_nothing_else():
    carts = LiveCarts()
    assert carts.on_access(access('v-1', 'token-one'))
    assert carts.on_access(access('v-2', 'token-two'))
    assert carts.view(token_hash('token-one')).cart is None       # in, nothing taken yet
    assert carts.on_cart(cart('v-1', 1, COLA))
    assert carts.on_cart(cart('v-2', 1, CHIPS))
    assert carts.view(token_hash('token-one')).cart.lines == (COLA,)
    assert carts.view(token_hash('token-two')).cart.lines == (CHIPS,)
    assert carts.view(token_hash('token-three')) is None
    assert carts.view(b'') is None
    assert carts.counts['live_tokens'] == 2


def test_a_take_then_a_put_back_is_the_newest_revision_and_an_older_one_is_dropped():
    carts = LiveCarts()
    carts.on_access(access('v-1', 'tok'))
    carts.on_cart(cart('v-1', 1, COLA))
    before = carts.view(token_hash('tok')).version
    assert carts.on_cart(cart('v-1', 2, COLA, CHIPS))
    assert carts.on_cart(cart('v-1', 3, CHIPS))                   # the cola went back
    assert not carts.on_cart(cart('v-1', 2, COLA, CHIPS))         # late: dropped
    view = carts.view(token_hash('tok'))
    assert view.cart.lines == (CHIPS,) and view.cart.total_cents == 229
    assert view.version == before + 2
    assert carts.counts['stale_cart_updates'] == 1


def test_the_token_dies_at_the_exit_or_the_receipt_and_late_inputs_do_not_revive_it():
    carts = LiveCarts()
    carts.on_access(access('v-1', 'one'))
    carts.on_access(access('v-2', 'two'))
    carts.on_cart(cart('v-1', 1, COLA))
    assert not carts.on_end('', T0 + 2 * S)                       # a walk-out: whose is not known
    assert carts.view(token_hash('one')) is not None
    open_view = carts.view(token_hash('one'))
    assert carts.on_end('v-1', T0 + 3 * S)                        # its EXIT event
    dead = carts.view(token_hash('one'))
    # Dead; its last cart stays for the pages that showed it, as a change they see.
    assert not dead.open and dead.cart.lines == (COLA,) and dead.version > open_view.version
    assert not carts.on_end('v-1', T0 + 4 * S)                    # then its receipt
    assert not carts.on_cart(cart('v-1', 2, COLA, CHIPS))
    assert not carts.on_access(access('v-1', 'one'))              # redelivered after a restart
    assert carts.view(token_hash('one')) == dead
    assert carts.counts['late_inputs'] == 2 and carts.counts['live_tokens'] == 1
    assert carts.view(token_hash('two')).open                     # the other visit goes on
    # A receipt before the access arrived (other topics, any order): never opens.
    assert carts.on_end('v-3', T0 + 5 * S)
    assert not carts.on_access(access('v-3', 'three'))
    assert carts.view(token_hash('three')) is None


def test_a_cart_before_its_access_is_kept_for_it():
    carts = LiveCarts()
    carts.on_cart(cart('v-1', 1, COLA))
    assert carts.on_access(access('v-1', 'tok'))
    assert carts.view(token_hash('tok')).cart.lines == (COLA,)


def test_a_redelivered_access_changes_nothing_and_a_new_token_replaces_the_old():
    carts = LiveCarts()
    assert carts.on_access(access('v-1', 'old'))
    assert not carts.on_access(access('v-1', 'old'))
    assert carts.on_access(access('v-1', 'new'))                  # a simulated gate replayed its lines
    assert carts.view(token_hash('old')) is None and carts.view(token_hash('new')) is not None
    assert carts.counts['accesses'] == 2 and carts.counts['live_tokens'] == 1


def test_tokens_expire_by_stamps_not_by_the_wall_clock():
    carts = LiveCarts(max_visit_ns=3600 * S)
    carts.on_access(access('v-1', 'old', T0))
    carts.on_access(access('v-2', 'young', T0 + 1800 * S))
    assert carts.view(token_hash('old')) is not None
    carts.on_cart(cart('v-2', 1, COLA, stamp_ns=T0 + 3601 * S))   # the newest stamp moves on
    assert carts.view(token_hash('old')) is None
    assert carts.view(token_hash('young')).cart.lines == (COLA,)
    assert carts.counts['expired_visits'] == 1
    assert not carts.on_access(access('v-9', 'ancient', T0))      # stamped before the horizon
    assert carts.view(token_hash('ancient')) is None
    with pytest.raises(ValueError):
        LiveCarts(max_visit_ns=0)


def test_lines_under_fusions_sure_threshold_are_checking():
    assert not LiveLine('A', 'a', 1, 1, SURE).checking
    assert LiveLine('A', 'a', 1, 1, SURE - 0.001).checking
    # CartLine.confidence is a float32: fusion's 0.99 arrives as 0.9900000095.
    assert not LiveLine('A', 'a', 1, 1, 0.9900000095367432).checking


# -- what the page is sent ---------------------------------------------------------

def test_cart_document_formats_money_and_marks_checking_and_savings():
    assert cart_document(None, 'USD') == {'cart': None}
    document = cart_document(cart('v-1', 4, COLA, CHIPS, savings=[Saving('2 for 2.50', 48)]), 'USD')['cart']
    assert document['revision'] == 4
    assert [(line['sku'], line['quantity'], line['line_total'], line['checking']) for line in document['lines']] \
        == [('COLA-330', 2, '2.98 USD', False), ('CHIPS-150', 1, '2.29 USD', True)]
    assert document['total'] == '5.27 USD'
    assert document['savings'] == [{'name': '2 for 2.50', 'amount': '0.48 USD'}]
    assert document['savings_total'] == '0.48 USD'
    assert 'v-1' not in json.dumps(document)                      # no visit code on the page


@pytest.fixture
def board():
    board = CartBoard(LiveCarts(), max_streams=2)
    with board.changing() as carts:
        carts.on_access(access('v-1', 'one'))
        carts.on_access(access('v-2', 'two'))
        carts.on_cart(cart('v-2', 1, CHIPS))
    yield board
    board.stop()


def events_of(body: str) -> list:
    """(event, data) of each server-sent event."""
    found = []
    for block in body.split('\n\n'):
        fields = dict(line.split(': ', 1) for line in block.splitlines() if ': ' in line and not line.startswith(':'))
        if 'event' in fields:
            found.append((fields['event'], json.loads(fields['data'])))
    return found


def test_pages_only_for_live_tokens_with_one_plain_404_for_anything_else(board):
    client = create_app(board, store_name='jwo Demo Market', currency='USD', keepalive_s=5).test_client()
    page = client.get('/cart/one')
    assert page.status_code == 200 and b'jwo Demo Market' in page.data
    assert page.headers['Cache-Control'] == 'no-store' and page.headers['Referrer-Policy'] == 'no-referrer'
    assert "script-src 'self'" in page.headers['Content-Security-Policy']
    refused = [client.get(path) for path in ('/cart/nope', '/cart/nope/events', '/', '/cart/', '/cart/one/x')]
    assert {(r.status_code, r.mimetype, r.get_data(as_text=True)) for r in refused} == {(404, 'text/plain', NOT_FOUND)}
    assert client.post('/cart/one').status_code == 404
    assert board.counts()['refused_requests'] == 6 and board.counts()['pages'] == 1


def test_a_stream_sends_the_cart_then_each_change_then_ended(board):
    app = create_app(board, store_name='s', currency='USD', keepalive_s=0.2)
    received = []

    def read():
        with app.test_client() as client:
            received.append(client.get('/cart/one/events').get_data(as_text=True))
    reader = threading.Thread(target=read)
    reader.start()
    assert wait_until(lambda: board.counts()['streams_open'] == 1, 5.0)
    with board.changing() as carts:
        carts.on_cart(cart('v-1', 1, COLA))
    time.sleep(0.3)                                               # a keepalive goes by
    with board.changing() as carts:
        carts.on_cart(cart('v-1', 2, COLA, CHIPS))
    with board.changing() as carts:
        carts.on_end('v-1', T0 + 9 * S)
    reader.join(5)
    body = received[0]
    assert body.startswith('retry: 1000\n\n') and ': keepalive\n\n' in body
    events = events_of(body)
    assert [name for name, _ in events][0] == 'cart' and events[0][1] == {'cart': None}
    assert events[-1] == ('ended', {})
    totals = [data['cart']['total'] for name, data in events if name == 'cart' and data['cart']]
    assert totals[-1] == '5.27 USD' and set(totals) <= {'2.98 USD', '5.27 USD'}
    assert 'CHIPS' not in json.dumps(events[:1])                  # never the other visit's cart
    assert board.counts()['streams_open'] == 0


def test_streams_beyond_the_limit_are_refused_and_a_stopped_board_ends_them_without_ended(board):
    app = create_app(board, store_name='s', currency='USD', keepalive_s=30)
    bodies = []

    def read(token):
        with app.test_client() as client:
            bodies.append(client.get(f'/cart/{token}/events').get_data(as_text=True))
    readers = [threading.Thread(target=read, args=(token,)) for token in ('one', 'two')]
    for reader in readers:
        reader.start()
    assert wait_until(lambda: board.counts()['streams_open'] == 2, 5.0)
    assert app.test_client().head('/cart/one/events').status_code == 200   # holds no slot
    third = app.test_client().get('/cart/one/events')
    assert third.status_code == 503 and board.counts()['streams_refused'] == 1
    board.stop()
    for reader in readers:
        reader.join(5)
    assert len(bodies) == 2 and all('ended' not in body for body in bodies)
    assert board.counts()['streams_open'] == 0
