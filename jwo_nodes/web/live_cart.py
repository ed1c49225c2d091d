"""The live cart web service: a visit's running receipt on the shopper's phone.

A Flask app, served by werkzeug's threaded WSGI server on a thread of live_cart_node
(LiveCartServer); the node changes the carts (CartBoard) as its topics bring news.

    GET /cart/<token>          the live cart page (HTML + JS, made for phones)
    GET /cart/<token>/events   server-sent events: ``cart`` (the whole cart, JSON) at once
                               and after every change, ``ended`` when the visit ends; a
                               comment every ``keepalive_s`` on a quiet stream, so a phone
                               that went away is noticed

An unknown or dead token, and any other path, get the same 404 with a plain message:
a response tells nothing about other visits. Tokens are in the paths, so no request
line is logged, pages are never cached and send no Referer.
"""
import json
import socket
import threading
import time
from contextlib import contextmanager
from typing import Optional

from flask import Flask, Response, render_template, request
from werkzeug.serving import WSGIRequestHandler, make_server, select_address_family

from jwo_nodes.core.live_cart import LiveCart, LiveCarts, LiveView
from jwo_common.money import format_cents
from jwo_nodes.core.visit_access import token_hash

NOT_FOUND = 'No live cart here: the link is unknown, or its visit has ended.\n'
TOO_MANY_STREAMS = 'Too many live carts open right now; try again in a moment.\n'
# How soon a browser reconnects a dropped stream (ms): a restarted node is back in about 1 s.
RETRY_MS = 1000
WEB_COUNTERS = ('pages', 'refused_requests', 'streams_opened', 'streams_refused', 'streams_open')
SECURITY_HEADERS = {
    'Cache-Control': 'no-store',
    'Referrer-Policy': 'no-referrer',
    'X-Content-Type-Options': 'nosniff',
    'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
}


