"""The staff view: the store's associates answer the ID checks of age-restricted items
and watch the shelves; shoppers ask where a product is.

A Flask app, served like the live cart (jwo_nodes.web.live_cart.LiveCartServer) on a
thread of staff_view_node; the node changes the board (StaffBoard) as its topics bring
news and publishes the decisions the page posts.

    GET  /staff                  the sign-in form, or once signed in the open requests
    POST /staff/login            associate id + staff PIN -> a session cookie
    POST /staff/logout
    GET  /staff/events           server-sent events: ``checks`` (the open requests, JSON)
                                 at once and after every change; a comment every
                                 ``keepalive_s`` on a quiet stream
    POST /staff/id-checks        visit_code, sku, decision (verified | refused): publishes
                                 it; needs the session's CSRF token (X-CSRF-Token header)
    GET  /staff/ops              store operations (signed in): stock per bin, low-stock and
                                 restock alerts, items on the wrong bin, silent shelves
                                 (the page reloads itself every OPS_REFRESH_S)
    GET  /where?q=wine           for shoppers, no sign-in: the bins of the products whose
                                 name or SKU holds the words

The PIN is read once from a file and kept only hashed (StaffPin); wrong PINs are
throttled (LoginThrottle). The session is Flask's signed cookie under a key drawn at
start (a restart signs everybody out), HttpOnly and SameSite=Strict; a state-changing
POST also needs the session's own CSRF token. No request line is logged.
"""
import hmac
import json
import secrets
import threading
import time
from contextlib import contextmanager
from typing import Callable

from flask import Flask, Response, redirect, render_template, request, session

from jwo_nodes.core.config import StoreConfig
from jwo_nodes.core.staff_view import IdCheckBoard, LoginThrottle, StaffPin
from jwo_nodes.core.store_ops import StockLevel, StoreOps, locate
from jwo_nodes.web.live_cart import RETRY_MS, SECURITY_HEADERS, _App

WEB_COUNTERS = ('logins', 'logins_refused', 'decisions', 'refused_requests')
DECISIONS = ('verified', 'refused')
# A sign-in lasts a shift at most.
SESSION_S = 12 * 3600
OPS_REFRESH_S = 5


