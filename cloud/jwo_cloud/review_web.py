"""The reviewers' web console (``jwo-cloud serve``): a Flask app
with Jinja2 templates (autoescaped) in ``templates/`` and its script and style in
``static/``.

    GET  /                       the queue: filters (store, reason, age), pages, claims
    POST /next                   claim the oldest visit the filters admit, open it
    POST /claim/<store>/<receipt>
    GET  /visit/<store>/<receipt>            the visit: evidence per event, the receipt
    POST /visit/<store>/<receipt>/preview    the receipt the form's choices make (live)
    POST /visit/<store>/<receipt>/settle     settle it, then open the next visit
    POST /visit/<store>/<receipt>/release | skip
    GET  /visit-code/<store>/<visit_code>    a candidate visit: its review or its receipt
    GET  /receipt/<store>/<receipt>          a receipt (read only)
    GET  /clip/<store>/<clip_id>             a clip, with HTTP ranges (the player seeks)
    GET  /figures                            time to settle, agreement with fusion
    GET  /receipt/<token>        the shopper's receipt (no sign-in: the token opens it)
    POST /receipt/<token>        the shopper disputes a line of it (payer.py)

Safe defaults: every POST carries a CSRF token (Flask-WTF); the session is a signed
cookie (HttpOnly, SameSite=Strict, Secure unless --insecure-cookies; ``__Host-`` name)
that names the reviewer's session epoch, checked against the reviewers file on every
request, so removing a reviewer or resetting a password ends their sessions at once;
failed sign-ins are throttled per name and per address; passwords are argon2id
(review.Reviewers); responses forbid framing, sniffing, caching and any script or
style not served from here (Content-Security-Policy).
"""
import logging
import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from flask import (Flask, abort, flash, g, redirect, render_template, request, session,
                   url_for)
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.serving import WSGIRequestHandler, make_server

from jwo_cloud import evidence, layout, payer, review, review_queue, wire
from jwo_cloud.bucket import BucketError
from jwo_cloud.review import EventChoice
from jwo_cloud.review_queue import QueueFilter, VisitKey

log = logging.getLogger('jwo_cloud.review_web')

SESSION_HOURS = 12
MAX_FORM_BYTES = 64 * 1024
AGES_S = (0, 60, 600, 3600, 86400)
SECURITY_HEADERS = {
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'same-origin',
    'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; media-src 'self'; connect-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
}
# Endpoints open without a session.
PUBLIC = ('login', 'healthz', 'static', 'payer_receipt')
# The shopper's page: its path holds the token, so its request lines are not logged.
_TOKEN_PATH = re.compile(r'^/receipt/[^/?]+(\?|$)')


@dataclass(frozen=True)
class ReviewSettings:
    claim_s: float = review_queue.CLAIM_S
    page_size: int = review_queue.PAGE_SIZE
    # The clip writer's margin before an event's window (clip_node margin_s).
    clip_margin_s: float = 3.0
    # Secure cookies are sent over HTTPS only (browsers accept them from http://localhost).
    secure_cookies: bool = True
    # Failed sign-ins per name and per address within the window before refusing.
    login_failures: int = 5
    login_window_s: float = 300.0


class LoginThrottle:
    """Counts failed sign-ins per name and per client address over a sliding window;
    once either has ``limit`` failures in it, sign-ins for it are refused (even with the
    right password) until the oldest failure leaves the window."""

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self._failures = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def wait_s(self, keys: tuple, now: float) -> float:
        """Seconds until sign-ins for these keys are allowed again (0: now)."""
        with self._lock:
            waits = [failures[0] + self.window_s - now for failures in
                     (self._recent(key, now) for key in keys) if len(failures) >= self.limit]
        return max(waits, default=0.0)

    def failed(self, keys: tuple, now: float) -> None:
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, name_key: str) -> None:
        with self._lock:
            self._failures.pop(name_key, None)


@dataclass(frozen=True)
class FormState:
    """What a visit's form asks for."""
    quantities: dict        # sku -> count on the receipt
    answered: dict          # event id -> EventChoice, for the events the form answers
    shown: dict             # event id -> EventChoice the receipt reflects, every event


def money(cents, currency: str = '') -> str:
    if cents is None:
        return '?'
    sign = '-' if cents < 0 else ''
    return f'{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}' + (f' {currency}' if currency else '')