class CartBoard:
    """The LiveCarts shared by the node's executor thread, which changes them, and the
    web server's request threads, which read them: a stream sleeps until its visit's
    next change."""

    def __init__(self, carts: LiveCarts, max_streams: int):
        self._carts = carts
        self._max_streams = max_streams
        self._changed = threading.Condition()
        self._stopping = False
        self._counts = {name: 0 for name in WEB_COUNTERS}

    @contextmanager
    def changing(self):
        """``with board.changing() as carts: carts.on_cart(...)``; the streams look again
        after."""
        with self._changed:
            yield self._carts
            self._changed.notify_all()

    def counts(self) -> dict:
        with self._changed:
            return {**self._carts.counts, **self._counts}

    def count(self, name: str) -> None:
        with self._changed:
            self._counts[name] += 1

    @property
    def stopping(self) -> bool:
        return self._stopping

    def live_view(self, token: str) -> Optional[LiveView]:
        """What a live token opens; None for an unknown or dead one."""
        digest = token_hash(token)
        with self._changed:
            view = self._carts.view(digest)
        return view if view is not None and view.open else None

    def next_view(self, token: str, seen_version: int, timeout_s: float) -> Optional[LiveView]:
        """The token's view once its version is no longer ``seen_version`` (the last one
        after the visit ended), or after ``timeout_s`` unchanged; None once the token is
        forgotten or the service stops."""
        digest = token_hash(token)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not self._stopping:
                view = self._carts.view(digest)
                left = deadline - time.monotonic()
                if view is None or view.version != seen_version or left <= 0:
                    return view
                self._changed.wait(left)
            return None

    def open_stream(self) -> bool:
        """Takes a stream slot (each open stream holds a server thread); False when all
        ``max_streams`` are taken."""
        with self._changed:
            if self._counts['streams_open'] >= self._max_streams:
                self._counts['streams_refused'] += 1
                return False
            self._counts['streams_open'] += 1
            self._counts['streams_opened'] += 1
            return True

    def close_stream(self) -> None:
        with self._changed:
            self._counts['streams_open'] -= 1

    def stop(self) -> None:
        """Ends every stream without ``ended``: the browsers reconnect (to a restarted
        node) on their own."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()


def cart_document(cart: Optional[LiveCart], currency: str) -> dict:
    """What a ``cart`` event carries: the cart as the page shows it, amounts formatted
    here (money is integer cents up to this point); ``{"cart": null}`` before the first
    update (the page keeps what it shows: after a restart of the node, the cart it had)."""
    if cart is None:
        return {'cart': None}
    return {'cart': {
        'revision': cart.revision,
        'lines': [{'sku': line.sku, 'name': line.name, 'quantity': line.quantity, 'grams': line.grams,
                   'line_total': format_cents(line.line_total_cents, currency),
                   'checking': line.checking} for line in cart.lines],
        'savings': [{'name': saving.name, 'amount': format_cents(saving.cents, currency)}
                    for saving in cart.savings],
        'savings_total': format_cents(cart.savings_cents, currency),
        'total': format_cents(cart.total_cents, currency),
    }}


# What a stream has shown before its first cart event (a cart may be None).
_NOTHING = object()


def _event(name: str, document: dict) -> str:
    return f'event: {name}\ndata: {json.dumps(document, separators=(",", ":"))}\n\n'


def _stream(board: CartBoard, token: str, view: LiveView, currency: str, keepalive_s: float):
    """The events of one visit's page, from ``view`` on: its cart whenever it changed
    (the newest only, when several changes came at once), until its token dies."""
    try:
        yield f'retry: {RETRY_MS}\n\n'
        shown = _NOTHING
        while view is not None:
            if view.cart is not shown:
                yield _event('cart', cart_document(view.cart, currency))
                shown = view.cart
            if not view.open:
                break
            seen = view.version
            view = board.next_view(token, seen, keepalive_s)
            while view is not None and view.version == seen:
                yield ': keepalive\n\n'
                view = board.next_view(token, seen, keepalive_s)
        if not board.stopping:
            yield _event('ended', {})
    finally:
        board.close_stream()


class _App(Flask):
    def log_exception(self, exc_info) -> None:
        # Flask's own names the request path, which holds the token.
        self.logger.error('exception in %s', request.endpoint, exc_info=exc_info)


def create_app(board: CartBoard, *, store_name: str, currency: str, keepalive_s: float) -> Flask:
    app = _App(__name__)   # templates/ and static/ beside this module

    def refused() -> Response:
        board.count('refused_requests')
        return Response(NOT_FOUND, 404, mimetype='text/plain')

    @app.get('/cart/<token>')
    def page(token: str):
        if board.live_view(token) is None:
            return refused()
        board.count('pages')
        return render_template('live_cart.html', store_name=store_name)

    @app.get('/cart/<token>/events')
    def events(token: str):
        view = board.live_view(token)
        if view is None:
            return refused()
        if request.method == 'HEAD':
            # No body is sent, so the stream would never run to give its slot back.
            return Response(mimetype='text/event-stream')
        if not board.open_stream():
            return Response(TOO_MANY_STREAMS, 503, mimetype='text/plain', headers={'Retry-After': '5'})
        return Response(_stream(board, token, view, currency, keepalive_s), mimetype='text/event-stream',
                        headers={'X-Accel-Buffering': 'no'})

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_found(_error):
        return refused()

    @app.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


class _QuietRequestHandler(WSGIRequestHandler):
    """Logs no request lines and no protocol errors: both carry the path, and so the
    token (the app logs its own exceptions without it)."""

    def log_request(self, code='-', size='-') -> None:
        pass

    def log_error(self, format: str, *args) -> None:
        pass


class LiveCartServer:
    """The app on host:port (port 0: any free one) in a thread of its own, a thread per
    request (werkzeug's threaded WSGI server). OSError when it cannot listen there."""

    def __init__(self, app: Flask, host: str, port: int):
        # Bound here: werkzeug's own bind prints and exits the process on an error.
        with socket.create_server((host, port), family=select_address_family(host, port)) as listening:
            self._server = make_server(host, port, app, threaded=True, request_handler=_QuietRequestHandler,
                                       fd=listening.fileno())
        self.port = self._server.port
        self.url = f'http://{host}:{self.port}/'
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name='jwo-live-cart-web',
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5.0)
        self._server.server_close()
