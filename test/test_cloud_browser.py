"""The review console end to end in headless Chromium (selenium + chromedriver), on
visits the product made: a scenario through fusion, its review requests and the clips
of their events through the uplink and the ingest into the bucket (cloud/product_visits.py).
A reviewer signs in, claims the oldest visit, plays its clip cued to the event, answers
what the event was and adds a product with the catalogue picker (the receipt following
live), settles it and lands on the next visit; a second reviewer cannot claim the first
one; a removed reviewer's session ends at once.

And the shopper's side: the receipt page opened by the visit's token, a line disputed,
the dispute in the review queue, settled by a reviewer and delivered again."""
import json
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'cloud'))

from jwo_cloud import layout, payer, review, review_queue, testing  # noqa: E402
from jwo_cloud.bucket import DirBucket  # noqa: E402
from jwo_cloud.delivery import Deliverer, FileAdapter  # noqa: E402
from jwo_cloud.review_web import ReviewServer, ReviewSettings, create_app  # noqa: E402
from product_visits import send_product_visits  # noqa: E402

from jwo_nodes import headless_chromium  # noqa: E402

pytest.importorskip('selenium.webdriver')
pytestmark = pytest.mark.skipif(not headless_chromium.available(),
                                reason='needs the chromium and chromium-driver packages')

# Two shoppers, each putting back a yogurt of one kind on the bin of the other, which
# weighs the same: both visits go to review as ambiguous_product.
SCENARIO = REPO / 'test' / 'scenarios' / 'hard-same-weight-wrong-shelf.yaml'
# The clip writer's margin around an event (clip_node's margin_s; shorter than its 3 s
# default, so the clips are written quicker).
MARGIN_S = 1.5


@pytest.fixture(scope='module')
def product(tmp_path_factory):
    """The product's run, sent to a directory bucket once; each test gets a copy."""
    work = tmp_path_factory.mktemp('product')
    run = send_product_visits(DirBucket(work / 'bucket'), work, [SCENARIO], MARGIN_S)
    reviewers = work / 'reviewers.json'
    for name in ('alice', 'bob'):
        review.Reviewers(reviewers).add(name, f'{name}-password')
    return run, work


@pytest.fixture
def site(product, tmp_path):
    run, work = product
    shutil.copytree(work / 'bucket', tmp_path / 'bucket')
    shutil.copy(work / 'reviewers.json', tmp_path / 'reviewers.json')
    bucket = DirBucket(tmp_path / 'bucket')
    app = create_app(bucket, tmp_path / 'reviewers.json', b's' * 32, ReviewSettings(clip_margin_s=MARGIN_S))
    server = ReviewServer(app, '127.0.0.1', 0)
    server.start()
    yield server.url.rstrip('/'), bucket, run, review.Reviewers(tmp_path / 'reviewers.json')
    server.stop()


@pytest.fixture
def browsers():
    started = []

    def start():
        browser = headless_chromium.HeadlessChromium(('--autoplay-policy=no-user-gesture-required',))
        started.append(browser)
        # A click that submits a form returns before the next page is there: look for
        # what only the next page has, waiting for it.
        browser.driver.implicitly_wait(10)
        return browser.driver
    yield start
    for browser in started:
        browser.quit()


def sign_in(driver, base, name, password, ok=True):
    from selenium.webdriver.common.by import By
    driver.get(base + '/')
    assert urlsplit(driver.current_url).path == '/login'
    driver.find_element(By.ID, 'name').send_keys(name)
    driver.find_element(By.ID, 'password').send_keys(password)
    driver.find_element(By.ID, 'sign-in').click()
    assert driver.find_element(By.ID, 'user' if ok else 'error')   # the next page


def seen_frame(driver, at_s: float) -> dict:
    """Seeks the clip's player to at_s, draws the frame it shows on a canvas and reads
    the RGBA of its left edge (the event's red border)."""
    return driver.execute_async_script('''
        const [at, done] = [arguments[0], arguments[arguments.length - 1]];
        const v = document.querySelector("video.clip");
        v.pause();
        v.addEventListener("seeked", () => {
            const canvas = document.createElement("canvas");
            [canvas.width, canvas.height] = [v.videoWidth, v.videoHeight];
            const g = canvas.getContext("2d");
            g.drawImage(v, 0, 0);
            done({edge: Array.from(g.getImageData(1, v.videoHeight / 2, 1, 1).data),
                  ready: v.readyState});
        }, {once: true});
        v.currentTime = at;
    ''', at_s)


def shown_total(driver) -> str:
    """The receipt's total as shown (read in one step: a preview replaces the receipt)."""
    return driver.execute_script('return document.getElementById("total").textContent;')


def is_event_red(rgba) -> bool:
    red, green, blue, alpha = rgba
    return red > 170 and green < 90 and blue < 90 and alpha == 255


