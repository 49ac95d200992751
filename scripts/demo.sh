#!/usr/bin/env bash
# Sets up .venv if needed, then runs the main job offline on the CPU: the shipped model served over gRPC,
# a composite and an inpaint of procedural faces sent to it, the images written to demo_out/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
exec .venv/bin/latcomp demo --out demo_out "$@"
