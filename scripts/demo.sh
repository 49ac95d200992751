#!/usr/bin/env bash
# Sets up .venv if needed, then runs the main job offline on the CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
exec .venv/bin/latcomp info --example
