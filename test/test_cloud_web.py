"""The review console over HTTP (Flask's test client, no browser): safe defaults (CSRF
tokens, cookie flags, escaping, headers), sign-in throttling, sessions that end when a
reviewer is removed, claims, the live receipt, settle-and-next, and what a queue page
costs in bucket requests."""
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'cloud'))

from jwo_cloud import layout, review, review_queue, review_web, testing  # noqa: E402
from jwo_cloud.bucket import DirBucket  # noqa: E402

HTTPS = 'https://review.example'
# Over HTTPS a form post must come from a page of the console (as browsers say it).
SAME_ORIGIN = {'Referer': HTTPS + '/'}
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope='module')
def reviewers_file(tmp_path_factory) -> Path:
    """alice and bob, hashed once (argon2id takes its time on purpose)."""
    path = tmp_path_factory.mktemp('reviewers') / 'reviewers.json'
    for name in ('alice', 'bob'):
        review.Reviewers(path).add(name, f'{name}-password')
    return path


class Console:
    def __init__(self, tmp_path, reviewers_file, visits=(1, 2, 3), **settings):
        self.bucket = testing.CountingBucket(DirBucket(tmp_path / 'bucket'))
        testing.seed_visits(self.bucket, tmp_path, visits)
        shutil.copy(reviewers_file, tmp_path / 'reviewers.json')
        self.reviewers = review.Reviewers(tmp_path / 'reviewers.json')
        self.app = review_web.create_app(self.bucket, tmp_path / 'reviewers.json', b'k' * 32,
                                         review_web.ReviewSettings(**settings))

    def client(self, name=None):
        client = self.app.test_client()
        if name is not None:
            assert sign_in(client, name, f'{name}-password').status_code == 302
        return client


def token(client, path='/') -> str:
    return TOKEN.search(client.get(path, base_url=HTTPS).text).group(1)


def sign_in(client, name, password):
    return client.post('/login', base_url=HTTPS, headers=SAME_ORIGIN,
                       data={'name': name, 'password': password, 'csrf_token': token(client, '/login')})


def post(client, path, data=None, page='/'):
    return client.post(path, base_url=HTTPS, headers=SAME_ORIGIN,
                       data={'csrf_token': token(client, page), **(data or {})})


def test_sign_in_sets_a_secure_session_cookie_and_every_form_needs_a_token(tmp_path, reviewers_file):
    console = Console(tmp_path, reviewers_file)
    client = console.client()
    assert client.get('/', base_url=HTTPS).headers['Location'] == '/login'
    assert client.post('/login', base_url=HTTPS, headers=SAME_ORIGIN,
                       data={'name': 'alice', 'password': 'alice-password'}).status_code == 400
    answer = sign_in(client, 'alice', 'alice-password')
    assert answer.status_code == 302 and answer.headers['Location'] == '/'
    cookie = answer.headers['Set-Cookie']
    assert cookie.startswith('__Host-jwo_review=')
    assert all(flag in cookie for flag in ('Secure', 'HttpOnly', 'SameSite=Strict', 'Path=/'))
    page = client.get('/', base_url=HTTPS)
    assert page.status_code == 200 and 'R00001' in page.text
    assert "script-src 'self'" in page.headers['Content-Security-Policy']
    assert page.headers['X-Frame-Options'] == 'DENY' and page.headers['Cache-Control'] == 'no-store'
    forged = client.post('/claim/demo/R00001', base_url=HTTPS, headers=SAME_ORIGIN,
                         data={'csrf_token': 'forged'})
    assert forged.status_code == 400 and 'expired' in forged.text
    assert review_queue.read(console.bucket).get(review_queue.VisitKey('demo', 'R00001')).claim is None


def test_failed_sign_ins_are_throttled(tmp_path, reviewers_file):
    console = Console(tmp_path, reviewers_file, login_failures=3)
    client = console.client()
    for _ in range(3):
        assert sign_in(client, 'alice', 'guess').status_code == 401
    refused = sign_in(client, 'alice', 'alice-password')       # right, but too soon
    assert refused.status_code == 429 and 250 < int(refused.headers['Retry-After']) <= 301
    assert sign_in(client, 'bob', 'bob-password').status_code == 429    # same address