@pytest.mark.slow(18)
def test_a_reviewer_settles_a_visit_of_the_product_and_lands_on_the_next(site, browsers):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    base, bucket, run, reviewers = site
    first, second = sorted(run.reviews, key=lambda r: r.header.stamp.sec * 10**9 + r.header.stamp.nanosec)
    receipt = next(r for r in run.receipts if r.receipt_id == first.receipt_id)
    (event,) = first.events
    assert event.delta_grams[0] > 0               # a put-back: it took one off the cart
    alice, bob = browsers(), browsers()

    sign_in(alice, base, 'alice', 'wrong-password', ok=False)
    assert 'wrong password' in alice.find_element(By.ID, 'error').text
    sign_in(alice, base, 'alice', 'alice-password')
    rows = alice.find_elements(By.CSS_SELECTOR, '#pending tr.visit')
    assert [r.find_element(By.TAG_NAME, 'button').text for r in rows] == [first.receipt_id,
                                                                           second.receipt_id]
    assert 'ambiguous_product' in rows[0].text
    sign_in(bob, base, 'bob', 'bob-password')

    alice.find_element(By.TAG_NAME, 'body').send_keys('n')      # the next visit, claimed
    assert alice.find_element(By.ID, 'claim-state')
    assert urlsplit(alice.current_url).path == f'/visit/demo/{first.receipt_id}'

    # Bob cannot take it.
    bob.find_element(By.ID, f'visit-demo-{first.receipt_id}').click()
    assert 'alice is reviewing this visit' in bob.find_element(By.ID, 'error').text
    assert review_queue.read(bucket).get(review_queue.VisitKey('demo', first.receipt_id)).claim.reviewer == 'alice'

    # The evidence: the measured change, the products it may have been with their
    # weights, the bin on the floor plan, and the clip cued to the event.
    section = alice.find_element(By.ID, f'event-{event.event_id}')
    assert section.find_element(By.CLASS_NAME, 'measured').text == f'{abs(event.delta_grams[0]):.0f} g'
    products = section.find_element(By.CSS_SELECTOR, 'table.what').text
    assert 'Plain yogurt 125 g (YOG-PLAIN)' in products and 'Strawberry yogurt 125 g (YOG-STRAW)' in products
    assert '135 g' in products and f'{100 * event.candidate_product_scores[0]:.0f} %' in products
    assert len(section.find_elements(By.CSS_SELECTOR, 'svg rect.bin.in-event')) == 1
    assert section.find_element(By.CSS_SELECTOR, 'svg text.label.in-event').text == event.bin_ids[0]
    video = section.find_element(By.CSS_SELECTOR, 'video.clip')
    fetched = alice.execute_async_script('''
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {headers: {Range: 'bytes=0-9'}}).then(
            r => r.arrayBuffer().then(b => done([r.status, b.byteLength, r.headers.get('Content-Type')])));
    ''', video.get_attribute('src').split('#')[0])
    assert fetched == [206, 10, 'video/mp4']
    player = WebDriverWait(alice, 15).until(lambda d: d.execute_script(
        'const v = document.querySelector("video.clip");'
        'return (v.error || v.readyState >= 2) && {error: v.error && v.error.message,'
        '    duration: v.duration, at: v.currentTime};'))
    window_s = (event.window_end.sec - event.window_start.sec) + (
        event.window_end.nanosec - event.window_start.nanosec) / 1e9
    assert player['error'] is None and player['duration'] >= 2 * MARGIN_S + window_s - 0.2
    assert player['at'] == pytest.approx(MARGIN_S - 1.0, abs=0.05)      # a second before the event
    alice.execute_script('document.querySelector("video.clip").play();')
    WebDriverWait(alice, 15).until(lambda d: d.execute_script(
        'return document.querySelector("video.clip").currentTime > arguments[0];', MARGIN_S - 0.9))
    inside = seen_frame(alice, MARGIN_S + window_s / 2)
    before = seen_frame(alice, 0.2)
    assert is_event_red(inside['edge']) and not is_event_red(before['edge'])

    # The put-back was the other yogurt: the receipt follows at once.
    proposed = {line.sku: line.quantity for line in receipt.lines}
    total = shown_total(alice)
    other = next(sku for sku in ('YOG-PLAIN', 'YOG-STRAW') if sku != event.proposed_sku)
    alice.find_element(By.CSS_SELECTOR, f'input[name="what-{event.event_id}"][value="{other}:1"]').click()
    WebDriverWait(alice, 10).until(lambda d: shown_total(d) != total)
    # ... and a bar of chewing gum went out too: picked from the catalogue.
    total = shown_total(alice)
    alice.find_element(By.CSS_SELECTOR, '#add-sku option[value="GUM-10"]').click()
    alice.find_element(By.ID, 'add-line').click()
    WebDriverWait(alice, 10).until(lambda d: shown_total(d) != total)
    assert alice.find_element(By.ID, 'qty-GUM-10').get_attribute('value') == '1'
    assert alice.find_element(By.ID, 'receipt-state').text == 'corrected'

    alice.find_element(By.TAG_NAME, 'body').send_keys('s')      # settle and next
    assert f'Settled {first.receipt_id}' in alice.find_element(By.ID, 'flash').text
    assert urlsplit(alice.current_url).path == f'/visit/demo/{second.receipt_id}'
    assert alice.find_element(By.ID, 'claim-state')

    final = bucket.get_json(layout.final_key('demo', first.receipt_id))
    expected = dict(proposed)
    expected[event.proposed_sku] = expected.get(event.proposed_sku, 0) + 1    # the put-back was not it
    expected[other] = expected.get(other, 0) - 1
    expected['GUM-10'] = 1
    assert {line['sku']: line['quantity'] for line in final['lines']} == {
        sku: n for sku, n in expected.items() if n}
    assert final['total_cents'] == sum(line['line_total_cents'] for line in final['lines'])  # no tax here
    assert final['review']['reviewer'] == 'alice' and 0 < final['review']['seconds_to_settle'] < 120
    assert final['review']['event_decisions'][event.event_id]['sku'] == other
    assert bucket.head(layout.labels_key('demo', first.receipt_id)) is not None

    # Bob is removed: his very next request finds his session ended.
    reviewers.remove('bob')
    bob.get(base + '/')
    assert urlsplit(bob.current_url).path == '/login'
    bob.get(base + f'/visit/demo/{second.receipt_id}')
    assert urlsplit(bob.current_url).path == '/login'


