"""The reviewers' web UI (``jwo-cloud serve`` / ``jwo-cloud review-ui``): sign in, see
the visits waiting, play their clips, see the proposed receipt with the events in
doubt and their candidates, and confirm or correct it.

Standard library only (http.server, threads). Sessions are HMAC-signed cookies
(HttpOnly, SameSite=Strict, 12 h); every form carries a CSRF token derived from the
session. Pages are rendered on the server and need no JavaScript; clips are served
with HTTP range requests so the browser's player can seek.
"""
import base64
import hashlib
import hmac
import html
import logging
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

from jwo_cloud import layout, review, wire
from jwo_cloud.bucket import BucketError

log = logging.getLogger('jwo_cloud.review_web')

COOKIE = 'jwo_review'
SESSION_S = 12 * 3600
MAX_FORM_BYTES = 64 * 1024
ADD_ROWS = 2

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f5f6f8;color:#222}
header{background:#1d3557;color:#fff;padding:.6em 1.2em;display:flex;justify-content:space-between;align-items:center}
header a{color:#fff}
header button{background:transparent;color:#fff;border:1px solid #fff;border-radius:3px}
main{padding:1em 1.2em;max-width:1100px}
table{border-collapse:collapse;background:#fff;margin:.5em 0}
td,th{border:1px solid #ccd;padding:.3em .6em;text-align:left}
.num{text-align:right}.flash{background:#e7f6e7;padding:.5em;border:1px solid #9c9}
.error{background:#fde8e8;padding:.5em;border:1px solid #d99}
.event{background:#fff;border:1px solid #ccd;padding:.6em;margin:.6em 0}
video{max-width:480px;background:#000;display:block;margin:.3em 0}
button{padding:.4em 1em;margin-right:.5em}
input[type=number]{width:6em}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _money(cents, currency='') -> str:
    if cents is None:
        return '?'
    sign = '-' if cents < 0 else ''
    return f'{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}{" " + currency if currency else ""}'


def _when(ns) -> str:
    if not ns:
        return ''
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


class ReviewApp:
    """The application state shared by request handlers."""

    def __init__(self, bucket, reviewers_file, secret: bytes = b'', counters=None):
        self.bucket = bucket
        self.reviewers_file = reviewers_file
        self.secret = secret or secrets.token_bytes(32)
        self.counters = counters   # optional callable -> dict (ingest counters)

    def make_session(self, name: str) -> str:
        payload = f'{base64.urlsafe_b64encode(name.encode()).decode()}.{int(time.time()) + SESSION_S}'
        mac = hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()
        return f'{payload}.{mac}'

    def check_session(self, value: str):
        try:
            encoded, expiry, mac = value.split('.')
        except (AttributeError, ValueError):
            return None
        expected = hmac.new(self.secret, f'{encoded}.{expiry}'.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, mac) or int(expiry) < time.time():
            return None
        try:
            return base64.urlsafe_b64decode(encoded.encode()).decode()
        except ValueError:
            return None

    def csrf(self, session: str) -> str:
        return hmac.new(self.secret, f'csrf:{session}'.encode(), hashlib.sha256).hexdigest()[:32]


class _Handler(BaseHTTPRequestHandler):
    app: ReviewApp = None
    server_version = 'jwo-review'
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        log.debug('%s %s', self.address_string(), fmt % args)

    # -- plumbing -------------------------------------------------------------------
    def _session(self):
        cookie = SimpleCookie(self.headers.get('Cookie', ''))
        if COOKIE not in cookie:
            return None, None
        value = cookie[COOKIE].value
        return self.app.check_session(value), value

    def _send(self, status, body: bytes, content_type='text/html; charset=utf-8', headers=()):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('X-Frame-Options', 'DENY')
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _redirect(self, where: str, headers=()):
        self._send(HTTPStatus.SEE_OTHER, b'', headers=[('Location', where), *headers])

    def _page(self, title: str, body: str, user=None, status=HTTPStatus.OK):
        account = ''
        if user:
            account = (f'<form method="post" action="/logout" style="margin:0">'
                       f'<span id="user">{_e(user)}</span> '
                       f'<button type="submit" id="logout">Sign out</button></form>')
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f'<title>{_e(title)} - jwo review</title><style>{_STYLE}</style></head><body>'
                f'<header><a href="/"><b>jwo review</b></a>{account}</header>'
                f'<main><h1>{_e(title)}</h1>{body}</main></body></html>')
        self._send(status, page.encode())

    def _form(self) -> dict:
        length = int(self.headers.get('Content-Length') or 0)
        if length > MAX_FORM_BYTES:
            raise ValueError('form too large')
        data = self.rfile.read(length).decode('utf-8', 'replace')
        return {k: v[-1] for k, v in parse_qs(data, keep_blank_values=True).items()}

    def _require(self):
        user, session = self._session()
        if user is None:
            self._redirect('/login')
        return user, session

    # -- routes ---------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urlsplit(self.path).path
        try:
            if path == '/healthz':
                return self._send(HTTPStatus.OK, b'ok\n', 'text/plain')
            if path == '/login':
                return self._login_page()
            user, session = self._require()
            if user is None:
                return
            if path == '/':
                return self._index(user)
            match = re.fullmatch(r'/visit/([^/]+)/([^/]+)', path)
            if match:
                return self._visit(user, session, *match.groups())
            match = re.fullmatch(r'/clip/([^/]+)/([^/]+)', path)
            if match:
                return self._clip(*match.groups())
            self._page('Not found', '<p>No such page.</p>', user, HTTPStatus.NOT_FOUND)
        except BucketError as error:
            log.warning('bucket error: %s', error)
            self._page('Bucket unavailable', f'<p class="error">{_e(error)}</p>', None,
                       HTTPStatus.SERVICE_UNAVAILABLE)

    def do_POST(self):
        path = urlsplit(self.path).path
        try:
            form = self._form()
        except ValueError:
            return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b'form too large', 'text/plain')
        try:
            if path == '/login':
                return self._login(form)
            user, session = self._require()
            if user is None:
                return
            if not hmac.compare_digest(form.get('csrf', ''), self.app.csrf(session)) \
                    and path != '/logout':
                return self._page('Expired form', '<p class="error">The form expired; '
                                  'open the page again.</p>', user, HTTPStatus.FORBIDDEN)
            if path == '/logout':
                return self._redirect('/login', [('Set-Cookie', f'{COOKIE}=; Path=/; Max-Age=0')])
            match = re.fullmatch(r'/visit/([^/]+)/([^/]+)', path)
            if match:
                return self._decide(user, *match.groups(), form)
            self._page('Not found', '<p>No such page.</p>', user, HTTPStatus.NOT_FOUND)
        except BucketError as error:
            log.warning('bucket error: %s', error)
            self._page('Bucket unavailable', f'<p class="error">{_e(error)}</p>', None,
                       HTTPStatus.SERVICE_UNAVAILABLE)

    def _login_page(self, error=''):
        message = f'<p class="error" id="error">{_e(error)}</p>' if error else ''
        self._page('Sign in', f'''{message}
<form method="post" action="/login">
<p><label>Name <input name="name" id="name" autocomplete="username" required></label></p>
<p><label>Password <input name="password" id="password" type="password"
   autocomplete="current-password" required></label></p>
<p><button type="submit" id="sign-in">Sign in</button></p></form>''',
                   status=HTTPStatus.UNAUTHORIZED if error else HTTPStatus.OK)

    def _login(self, form):
        name, password = form.get('name', ''), form.get('password', '')
        if not review.check_reviewer(self.app.reviewers_file, name, password):
            log.warning('failed sign-in for %r from %s', name, self.address_string())
            return self._login_page('Unknown name or wrong password.')
        cookie = (f'{COOKIE}={self.app.make_session(name)}; Path=/; HttpOnly; '
                  f'SameSite=Strict; Max-Age={SESSION_S}')
        self._redirect('/', [('Set-Cookie', cookie)])

    def _index(self, user):
        query = parse_qs(urlsplit(self.path).query)
        flash = ''
        if 'settled' in query:
            flash = f'<p class="flash" id="flash">Settled {_e(query["settled"][-1])}.</p>'
        visits = review.pending(self.app.bucket)
        if visits:
            rows = ''.join(
                f'<tr><td><a id="visit-{_e(v["store_id"])}-{_e(v["receipt_id"])}" '
                f'href="/visit/{quote(v["store_id"])}/{quote(v["receipt_id"])}">'
                f'{_e(v["receipt_id"])}</a></td><td>{_e(v["store_id"])}</td>'
                f'<td>{_e(v["visit_code"])}</td><td>{_e(", ".join(v["reasons"]))}</td>'
                f'<td class="num">{v["events"]}</td>'
                f'<td class="num">{_money(v["total_cents"], v["currency"])}</td>'
                f'<td>{_when(v["queued_ns"])}</td></tr>' for v in visits)
            table = (f'<table id="pending"><tr><th>Receipt</th><th>Store</th><th>Visit</th>'
                     f'<th>Why</th><th>Events</th><th>Proposed total</th><th>Queued</th></tr>'
                     f'{rows}</table>')
        else:
            table = '<p id="empty">No visits are waiting for review.</p>'
        counters = ''
        if self.app.counters is not None:
            values = self.app.counters()
            counters = ('<details><summary>Ingest counters</summary><table>' + ''.join(
                f'<tr><td>{_e(k)}</td><td class="num">{v}</td></tr>'
                for k, v in sorted(values.items())) + '</table></details>')
        self._page(f'Visits waiting ({len(visits)})', flash + table + counters, user)

    def _visit(self, user, session, store_id, receipt_id, error='', status=HTTPStatus.OK):
        if not (wire.is_safe_id(store_id) and wire.is_safe_id(receipt_id)):
            return self._page('Not found', '<p>No such visit.</p>', user, HTTPStatus.NOT_FOUND)
        try:
            visit = review.load_visit(self.app.bucket, store_id, receipt_id)
        except review.NotPending as problem:
            return self._page('Not found', f'<p>{_e(problem)}</p>', user, HTTPStatus.NOT_FOUND)
        receipt = visit['receipt'] or {}
        currency = receipt.get('currency', '')
        parts = [f'<p class="error" id="error">{_e(error)}</p>' if error else '']
        if visit['final'] is not None:
            final = visit['final']
            parts.append(f'<p class="flash" id="settled">Settled by '
                         f'{_e(final["review"]["reviewer"])} ({_e(final["review"]["action"])}) '
                         f'at {_when(final["review"]["decided_ns"])}: total '
                         f'{_money(final["total_cents"], currency)}.</p>')
        parts.append(f'<p>Store <b>{_e(store_id)}</b>, visit <b>{_e(receipt.get("visit_code", ""))}'
                     f'</b>, entry {_when(receipt.get("entry_ns"))}, exit '
                     f'{_when(receipt.get("exit_ns"))}.</p>')
        if not receipt:
            parts.append('<p class="error">The receipt has not arrived yet.</p>')
        reasons = receipt.get('reasons', [])
        if reasons:
            parts.append('<h2>Why it needs review</h2><ul>' + ''.join(
                f'<li><b>{_e(r["code"])}</b> {_e(r.get("event_id", ""))} {_e(r.get("detail", ""))}</li>'
                for r in reasons) + '</ul>')
        events = (visit['entry'] or {}).get('request', {}).get('events', [])
        if events:
            parts.append('<h2>Events in doubt</h2>')
        for event in events:
            parts.append(self._event_html(event, visit['clips'], store_id))
        if visit['final'] is None and receipt:
            parts.append(self._decision_form(store_id, receipt_id, receipt, events,
                                             self.app.csrf(session)))
        self._page(f'Receipt {receipt_id}', ''.join(parts), user, status)

    def _event_html(self, event, clips, store_id) -> str:
        eid = event.get('event_id', '')
        candidates = ''.join(
            f'<li>{_e(v)}{f" ({s:.2f})" if s is not None else ""}</li>'
            for v, s in zip(event.get('candidate_visits', []),
                            event.get('candidate_scores', []) or [None] * 999))
        grams = ', '.join(f'{b}: {g:+.0f} g' for b, g in
                          zip(event.get('bin_ids', []), event.get('delta_grams', [])))
        products = ''.join(
            f'<li>{_e(p.get("quantity", 0))} x {_e(p.get("sku", ""))} '
            f'({_e(p.get("quantity", 0))} x {p.get("unit_grams", 0.0):.0f} g, {p.get("probability", 0.0):.2f})</li>'
            for p in event.get('candidate_products', []))
        videos = []
        for clip_id in event.get('clip_ids', []):
            clip = clips.get(clip_id, {})
            if not clip.get('present'):
                videos.append(f'<p>Clip {_e(clip_id)} not uploaded yet.</p>')
                continue
            src = f'/clip/{quote(store_id)}/{quote(clip_id)}'
            if clip['content_type'].startswith('image/'):
                videos.append(f'<img class="clip" src="{src}" alt="{_e(clip_id)}" width="480">')
            else:
                videos.append(f'<video class="clip" controls preload="metadata" src="{src}" '
                              f'data-clip="{_e(clip_id)}"></video>'
                              f'<a href="{src}">download {_e(clip_id)}</a>')
        return (f'<div class="event" id="event-{_e(eid)}"><b>{_e(eid)}</b>: '
                f'{_e(event.get("reason_code", ""))}, shelf {_e(event.get("shelf_id", ""))} '
                f'({_e(grams)}), {_when(event.get("window_start_ns"))}. Proposed: '
                f'{_e(event.get("proposed_quantity", 0))} x {_e(event.get("proposed_sku") or "?")}. '
                f'Candidates:<ol>{candidates}</ol>'
                + (f'Products:<ol class="products">{products}</ol>' if products else '')
                + f'{"".join(videos)}</div>')

    def _decision_form(self, store_id, receipt_id, receipt, events, csrf) -> str:
        rows = []
        for n, line in enumerate(receipt.get('lines', [])):
            rows.append(
                f'<tr><td><input type="hidden" name="sku-{n}" value="{_e(line["sku"])}">'
                f'{_e(line["sku"])}</td><td><input type="hidden" name="name-{n}" '
                f'value="{_e(line["name"])}">{_e(line["name"])}</td>'
                f'<td><input type="number" min="0" max="{review.MAX_QUANTITY}" name="qty-{n}" '
                f'id="qty-{n}" value="{int(line["quantity"])}"></td>'
                f'<td class="num"><input type="hidden" name="unit-{n}" '
                f'value="{int(line["unit_price_cents"])}">{_money(line["unit_price_cents"])}</td>'
                f'<td class="num">{_money(line["line_total_cents"])}</td></tr>')
        count = len(receipt.get('lines', []))
        for k in range(ADD_ROWS):
            n = count + k
            rows.append(
                f'<tr><td><input name="sku-{n}" id="sku-{n}" placeholder="add sku"></td>'
                f'<td><input name="name-{n}" id="name-{n}" placeholder="name"></td>'
                f'<td><input type="number" min="0" name="qty-{n}" id="qty-{n}" value="0"></td>'
                f'<td><input type="number" min="0" name="unit-{n}" id="unit-{n}" '
                f'placeholder="cents"></td><td></td></tr>')
        choices = []
        for event in events:
            eid = _e(event.get('event_id', ''))
            options = ''.join(f'<option value="{v}">{label}</option>' for v, label in (
                ('', '(no decision)'), ('this_visit', 'taken by this visit'),
                ('other_visit', 'taken by another visit'), ('no_item', 'nothing taken')))
            choices.append(f'<p>Event {eid}: <select name="event-{eid}" id="event-choice-{eid}">'
                           f'{options}</select></p>')
        currency = receipt.get('currency', '')
        return f'''<h2>Proposed receipt</h2>
<form method="post" action="/visit/{quote(store_id)}/{quote(receipt_id)}" id="decision">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="lines" value="{count + ADD_ROWS}">
<table id="lines"><tr><th>SKU</th><th>Name</th><th>Quantity</th><th>Unit price</th><th>Line total</th></tr>
{"".join(rows)}</table>
<p>Subtotal {_money(receipt.get("subtotal_cents"), currency)}, tax {_money(receipt.get("tax_cents"), currency)},
total <b id="proposed-total">{_money(receipt.get("total_cents"), currency)}</b>.</p>
{"".join(choices)}
<p><label>Note <input name="note" id="note" size="60"></label></p>
<p><button type="submit" name="action" value="confirm" id="confirm">Confirm as proposed</button>
<button type="submit" name="action" value="correct" id="correct">Save corrected receipt</button></p>
</form>'''

    def _decide(self, user, store_id, receipt_id, form):
        session = self._session()[1]
        if not (wire.is_safe_id(store_id) and wire.is_safe_id(receipt_id)):
            return self._page('Not found', '<p>No such visit.</p>', user, HTTPStatus.NOT_FOUND)
        try:
            count = min(int(form.get('lines', '0')), 200)
        except ValueError:
            count = 0
        lines = []
        for n in range(count):
            sku = form.get(f'sku-{n}', '').strip()
            if not sku:
                continue
            lines.append({'sku': sku, 'name': form.get(f'name-{n}', ''),
                          'quantity': form.get(f'qty-{n}', '0') or '0',
                          'unit_price_cents': form.get(f'unit-{n}', '')})
        decisions = {k[len('event-'):]: v for k, v in form.items() if k.startswith('event-')}
        try:
            review.decide(self.app.bucket, store_id, receipt_id, user,
                          form.get('action', ''), lines, decisions, form.get('note', ''))
        except review.AlreadySettled as problem:
            return self._visit(user, session, store_id, receipt_id, str(problem),
                               HTTPStatus.CONFLICT)
        except review.InvalidDecision as problem:
            return self._visit(user, session, store_id, receipt_id, str(problem),
                               HTTPStatus.BAD_REQUEST)
        except review.NotPending as problem:
            return self._page('Not found', f'<p>{_e(problem)}</p>', user, HTTPStatus.NOT_FOUND)
        log.info('%s settled %s/%s (%s)', user, store_id, receipt_id, form.get('action'))
        self._redirect(f'/?settled={quote(receipt_id)}')

    def _clip(self, store_id, clip_id):
        if not (wire.is_safe_id(store_id) and wire.is_safe_id(clip_id)):
            return self._send(HTTPStatus.NOT_FOUND, b'no such clip', 'text/plain')
        key = layout.clip_key(store_id, clip_id)
        head = self.app.bucket.head(key)
        if head is None:
            return self._send(HTTPStatus.NOT_FOUND, b'no such clip', 'text/plain')
        size = head['size']
        wanted = re.fullmatch(r'bytes=(\d*)-(\d*)', self.headers.get('Range', '').strip())
        headers = [('Accept-Ranges', 'bytes')]
        if wanted and size and (wanted.group(1) or wanted.group(2)):
            if wanted.group(1):
                first = int(wanted.group(1))
                last = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
            else:
                first, last = max(0, size - int(wanted.group(2))), size - 1
            if first > last or first >= size:
                return self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b'',
                                  headers=[('Content-Range', f'bytes */{size}')])
            last = min(last, first + (8 << 20) - 1)   # at most 8 MiB per answer
            body = self.app.bucket.get(key, (first, last)) or b''
            headers.append(('Content-Range', f'bytes {first}-{first + len(body) - 1}/{size}'))
            return self._send(HTTPStatus.PARTIAL_CONTENT, body, head['content_type'], headers)
        body = self.app.bucket.get(key) or b''
        self._send(HTTPStatus.OK, body, head['content_type'], headers)


class ReviewServer:
    """The web UI on host:port (port 0 picks a free one); ``url`` once started."""

    def __init__(self, app: ReviewApp, host: str = '127.0.0.1', port: int = 8080):
        handler = type('Handler', (_Handler,), {'app': app})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.url = f'http://{host}:{self.httpd.server_address[1]}/'
        self._thread = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name='jwo-review-web',
                                        daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