def test_the_throttle_counts_per_name_and_address_over_a_sliding_window():
    throttle = review_web.LoginThrottle(limit=2, window_s=10.0)
    alice = ('name:alice', 'address:10.0.0.1')
    throttle.failed(alice, 0.0)
    throttle.failed(alice, 4.0)
    assert throttle.wait_s(alice, 5.0) == 5.0
    assert throttle.wait_s(('name:bob', 'address:10.0.0.1'), 5.0) == 5.0     # same address
    assert throttle.wait_s(('name:alice', 'address:10.0.0.2'), 5.0) == 5.0   # same name
    assert throttle.wait_s(('name:bob', 'address:10.0.0.2'), 5.0) == 0.0
    assert throttle.wait_s(alice, 10.0) == 0.0                  # the first failure has left
    throttle.failed(alice, 11.0)
    throttle.succeeded('name:alice')
    assert throttle.wait_s(('name:alice', 'address:10.0.0.2'), 11.0) == 0.0
    assert throttle.wait_s(alice, 11.0) == 3.0                  # the address still counts


def test_a_removed_reviewer_is_signed_out_at_once(tmp_path, reviewers_file):
    console = Console(tmp_path, reviewers_file)
    bob = console.client('bob')
    page = token(bob)
    console.reviewers.remove('bob')
    answer = bob.post('/next', base_url=HTTPS, headers=SAME_ORIGIN, data={'csrf_token': page})
    assert answer.status_code == 302 and answer.headers['Location'] == '/login'
    assert bob.get('/', base_url=HTTPS).headers['Location'] == '/login'
    assert all(e.claim is None for e in review_queue.read(console.bucket).ordered())
    alice = console.client('alice')
    console.reviewers.add('alice', 'a-new-password')        # a new password: the same
    assert alice.get('/', base_url=HTTPS).headers['Location'] == '/login'


def test_a_queue_page_is_one_bucket_request(tmp_path, reviewers_file):
    console = Console(tmp_path, reviewers_file, visits=range(1, 31), page_size=20)
    client = console.client('alice')
    console.bucket.requests.clear()
    first = client.get('/', base_url=HTTPS)
    assert console.bucket.requests == [('get', layout.QUEUE_INDEX)]
    assert first.text.count('class="visit') == 20 and 'Page 1 of 2' in first.text
    console.bucket.requests.clear()
    second = client.get('/?page=2', base_url=HTTPS)
    assert console.bucket.requests == [('get', layout.QUEUE_INDEX)]
    assert second.text.count('class="visit') == 10 and 'R00030' in second.text
    # A filter stays while paging, in the session.
    assert client.get('/?store=demo&reason=no_candidate&age=0', base_url=HTTPS).text.count('class="visit') == 0
    assert 'id="empty"' in client.get('/?page=2', base_url=HTTPS).text


def test_one_reviewer_per_visit(tmp_path, reviewers_file):
    console = Console(tmp_path, reviewers_file)
    alice, bob = console.client('alice'), console.client('bob')
    assert post(alice, '/next').headers['Location'] == '/visit/demo/R00001'
    refused = post(bob, '/claim/demo/R00001')
    assert refused.headers['Location'] == '/'
    assert 'alice is reviewing this visit' in bob.get('/', base_url=HTTPS).text
    page = bob.get('/visit/demo/R00001', base_url=HTTPS).text
    assert 'id="claimed"' in page and 'id="settle"' not in page
    post(bob, '/visit/demo/R00001/settle', {'who-E1-1': 'V00001', 'what-E1-1': 'COLA-330:2'})
    assert console.bucket.get(layout.final_key('demo', 'R00001')) is None
    assert post(bob, '/next').headers['Location'] == '/visit/demo/R00002'   # the next one free


