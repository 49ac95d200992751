#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver (for tests/test_studio.py) when they are missing.
# Needs root and apt (CI has both); elsewhere it says what is missing and exits 0, and the studio's
# browser test then skips with that reason. Nothing is downloaded outside the Debian archive.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install_browser.sh: chromium/chromedriver missing and cannot install them (needs root and apt-get);" \
         "the browser test will skip" >&2
    exit 0
fi
echo "install_browser.sh: installing chromium and chromium-driver from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
