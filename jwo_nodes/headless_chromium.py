"""Headless Chromium driven through ChromeDriver (selenium): the browser tests and `jwo
bench-live-cart` (Debian packages chromium and chromium-driver; tools/ensure_chromium.sh)."""
import shutil
import tempfile

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')


def available() -> bool:
    return bool(CHROMIUM and CHROMEDRIVER)


class HeadlessChromium:
    """One browser with a profile of its own (removed by quit)."""

    def __init__(self, extra_flags=()):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        self._profile = tempfile.mkdtemp(prefix='jwo-chromium-')
        for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                     '--no-first-run', '--disable-background-networking',
                     '--disable-component-update', '--disable-sync',
                     f'--user-data-dir={self._profile}', *extra_flags):
            options.add_argument(flag)
        try:
            self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        except Exception:
            shutil.rmtree(self._profile, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(30)

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self._profile, ignore_errors=True)