class StaffBoard:
    """The IdCheckBoard shared by the node's executor thread, which changes it, and the
    web server's request threads, which read it: a stream sleeps until the next change."""

    def __init__(self, board: IdCheckBoard, ops: StoreOps):
        self._board = board
        self._ops = ops
        self._changed = threading.Condition()
        self._stopping = False
        self._counts = {name: 0 for name in WEB_COUNTERS}

    @contextmanager
    def changing(self):
        """``with staff.changing() as board: board.on_request(...)``; the streams look again after."""
        with self._changed:
            yield self._board
            self._changed.notify_all()

    @contextmanager
    def changing_ops(self):
        """``with staff.changing_ops() as ops: ops.on_weight_change(...)`` (nothing waits on it)."""
        with self._changed:
            yield self._ops

    def ops_view(self, now_wall_ns: int) -> tuple:
        """(stock per bin, stale shelf ids) now."""
        with self._changed:
            return self._ops.stock(), self._ops.stale_shelves(now_wall_ns)

    def snapshot(self) -> tuple:
        """(version, the open requests as the page shows them)."""
        with self._changed:
            return self._board.version, [
                {'visit_code': c.visit_code, 'sku': c.sku, 'name': c.name, 'shelf_id': c.shelf_id,
                 'stamp_ns': c.stamp_ns} for c in self._board.open_checks()]

    def is_open(self, visit_code: str, sku: str) -> bool:
        with self._changed:
            return self._board.is_open(visit_code, sku)

    def wait_change(self, seen_version: int, timeout_s: float) -> bool:
        """Waits until the version is no longer ``seen_version`` (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not self._stopping and self._board.version == seen_version:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def count(self, name: str) -> None:
        with self._changed:
            self._counts[name] += 1

    def counts(self) -> dict:
        with self._changed:
            return dict(self._counts)

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()


def _event(name: str, document) -> str:
    return f'event: {name}\ndata: {json.dumps(document, separators=(",", ":"))}\n\n'


def _stream(staff: StaffBoard, keepalive_s: float):
    yield f'retry: {RETRY_MS}\n\n'
    while not staff.stopping:
        version, checks = staff.snapshot()
        yield _event('checks', checks)
        while not staff.wait_change(version, keepalive_s):
            yield ': keepalive\n\n'


def create_app(staff: StaffBoard, pin: StaffPin, throttle: LoginThrottle, *, store: StoreConfig,
               keepalive_s: float, decide: Callable[[str, str, bool, str], None]) -> Flask:
    """``decide(visit_code, sku, verified, associate_id)`` publishes a decision."""
    app = _App(__name__)
    app.secret_key = secrets.token_bytes(32)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE='Strict',
                      PERMANENT_SESSION_LIFETIME=SESSION_S)

    store_name = store.name

    def signed_in():
        return session.get('associate_id')

    def refused(status: int, text: str) -> Response:
        staff.count('refused_requests')
        return Response(text, status, mimetype='text/plain')

    @app.get('/staff')
    def page():
        if not signed_in():
            return render_template('staff_login.html', store_name=store_name, error=request.args.get('error'))
        return render_template('staff_view.html', store_name=store_name, associate_id=session['associate_id'],
                               csrf_token=session['csrf_token'])

    @app.post('/staff/login')
    def login():
        now = time.monotonic_ns()
        associate_id = request.form.get('associate_id', '').strip()
        if not throttle.allowed(now):
            staff.count('logins_refused')
            return redirect('/staff?error=wait', 303)
        if not associate_id or not pin.matches(request.form.get('pin', '')):
            throttle.failed(now)
            staff.count('logins_refused')
            return redirect('/staff?error=wrong', 303)
        session.clear()
        session.permanent = True
        session.update(associate_id=associate_id[:64], csrf_token=secrets.token_urlsafe(32))
        staff.count('logins')
        return redirect('/staff', 303)

    @app.post('/staff/logout')
    def logout():
        if signed_in() and _csrf_ok():
            session.clear()
        return redirect('/staff', 303)

    @app.get('/staff/events')
    def events():
        if not signed_in():
            return refused(403, 'Sign in first.\n')
        return Response(_stream(staff, keepalive_s), mimetype='text/event-stream',
                        headers={'X-Accel-Buffering': 'no'})

    @app.post('/staff/id-checks')
    def decision():
        if not signed_in() or not _csrf_ok():
            return refused(403, 'Sign in first, from the staff page.\n')
        visit_code, sku = request.form.get('visit_code', ''), request.form.get('sku', '')
        verdict = request.form.get('decision', '')
        if verdict not in DECISIONS or not staff.is_open(visit_code, sku):
            return refused(409, 'No such open ID check.\n')
        decide(visit_code, sku, verdict == 'verified', session['associate_id'])
        staff.count('decisions')
        return Response(status=204)

    @app.get('/staff/ops')
    def operations():
        if not signed_in():
            return redirect('/staff', 303)
        stock, stale = staff.ops_view(time.time_ns())
        return render_template('staff_ops.html', store_name=store_name, refresh_s=OPS_REFRESH_S, stock=stock,
                               alerts=[b for b in stock if b.level is not StockLevel.OK],
                               strays=[b for b in stock if b.strays], stale=stale)

    @app.get('/where')
    def where():
        query = request.args.get('q', '')[:64]
        return render_template('where.html', store_name=store_name, query=query, places=locate(store, query))

    def _csrf_ok() -> bool:
        sent = request.headers.get('X-CSRF-Token') or request.form.get('csrf_token', '')
        return hmac.compare_digest(sent.encode(), session.get('csrf_token', '').encode())

    @app.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        # The sign-in and sign-out forms post to this page's own origin.
        response.headers['Content-Security-Policy'] = SECURITY_HEADERS['Content-Security-Policy'].replace(
            "form-action 'none'", "form-action 'self'")
        return response

    return app
