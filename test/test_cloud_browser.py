"""The review UI end to end in headless Chromium (selenium + chromedriver): sign in,
the queue, playing a clip, the proposed receipt with the events in doubt and their
candidates, a correction, and a second reviewer who is too late."""
import http.client
import json
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'cloud'))

from jwo_cloud import layout, review, testing  # noqa: E402
from jwo_cloud.bucket import DirBucket  # noqa: E402
from jwo_cloud.review_web import ReviewApp, ReviewServer  # noqa: E402

webdriver = pytest.importorskip('selenium.webdriver')
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason='needs the chromium and chromium-driver packages')


def webm_clip(path: Path) -> bytes:
    """A short real video (VP8/WebM) when OpenCV can write one, else placeholder bytes."""
    try:
        import cv2
        import numpy as np
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'VP80'), 10, (160, 120))
        for n in range(20):
            writer.write(np.full((120, 160, 3), (n * 12) % 255, np.uint8))
        writer.release()
        if path.exists() and path.stat().st_size > 0:
            return path.read_bytes()
    except Exception:
        pass
    return b'not really a video'


@pytest.fixture
def site(tmp_path):
    bucket = DirBucket(tmp_path / 'bucket')
    clip = webm_clip(tmp_path / 'clip.webm')
    testing.seed_visits(bucket, tmp_path, [1, 2], clip=clip)
    reviewers = tmp_path / 'reviewers.json'
    review.add_reviewer(reviewers, 'alice', 'alice-password')
    review.add_reviewer(reviewers, 'bob', 'bob-password')
    server = ReviewServer(ReviewApp(bucket, reviewers), '127.0.0.1', 0)
    server.start()
    yield server.url.rstrip('/'), bucket, clip
    server.stop()


@pytest.fixture
def browsers():
    from selenium.webdriver.chrome.service import Service
    started = []

    def start():
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tempfile.mkdtemp(prefix='jwo-chromium-')
        for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                     '--no-first-run', '--disable-background-networking',
                     '--disable-component-update', '--disable-sync',
                     '--autoplay-policy=no-user-gesture-required', f'--user-data-dir={profile}'):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        # A click that submits a form returns before the next page is there: look for
        # what only the next page has, waiting for it.
        driver.implicitly_wait(10)
        started.append((driver, profile))
        return driver
    yield start
    for driver, profile in started:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def sign_in(driver, base, name, password, ok=True):
    from selenium.webdriver.common.by import By
    driver.get(base + '/')
    assert urlsplit(driver.current_url).path == '/login'
    driver.find_element(By.ID, 'name').send_keys(name)
    driver.find_element(By.ID, 'password').send_keys(password)
    driver.find_element(By.ID, 'sign-in').click()
    # Wait for the next page (only it has #user / #error).
    assert driver.find_element(By.ID, 'user' if ok else 'error')