def test_the_receipt_follows_the_choices_and_settling_opens_the_next_visit(tmp_path, reviewers_file):
    console = Console(tmp_path, reviewers_file)
    alice = console.client('alice')
    assert post(alice, '/next').headers['Location'] == '/visit/demo/R00001'
    page = alice.get('/visit/demo/R00001', base_url=HTTPS).text
    assert 'id="claim-state"' in page and '2 x COLA-330' in page and '5.38 USD' in page
    form = {'was-E1-1': 'V00001:COLA-330:2', 'qty-COLA-330': '2', 'qty-CHOC-100': '1'}
    # The two cans were the other shopper's; one bar of gum picked from the catalogue.
    preview = post(alice, '/visit/demo/R00001/preview',
                   {**form, 'who-E1-1': 'V99999', 'what-E1-1': 'COLA-330:2', 'add-sku': 'GUM-10'},
                   page='/visit/demo/R00001')
    assert preview.status_code == 200
    assert re.search(r'id="qty-COLA-330" value="0"', preview.text)
    assert re.search(r'id="qty-GUM-10" value="1"', preview.text)
    assert 'value="V99999:COLA-330:2"' in preview.text                   # what it reflects now
    assert '3.55 USD' in preview.text and 'corrected' in preview.text    # 328 + 27.06 tax
    settled = post(alice, '/visit/demo/R00001/settle',
                   {**form, 'who-E1-1': 'V99999', 'what-E1-1': 'COLA-330:2', 'add-sku': 'GUM-10',
                    'note': 'cans were the other shopper\'s'}, page='/visit/demo/R00001')
    assert settled.headers['Location'] == '/visit/demo/R00002'
    final = console.bucket.get_json(layout.final_key('demo', 'R00001'))
    assert [(line['sku'], line['quantity']) for line in final['lines']] == [('CHOC-100', 1), ('GUM-10', 1)]
    assert final['total_cents'] == 355 and final['review']['seconds_to_settle'] < 30
    assert final['review']['event_decisions'] == {'E1-1': {'visit': 'V99999', 'sku': 'COLA-330', 'quantity': 2}}
    following = alice.get('/visit/demo/R00002', base_url=HTTPS).text
    assert 'Settled R00001' in following and 'id="claim-state"' in following
    # A typed price is no part of the form: an unknown SKU is refused, nothing settles.
    refused = post(alice, '/visit/demo/R00002/settle', {'qty-FREE-1': '1', 'unit-FREE-1': '1'},
                   page='/visit/demo/R00002')
    assert refused.status_code == 400 and 'FREE-1 is not in the store' in refused.text
    assert console.bucket.get(layout.final_key('demo', 'R00002')) is None


def test_candidate_visits_link_to_their_review_or_receipt(tmp_path, reviewers_file):
    console = Console(tmp_path, reviewers_file)
    alice = console.client('alice')
    assert alice.get('/visit-code/demo/V00002', base_url=HTTPS).headers['Location'] == '/visit/demo/R00002'
    assert alice.get('/visit-code/demo/V77777', base_url=HTTPS).headers['Location'] == \
        '/receipt/demo/demo-V77777'
    assert alice.get('/receipt/demo/R00002', base_url=HTTPS).status_code == 200
    assert alice.get('/receipt/demo/R99999', base_url=HTTPS).status_code == 404


def test_what_the_store_sent_is_escaped(tmp_path, reviewers_file):
    bucket = DirBucket(tmp_path / 'bucket')
    console = Console(tmp_path, reviewers_file, visits=())
    hostile = testing.fake_receipt(5)
    hostile.visit_code = '<script>alert(1)</script>'
    hostile.lines[0].name = '<img src=x onerror=alert(2)>'
    from jwo_cloud import convert
    from jwo_cloud.ingest import Ingest
    from jwo_cloud.wire import pb
    ingest = Ingest(bucket, tmp_path / 'keys/cloud/ingest.key_secret', tmp_path / 'keys/enrolled',
                    tmp_path / 'spool')
    for item in convert.receipt_items(hostile, 'demo', 1) + convert.review_items(testing.fake_review(5), 'demo', 1):
        assert ingest.process('demo', pb.Envelope.FromString(item[3])).status == pb.OK
    page = console.client('alice').get('/visit/demo/R00005', base_url=HTTPS).text
    assert '<script>alert' not in page and '&lt;script&gt;alert(1)&lt;/script&gt;' in page
    assert '<img src=x' not in page and '&lt;img src=x onerror=alert(2)&gt;' in page


def test_unsafe_ids_are_not_found(tmp_path, reviewers_file):
    client = Console(tmp_path, reviewers_file, visits=(1,)).client('alice')
    for path in ('/visit/demo/..', '/clip/demo/..%2Fkeys', '/visit/demo/R%00', '/receipt/demo/a%2Fb'):
        assert client.get(path, base_url=HTTPS).status_code == 404, path