def when(ns) -> str:
    if not ns:
        return ''
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def age(ns, now_ns: int) -> str:
    seconds = max(0, (now_ns - ns) // 1_000_000_000)
    for unit, size in (('d', 86400), ('h', 3600), ('min', 60)):
        if seconds >= size:
            return f'{seconds // size} {unit}'
    return f'{seconds} s'


def percent(share) -> str:
    return '' if share is None else f'{100 * share:.0f} %'


def create_app(bucket, reviewers_file, secret: bytes, settings: ReviewSettings = ReviewSettings(),
               counters=None) -> Flask:
    """The console over ``bucket``; ``counters``: optional callable -> dict (the ingest's)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret, MAX_CONTENT_LENGTH=MAX_FORM_BYTES,
        SESSION_COOKIE_NAME='__Host-jwo_review' if settings.secure_cookies else 'jwo_review',
        SESSION_COOKIE_SECURE=settings.secure_cookies, SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE='Strict', PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        # A form's token lasts as long as its session.
        WTF_CSRF_TIME_LIMIT=None)
    reviewers = review.Reviewers(reviewers_file)
    throttle = LoginThrottle(settings.login_failures, settings.login_window_s)
    app.jinja_env.filters.update(money=money, when=when, percent=percent)
    app.jinja_env.globals.update(reason_text=evidence.reason_text, AGES_S=AGES_S, age=age)

    @app.before_request
    def signed_in():
        g.now_ns = time.time_ns()
        if request.endpoint in PUBLIC or request.endpoint is None:   # None: a 404 to come
            return None
        name = session.get('reviewer')
        if name is None or session.get('epoch') != reviewers.epoch(name):
            session.clear()   # removed, or signed in with a password since replaced
            return redirect(url_for('login'))
        g.reviewer = name
        return None

    # After the session check: a removed reviewer's post goes to the sign-in page.
    CSRFProtect(app)

    @app.after_request
    def headers(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.errorhandler(CSRFError)
    def expired_form(problem):
        return render_template('message.html', title='Expired form',
                               message='The form expired: open the page again.'), 400

    @app.errorhandler(BucketError)
    def bucket_down(problem):
        log.warning('bucket error: %s', problem)
        return render_template('message.html', title='Bucket unavailable', message=str(problem)), 503

    @app.get('/healthz')
    def healthz():
        return 'ok\n', 200, {'Content-Type': 'text/plain'}

    @app.route('/login', methods=['GET', 'POST'])
    def login():
        if request.method == 'GET':
            return render_template('login.html')
        name, password = request.form.get('name', ''), request.form.get('password', '')
        keys = (f'name:{name}', f'address:{request.remote_addr}')
        now = time.monotonic()
        wait = throttle.wait_s(keys, now)
        if wait > 0:
            log.warning('sign-in for %r from %s refused: too many failures', name, request.remote_addr)
            return render_template('login.html', error=f'Too many failed sign-ins: try again in '
                                   f'{int(wait) + 1} s.'), 429, {'Retry-After': str(int(wait) + 1)}
        epoch = reviewers.verify(name, password)
        if epoch is None:
            throttle.failed(keys, now)
            log.warning('failed sign-in for %r from %s', name, request.remote_addr)
            return render_template('login.html', error='Unknown name or wrong password.'), 401
        throttle.succeeded(keys[0])
        session.clear()
        session.permanent = True
        session.update(reviewer=name, epoch=epoch)
        return redirect(url_for('queue'))

    @app.post('/logout')
    def logout():
        session.clear()
        return redirect(url_for('login'))

    def current_filter() -> QueueFilter:
        return QueueFilter(**session.get('filter', {}))

    @app.get('/')
    def queue():
        if {'store', 'reason', 'age'} & set(request.args):   # the filter form; paging keeps it
            try:
                wanted = QueueFilter(request.args.get('store', ''), request.args.get('reason', ''),
                                     int(request.args.get('age', 0) or 0))
            except ValueError:
                abort(400)
            session['filter'] = asdict(wanted)
        page = review_queue.read(bucket).page(current_filter(), request.args.get('page', 1, int),
                                              g.now_ns, settings.page_size)
        return render_template('queue.html', page=page, wanted=current_filter(),
                               counters=counters() if counters else None)

    def open_next(skip=None):
        entry = review_queue.claim_next(bucket, g.reviewer, current_filter(), g.now_ns,
                                        settings.claim_s, skip)
        if entry is None:
            flash('No more visits waiting for review here.', 'flash')
            return redirect(url_for('queue'))
        return redirect(url_for('visit', store_id=entry.store_id, receipt_id=entry.receipt_id))

    @app.post('/next')
    def next_visit():
        return open_next()

    def checked_key(store_id: str, receipt_id: str) -> VisitKey:
        if not (wire.is_safe_id(store_id) and wire.is_safe_id(receipt_id)):
            abort(404)
        return VisitKey(store_id, receipt_id)

    @app.post('/claim/<store_id>/<receipt_id>')
    def claim(store_id, receipt_id):
        key = checked_key(store_id, receipt_id)
        try:
            review_queue.claim(bucket, key, g.reviewer, g.now_ns, settings.claim_s)
        except review_queue.ClaimedByOther as problem:
            flash(f'{receipt_id}: {problem}.', 'error')
            return redirect(url_for('queue'))
        except review_queue.NotPending:
            flash(f'{receipt_id} is no longer waiting for review.', 'error')
            return redirect(url_for('queue'))
        return redirect(url_for('visit', store_id=store_id, receipt_id=receipt_id))

    def loaded(key: VisitKey, with_clips: bool = True) -> review.Visit:
        try:
            visit = review.load_visit(bucket, key.store_id, key.receipt_id, with_clips)
        except review.NotPending as problem:
            abort(404, str(problem))
        if visit.final is not None and visit.entry is not None:
            review.finish(bucket, visit.final, visit.entry)   # a decision cut short
        return visit

    def form_state(visit: review.Visit) -> FormState:
        """The form's quantities, with each event's effect changed from the choice they
        reflect (``was-<event>``) to the one made (``who-``/``what-<event>``), and a
        product added with the picker (``add-sku``, ``add-qty``)."""
        proposed = visit.proposed_choices()
        was = {e: EventChoice.parse(request.form.get(f'was-{e}', c.encode()), visit.visit_code)
               for e, c in proposed.items()}
        answered = {e: EventChoice.parse(f'{request.form[f"who-{e}"]}:{request.form.get(f"what-{e}", "")}',
                                         visit.visit_code)
                    for e in proposed if f'who-{e}' in request.form}
        for event_id, choice in answered.items():
            visit.check_choice(event_id, choice)
        quantities = {}
        try:
            for field, value in request.form.items():
                if field.startswith('qty-'):
                    quantities[field[len('qty-'):]] = int(value or 0)
            added = request.form.get('add-sku', '')
            if added:
                quantities[added] = quantities.get(added, 0) + int(request.form.get('add-qty') or 1)
        except ValueError:
            raise review.InvalidDecision('a quantity is not a whole number')
        return FormState(review.rechoose(quantities, visit.events, was, answered, visit.visit_code),
                         answered, {**was, **answered})

    def render_visit(visit: review.Visit, quantities: dict, chosen: dict, status: int = 200,
                     error: str = ''):
        index = review_queue.read(bucket)
        entry = index.get(VisitKey(visit.store_id, visit.receipt_id))
        return render_template(
            'visit.html', visit=visit, entry=entry, error=error,
            mine=entry is not None and entry.claim is not None and entry.claim.reviewer == g.reviewer,
            events=evidence.events(visit, chosen, settings.clip_margin_s),
            receipt=evidence.receipt_view(visit, quantities) if visit.receipt else None, chosen=chosen,
            products=sorted(visit.catalogue.products.values(), key=lambda p: p.name)), status

    @app.get('/visit/<store_id>/<receipt_id>')
    def visit(store_id, receipt_id):
        shown = loaded(checked_key(store_id, receipt_id))
        return render_visit(shown, shown.proposed_quantities(), shown.proposed_choices())

    @app.post('/visit/<store_id>/<receipt_id>/preview')
    def preview(store_id, receipt_id):
        shown = loaded(checked_key(store_id, receipt_id), with_clips=False)
        try:
            state = form_state(shown)
        except review.InvalidDecision as problem:
            return str(problem), 400, {'Content-Type': 'text/plain; charset=utf-8'}
        return render_template('receipt_form.html', visit=shown, chosen=state.shown,
                               receipt=evidence.receipt_view(shown, state.quantities))

    @app.post('/visit/<store_id>/<receipt_id>/settle')
    def settle(store_id, receipt_id):
        key = checked_key(store_id, receipt_id)
        shown = loaded(key, with_clips=False)
        entry = review_queue.read(bucket).get(key)
        if entry is not None and entry.claim is not None and entry.claim.blocks(g.reviewer, g.now_ns):
            flash(f'{entry.claim.reviewer} is reviewing this visit now.', 'error')
            return redirect(url_for('queue'))
        mine = entry.claim if entry and entry.claim and entry.claim.reviewer == g.reviewer else None
        try:
            state = form_state(shown)
            final = review.decide(bucket, shown, g.reviewer, state.quantities, state.answered,
                                  request.form.get('note', ''), mine.claimed_ns if mine else None)
        except review.AlreadySettled as problem:
            return render_visit(loaded(key), shown.proposed_quantities(), shown.proposed_choices(),
                                409, str(problem))
        except review.InvalidDecision as problem:
            return render_visit(loaded(key), shown.proposed_quantities(), shown.proposed_choices(),
                                400, str(problem))
        taken = final['review']['seconds_to_settle']
        log.info('%s settled %s/%s (%s)', g.reviewer, store_id, receipt_id, final['review']['action'])
        flash(f'Settled {receipt_id}' + (f' in {taken:.0f} s' if taken is not None else '')
              + f': total {money(final["total_cents"], final["currency"])}.', 'flash')
        return open_next()

    @app.post('/visit/<store_id>/<receipt_id>/release')
    def release(store_id, receipt_id):
        review_queue.release(bucket, checked_key(store_id, receipt_id), g.reviewer)
        return redirect(url_for('queue'))

    @app.post('/visit/<store_id>/<receipt_id>/skip')
    def skip(store_id, receipt_id):
        key = checked_key(store_id, receipt_id)
        review_queue.release(bucket, key, g.reviewer)
        return open_next(skip=key)

    @app.get('/visit-code/<store_id>/<visit_code>')
    def by_visit_code(store_id, visit_code):
        if not (wire.is_safe_id(store_id) and wire.is_safe_id(visit_code)):
            abort(404)
        entry = review_queue.read(bucket).with_visit_code(store_id, visit_code)
        if entry is not None:
            return redirect(url_for('visit', store_id=store_id, receipt_id=entry.receipt_id))
        # Fusion names a visit's receipt <store>-<visit code>.
        return redirect(url_for('receipt', store_id=store_id, receipt_id=f'{store_id}-{visit_code}'))

    @app.get('/receipt/<store_id>/<receipt_id>')
    def receipt(store_id, receipt_id):
        key = checked_key(store_id, receipt_id)
        final = bucket.get_json(layout.final_key(store_id, receipt_id))
        shown = final or bucket.get_json(layout.receipt_key(store_id, receipt_id))
        if shown is None:
            abort(404, f'no receipt {receipt_id} has arrived')
        return render_template('receipt.html', receipt=shown, settled=final is not None,
                               pending=review_queue.read(bucket).get(key) is not None)

    @app.route('/receipt/<token>', methods=['GET', 'POST'])
    def payer_receipt(token):
        """A token the store handed no visit, or whose receipt has not arrived, is a 404
        like any unknown path."""
        visit = payer.find(bucket, token)
        if visit is None:
            abort(404)
        error, status = '', 200
        if request.method == 'POST':
            try:
                payer.open_dispute(bucket, visit, request.form.get('sku', ''),
                                   request.form.get('text', ''), g.now_ns)
            except payer.DisputeError as problem:
                error, status = str(problem), 409
            else:
                return redirect(url_for('payer_receipt', token=token))
        payer.repair(bucket, visit, g.now_ns)
        current = visit.current
        return render_template('payer_receipt.html', visit=visit, receipt=visit.shown, error=error,
                               version=current.number if current else 0, token=token,
                               dispute=visit.rounds[-1].receipt.get('dispute')), status

    @app.get('/clip/<store_id>/<clip_id>')
    def clip(store_id, clip_id):
        if not (wire.is_safe_id(store_id) and wire.is_safe_id(clip_id)):
            abort(404)
        key = layout.clip_key(store_id, clip_id)
        head = bucket.head(key)
        if head is None:
            abort(404)
        size = head['size']
        wanted = request.range.range_for_length(size) if request.range and size else None
        if request.range and size and wanted is None:
            return '', 416, {'Content-Range': f'bytes */{size}'}
        headers = {'Accept-Ranges': 'bytes', 'Content-Type': head['content_type']}
        if wanted is None:
            return bucket.get(key) or b'', 200, headers
        first, stop = wanted[0], min(wanted[1], wanted[0] + (8 << 20))   # 8 MiB at most
        body = bucket.get(key, (first, stop - 1)) or b''
        headers['Content-Range'] = f'bytes {first}-{first + len(body) - 1}/{size}'
        return body, 206, headers

    @app.get('/figures')
    def figures():
        return render_template('figures.html', figures=review.figures(review.labelled_rows(bucket)))

    return app


class _QuietHandler(WSGIRequestHandler):
    """Request lines to this module's log at debug level, not to stderr."""

    def log(self, type, message, *args):
        if not _TOKEN_PATH.match(getattr(self, 'path', '') or ''):
            log.debug('%s %s', self.address_string(), message % args)


class ReviewServer:
    """The console on host:port (port 0 picks a free one), werkzeug's threaded WSGI
    server on a thread of its own; ``url`` once made."""

    def __init__(self, app: Flask, host: str = '127.0.0.1', port: int = 8080):
        self._server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
        self.url = f'http://{host}:{self._server.server_port}/'
        self._thread = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, name='jwo-review-web',
                                        daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