def test_review_in_the_browser(site, browsers):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    base, bucket, clip = site
    alice = browsers()

    sign_in(alice, base, 'alice', 'wrong-password', ok=False)
    assert 'wrong password' in alice.find_element(By.ID, 'error').text
    sign_in(alice, base, 'alice', 'alice-password')
    assert alice.find_element(By.ID, 'user').text == 'alice'
    rows = alice.find_elements(By.CSS_SELECTOR, '#pending tr')[1:]
    assert [r.find_element(By.TAG_NAME, 'a').text for r in rows] == ['R00001', 'R00002']
    assert 'ambiguous_attribution' in rows[0].text and '5.38 USD' in rows[0].text

    alice.find_element(By.ID, 'visit-demo-R00001').click()
    event = alice.find_element(By.ID, 'event-E1-1')
    assert 'V00001 (0.55)' in event.text and 'V99999 (0.45)' in event.text
    assert '2 x COLA-330' in event.text and 'S1-B1: -700 g' in event.text
    assert alice.find_element(By.ID, 'proposed-total').text == '5.38 USD'
    # The clip is served (with ranges, for seeking) and the player loads it.
    video = alice.find_element(By.CSS_SELECTOR, 'video.clip')
    fetched = alice.execute_async_script('''
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {headers: {Range: 'bytes=0-9'}}).then(
            r => r.arrayBuffer().then(b => done([r.status, b.byteLength,
                                                 r.headers.get('Content-Range')])));
    ''', video.get_attribute('src'))
    assert fetched == [206, 10, f'bytes 0-9/{len(clip)}']
    if clip.startswith(b'\x1a\x45\xdf\xa3'):    # a real WebM: it must play
        WebDriverWait(alice, 15).until(lambda d: d.execute_script(
            'const v = document.querySelector("video.clip"); return v.readyState >= 1 && v.duration > 0;'))
        alice.execute_script('document.querySelector("video.clip").muted = true;'
                             'return document.querySelector("video.clip").play();')
        WebDriverWait(alice, 15).until(lambda d: d.execute_script(
            'return document.querySelector("video.clip").currentTime > 0;'))

    bob = browsers()
    sign_in(bob, base, 'bob', 'bob-password')
    bob.get(base + '/visit/demo/R00001')

    qty = alice.find_element(By.ID, 'qty-1')           # CHOC-100: not taken
    qty.clear()
    qty.send_keys('0')
    alice.find_element(By.ID, 'sku-2').send_keys('GUM-10')
    alice.find_element(By.ID, 'name-2').send_keys('Chewing gum')
    added = alice.find_element(By.ID, 'qty-2')
    added.clear()
    added.send_keys('2')
    alice.find_element(By.ID, 'unit-2').send_keys('129')
    Select(alice.find_element(By.ID, 'event-choice-E1-1')).select_by_value('this_visit')
    alice.find_element(By.ID, 'note').send_keys('chocolate went back, gum taken')
    alice.find_element(By.ID, 'correct').click()
    assert 'Settled R00001' in alice.find_element(By.ID, 'flash').text
    rows = alice.find_elements(By.CSS_SELECTOR, '#pending tr')[1:]
    assert [r.find_element(By.TAG_NAME, 'a').text for r in rows] == ['R00002']

    final = json.loads(bucket.get(layout.final_key('demo', 'R00001')))
    assert [(l['sku'], l['quantity']) for l in final['lines']] == [('COLA-330', 2), ('GUM-10', 2)]
    assert (final['subtotal_cents'], final['tax_cents'], final['total_cents']) == (556, 46, 602)
    assert final['review']['reviewer'] == 'alice'
    assert final['review']['event_decisions'] == {'E1-1': 'this_visit'}

    # Bob still has the old page: his decision is refused, nothing is overwritten.
    bob.find_element(By.ID, 'confirm').click()
    assert 'already settled by alice' in bob.find_element(By.ID, 'error').text
    assert 'Settled by alice' in bob.find_element(By.ID, 'settled').text
    assert json.loads(bucket.get(layout.final_key('demo', 'R00001'))) == final

    bob.find_element(By.ID, 'logout').click()
    bob.find_element(By.ID, 'sign-in')            # the sign-in page: signed out
    bob.get(base + '/visit/demo/R00002')
    assert urlsplit(bob.current_url).path == '/login'


def test_pages_need_a_session_and_forms_a_token(site):
    base, bucket, _ = site
    host = urlsplit(base)
    for path in ('/', '/visit/demo/R00002', '/clip/demo/anything'):
        connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        connection.request('GET', path)
        answer = connection.getresponse()
        assert answer.status == 303 and answer.getheader('Location') == '/login'
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    connection.request('POST', '/login', 'name=alice&password=alice-password',
                       {'Content-Type': 'application/x-www-form-urlencoded'})
    answer = connection.getresponse()
    answer.read()
    cookie = answer.getheader('Set-Cookie').split(';')[0]
    assert 'HttpOnly' in answer.getheader('Set-Cookie')
    connection.request('POST', '/visit/demo/R00002', 'action=confirm&csrf=forged',
                       {'Content-Type': 'application/x-www-form-urlencoded', 'Cookie': cookie})
    answer = connection.getresponse()
    answer.read()
    assert answer.status == 403
    assert bucket.get(layout.final_key('demo', 'R00002')) is None
    forged = cookie.rsplit('.', 1)[0] + '.' + '0' * 64
    connection.request('GET', '/', headers={'Cookie': forged})
    assert connection.getresponse().status == 303
