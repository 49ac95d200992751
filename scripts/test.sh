#!/usr/bin/env bash
# Sets up .venv with everything the tests need if needed (the CPU build of PyTorch included), then runs the
# whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh full
bash scripts/install_browser.sh  # Debian chromium + chromedriver for tests/test_studio.py, when missing
echo "[test] pytest $*" >&2
exec .venv/bin/python -m pytest "$@"
