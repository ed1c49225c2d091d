"""The review UI end to end in headless Chromium (selenium + chromedriver): sign in,
the queue, playing a clip the store's clip writer made, the proposed receipt with the events in doubt and their
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
from jwo_nodes.core.clips import NS, EventWindow, StampedFrame, clip_ref, write_clip  # noqa: E402

webdriver = pytest.importorskip('selenium.webdriver')
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason='needs the chromium and chromium-driver packages')


CLIP_FRAMES, CLIP_FPS = 20, 10
CLIP_EVENT = range(8, 13)        # the frames inside the event's window


def product_clip(clip_root: Path) -> Path:
    """A clip as clip_node writes one: 2 s of grey frames, brighter each frame, with
    frames 8 to 12 (0.8-1.2 s) inside the event's window."""
    import cv2
    import numpy as np
    t0 = 1_700_000_000 * NS
    frames = []
    for n in range(CLIP_FRAMES):
        ok, jpeg = cv2.imencode('.jpg', np.full((120, 160, 3), 40 + 8 * n, np.uint8))
        assert ok
        frames.append(StampedFrame(t0 + n * NS // CLIP_FPS, jpeg.tobytes()))
    window = EventWindow(frames[CLIP_EVENT[0]].stamp_ns, frames[CLIP_EVENT[-1]].stamp_ns)
    path = clip_root / clip_ref('demo', 'R00001', 'E1-1', 'cam_front')
    assert write_clip(path, frames, window, CLIP_FPS) == CLIP_FRAMES
    return path


@pytest.fixture
def site(tmp_path):
    bucket = DirBucket(tmp_path / 'bucket')
    clip_path = product_clip(tmp_path / 'clips')
    clip = clip_path.read_bytes()
    testing.seed_visits(bucket, tmp_path, [1, 2], clip=clip, clip_name=clip_path.name)
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


def seen_frame(driver, at_s: float) -> dict:
    """Seeks the clip's player to at_s, draws the frame it shows on a canvas and reads
    the RGBA of its centre and of its left edge."""
    return driver.execute_async_script('''
        const [at, done] = [arguments[0], arguments[arguments.length - 1]];
        const v = document.querySelector("video.clip");
        v.pause();
        v.addEventListener("seeked", () => {
            const canvas = document.createElement("canvas");
            [canvas.width, canvas.height] = [v.videoWidth, v.videoHeight];
            const g = canvas.getContext("2d");
            g.drawImage(v, 0, 0);
            const pixel = (x, y) => Array.from(g.getImageData(x, y, 1, 1).data);
            done({centre: pixel(v.videoWidth / 2, v.videoHeight / 2),
                  edge: pixel(0, v.videoHeight / 2), ready: v.readyState});
        }, {once: true});
        v.currentTime = at;
    ''', at_s)


def is_event_red(rgba) -> bool:
    red, green, blue, alpha = rgba
    return red > 170 and green < 90 and blue < 90 and alpha == 255


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
    # The clip is served (with ranges, for seeking) as the MP4 it is, and it plays.
    video = alice.find_element(By.CSS_SELECTOR, 'video.clip')
    fetched = alice.execute_async_script('''
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {headers: {Range: 'bytes=0-9'}}).then(
            r => r.arrayBuffer().then(b => done([r.status, b.byteLength,
                                                 r.headers.get('Content-Range'),
                                                 r.headers.get('Content-Type')])));
    ''', video.get_attribute('src'))
    assert fetched == [206, 10, f'bytes 0-9/{len(clip)}', 'video/mp4']
    assert alice.execute_script('return document.querySelector("video.clip").canPlayType('
                                '\'video/mp4; codecs="avc1.640028"\')') == 'probably'
    alice.execute_script('const v = document.querySelector("video.clip"); v.muted = true; v.play();')
    player = WebDriverWait(alice, 15).until(lambda d: d.execute_script(
        'const v = document.querySelector("video.clip");'
        'return (v.error || (v.readyState >= 2 && v.currentTime > 0))'
        '    && {error: v.error && v.error.message, duration: v.duration};'))
    assert player == {'error': None, 'duration': pytest.approx(CLIP_FRAMES / CLIP_FPS, abs=0.01)}
    # A frame inside the event's window and one before it, drawn as the player shows them.
    inside, before = (seen_frame(alice, (n + 0.5) / CLIP_FPS) for n in (CLIP_EVENT[1], 2))
    assert inside['ready'] >= 2 and before['ready'] >= 2
    assert inside['centre'][0] == pytest.approx(40 + 8 * CLIP_EVENT[1], abs=8)
    assert before['centre'][0] == pytest.approx(40 + 8 * 2, abs=8)
    assert is_event_red(inside['edge']) and not is_event_red(before['edge'])

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
