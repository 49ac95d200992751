#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver for the studio's browser test (tests/test_studio.py) when
# they are missing. Only the Debian archive is used: Selenium is pointed at these binaries, so nothing
# else is downloaded. Without root or apt-get it says so and exits 0 (the browser test then skips, naming
# the reason); a failed install is an error when $CI is set (CI must run the browser test), else a warning.
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install_browser.sh: chromium/chromedriver are missing and cannot be installed here (needs root" \
         "and apt-get); the studio's browser test will skip" >&2
    exit 0
fi
echo "install_browser.sh: installing chromium, chromium-driver and a font from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver \
        fonts-dejavu-core >/dev/null; then
    exit 0
fi
echo "install_browser.sh: apt-get could not install chromium; the studio's browser test will skip" >&2
[ -z "${CI:-}" ]
