#!/usr/bin/env bash
# The main job, offline on the CPU: sets up .venv for serving if needed (no torch), then serves the shipped
# model over gRPC, sends it a composite and an inpaint of procedural faces and writes the images to demo_out/.
# Extra arguments go to `latcomp demo` (see `latcomp demo --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh serve
echo "[demo] latcomp demo --out demo_out $*" >&2
exec .venv/bin/latcomp demo --out demo_out "$@"