@pytest.mark.slow(15)
def test_the_shopper_disputes_a_line_and_gets_the_corrected_receipt(tmp_path, browsers):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    bucket = DirBucket(tmp_path / 'bucket')
    token = 'shopper-token-' + 'Q' * 30
    receipt_id = testing.seed_paid_visit(testing.local_ingest(bucket, tmp_path), 1, token)
    review.Reviewers(tmp_path / 'reviewers.json').add('alice', 'alice-password')
    server = ReviewServer(create_app(bucket, tmp_path / 'reviewers.json', b's' * 32), '127.0.0.1', 0)
    base = server.start().rstrip('/')
    deliveries = tmp_path / 'deliveries.jsonl'
    deliverer = Deliverer(bucket, FileAdapter(deliveries))
    try:
        shopper, alice = browsers(), browsers()
        shopper.get(f'{base}/receipt/{token}')
        assert shopper.find_element(By.ID, 'receipt-status').text == 'final'
        assert shopper.find_element(By.ID, 'line-COLA-330').text.startswith('Cola 330 ml can 2')
        line = shopper.find_element(By.ID, 'line-COLA-330')
        line.find_element(By.NAME, 'text').send_keys('I took one can')
        line.find_element(By.ID, 'dispute-COLA-330').click()
        assert shopper.find_element(By.ID, 'checking').text.startswith('We are checking the line you disputed')
        assert shopper.find_element(By.ID, 'receipt-status').text == 'being checked'
        assert not shopper.find_elements(By.CSS_SELECTOR, 'form.dispute')

        # In the review queue, with the reason and the line, for any reviewer.
        dispute = layout.dispute_id(receipt_id, 1)
        queued = review_queue.read(bucket).get(review_queue.VisitKey('demo', dispute))
        assert queued is not None and payer.DISPUTED in queued.reasons
        sign_in(alice, base, 'alice', 'alice-password')
        row = alice.find_element(By.ID, f'row-demo-{dispute}')
        assert 'disputed' in row.text
        row.find_element(By.TAG_NAME, 'button').click()
        assert alice.find_element(By.ID, 'dispute').text == 'Cola 330 ml can (COLA-330) x2: "I took one can"'
        total = shown_total(alice)
        # 2 -> 1 in one edit (clear() alone would preview 0 and replace the field).
        alice.execute_script('const q = document.getElementById("qty-COLA-330"); q.value = "1";'
                             'q.dispatchEvent(new Event("change", {bubbles: true}));')
        WebDriverWait(alice, 10).until(lambda d: shown_total(d) != total)
        alice.find_element(By.TAG_NAME, 'body').send_keys('s')
        assert f'Settled {dispute}' in alice.find_element(By.ID, 'flash').text

        shopper.refresh()
        assert shopper.find_element(By.ID, 'receipt-status').text == 'final (corrected, version 2)'
        assert shopper.find_element(By.ID, 'total').text == '3.77 USD'
        assert deliverer.run_once() == 2
        sent = [json.loads(line) for line in deliveries.read_text().splitlines()]
        assert [(d['version'], d['receipt']['total_cents']) for d in sent] == [(1, 538), (2, 377)]

        # A token no visit has: nothing but a 404.
        shopper.get(f'{base}/receipt/{token}x')
        assert 'Not Found' in shopper.title and receipt_id not in shopper.page_source
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f'{base}/receipt/{token}x')
        assert refused.value.code == 404
    finally:
        server.stop()
