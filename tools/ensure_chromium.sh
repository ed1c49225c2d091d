#!/usr/bin/env bash
# The review UI's end-to-end test drives headless Chromium through ChromeDriver
# (Debian packages chromium + chromium-driver). Installs them when missing and we may.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing chromium and chromium-driver (browser test of the review UI)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    && exit 0
fi
echo "warning: chromium/chromedriver missing and not installable here: the browser test will be skipped" >&2
echo "         (Debian/Ubuntu: sudo apt-get install chromium chromium-driver)" >&2
exit 0
