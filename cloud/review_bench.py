"""How long a scripted reviewer needs per visit in the review console, and what a queue
page costs in bucket requests (a benchmark, not a test):

    PYTHONPATH=cloud .venv/bin/python cloud/review_bench.py [SCENARIO ...] [--store STORE.yaml]

The visits are the product's own (product_visits.py: fusion's review requests and the
clips of their events through the uplink and the ingest into a directory bucket that
counts requests). A headless Chromium reviewer then works the queue with the keys: `n`
on the queue claims and opens the oldest visit; on each visit it waits for the first
clip, plays it from its cue to just past the event's window, and presses `s` (settle as
shown, and on to the next visit), until the queue is empty. Printed: the wall time per
visit (from one visit page shown to the next), the console's own figure (claim to
decision), and the bucket requests of a queue page, a visit page, and a settle with the
next visit's page.
"""
import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from jwo_cloud import layout, review, review_queue, testing  # noqa: E402
from jwo_cloud.bucket import DirBucket  # noqa: E402
from jwo_cloud.review_web import ReviewServer, ReviewSettings, create_app  # noqa: E402
from product_visits import STORE, send_product_visits  # noqa: E402

SCENARIOS = [REPO / 'test' / 'scenarios' / f'{name}.yaml'
             for name in ('hard-1', 'hard-2', 'hard-3', 'hard-4', 'medium-0')]
MARGIN_S = 3.0     # clip_node's default margin_s
# After the event's window the reviewer watches this much more.
AFTER_EVENT_S = 0.5


def watch_event(driver) -> None:
    """Waits for the first clip to be playable and plays it from its cue to just past
    the event's window (the cue is a second before it)."""
    driver.set_script_timeout(60)
    driver.execute_async_script('''
        const [until, done] = [arguments[0], arguments[arguments.length - 1]];
        const v = document.querySelector("video.clip");
        if (!v) { done(); return; }
        const end = Number(v.dataset.cue) + until;
        const watch = () => {
            v.addEventListener("timeupdate", function check() {
                if (v.currentTime >= end || v.ended) { v.removeEventListener("timeupdate", check); v.pause(); done(); }
            });
            v.play();
        };
        if (v.readyState >= 3) watch(); else v.addEventListener("canplay", watch, {once: true});
    ''', 1.0 + AFTER_EVENT_S + window_s(driver))


def window_s(driver) -> float:
    text = driver.execute_script('const f = document.querySelector("p.facts");'
                                 'return f ? f.textContent : "";')
    over = text.rsplit('over ', 1)[-1].split(' s')[0] if 'over ' in text else '0'
    return float(over)


@dataclass(frozen=True)
class Requests:
    """Bucket requests made while something happened: the page's own, and the player's
    (each range it fetches of a clip is a HEAD and a GET)."""
    page: int
    clips: int


def measure_requests(bucket, action) -> Requests:
    before = len(bucket.requests)
    action()
    made = bucket.requests[before:]
    clips = 2 * sum(operation == 'get' and '/clips/' in key for operation, key in made)
    return Requests(len(made) - clips, clips)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('scenarios', nargs='*', default=[str(s) for s in SCENARIOS])
    parser.add_argument('--store', default=str(STORE), help='store config (default %(default)s)')
    args = parser.parse_args(argv)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import WebDriverWait

    from jwo_nodes import headless_chromium
    work = Path(tempfile.mkdtemp(prefix='jwo-review-bench-'))
    bucket = testing.CountingBucket(DirBucket(work / 'bucket'))
    run = send_product_visits(bucket, work, args.scenarios, MARGIN_S, Path(args.store))
    print(f'{len(run.receipts)} receipts, {len(run.reviews)} visits in review, {run.clips} clips '
          f'from {len(args.scenarios)} scenarios in {run.seconds:.1f} s', flush=True)
    review.Reviewers(work / 'reviewers.json').add('bench', 'bench-password')
    app = create_app(bucket, work / 'reviewers.json', b'b' * 32, ReviewSettings(clip_margin_s=MARGIN_S))
    server = ReviewServer(app, '127.0.0.1', 0)
    base = server.start().rstrip('/')
    browser = headless_chromium.HeadlessChromium(('--autoplay-policy=no-user-gesture-required',))
    driver = browser.driver
    driver.implicitly_wait(15)
    try:
        driver.get(base + '/login')
        driver.find_element(By.ID, 'name').send_keys('bench')
        driver.find_element(By.ID, 'password').send_keys('bench-password')
        driver.find_element(By.ID, 'sign-in').click()
        driver.find_element(By.ID, 'user')
        queue_page = measure_requests(bucket, lambda: (driver.get(base + '/'),
                                                       driver.find_element(By.ID, 'review-next')))
        driver.find_element(By.TAG_NAME, 'body').send_keys('n')
        driver.find_element(By.ID, 'settle')
        visit_page = measure_requests(bucket, lambda: (driver.refresh(),
                                                       driver.find_element(By.ID, 'settle')))
        per_visit, cycles = [], []

        def one_visit():
            watch_event(driver)
            page = driver.find_element(By.TAG_NAME, 'html')
            driver.find_element(By.TAG_NAME, 'body').send_keys('s')
            WebDriverWait(driver, 30).until(staleness_of(page))
            driver.find_element(By.ID, 'flash')           # the next visit (or the queue)
        while '/visit/' in driver.current_url:
            started = time.perf_counter()
            cycles.append(measure_requests(bucket, one_visit))
            per_visit.append(time.perf_counter() - started)
    finally:
        browser.quit()
        server.stop()
    figures = review.figures(review.labelled_rows(bucket))
    left = len(review_queue.read(bucket).entries)
    print(f'settled {len(per_visit)} visits ({left} left in the queue)')
    print(f'time per visit (browser, visit page to the next): median {statistics.median(per_visit):.2f} s, '
          f'max {max(per_visit):.2f} s')
    print(f'time to settle (console, claim to decision): median {figures.overall.median_s:.2f} s, '
          f'90th percentile {figures.overall.p90_s:.2f} s')
    for reason, by in sorted(figures.by_reason.items()):
        print(f'    {reason:24s} {by.visits:3d} visits, median {by.median_s:.2f} s')
    print(f'bucket requests: a queue page {queue_page.page} (GET {layout.QUEUE_INDEX}); a visit page '
          f'{visit_page.page}; per visit (settle, claim the next, its page) median '
          f'{statistics.median(r.page for r in cycles):.0f}, and the player\'s clip ranges median '
          f'{statistics.median(r.clips for r in cycles):.0f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
