#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
bash scripts/install_browser.sh  # Debian chromium + chromedriver for tests/test_studio.py, when missing
exec .venv/bin/python -m pytest "$@"
