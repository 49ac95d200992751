#!/usr/bin/env bash
# Creates .venv (once) and installs latcomp into it; sourced by demo.sh and test.sh:
#   source scripts/setup.sh serve   # what serving needs, .[cpu]: numpy, Pillow, grpcio, onnxruntime; no torch
#   source scripts/setup.sh full    # what the tests need, .[train,cpu,dev], with the CPU build of PyTorch
# Both use the same .venv, in either order: `full` completes a `serve` install, and `serve` finds nothing to
# do after `full`. A step runs again when pyproject.toml is newer than its stamp in .venv.
#
# PyTorch, on Linux x86-64: torch==$TORCH_VERSION+cpu, never the multi-GB CUDA build that PyPI serves for
# Linux. It comes from PyTorch's CPU wheel index (env LATCOMP_TORCH_INDEX) when that index answers within
# 5 s, else from pip's configured sources (a mirror, find-links), so a build machine that reaches only its
# own mirror installs as fast as before. Elsewhere (macOS, ARM) PyPI's torch is the CPU build already.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LATCOMP_SETUP=${1:-full}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
TORCH_INDEX=${LATCOMP_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
SETUP_START=$(date +%s)
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

step() { echo "[setup +$(($(date +%s) - SETUP_START))s] $*" >&2; }

fresh() {  # the stamp $1 exists and is newer than pyproject.toml
    [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]
}

install_torch() {
    if .venv/bin/python -c "import torch" 2>/dev/null; then
        step "PyTorch $(.venv/bin/python -c 'import torch; print(torch.__version__)') is installed already"
        return
    fi
    local spec="torch==$TORCH_VERSION" sources=()
    if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
        spec="torch==$TORCH_VERSION+cpu"
        if .venv/bin/python - "$TORCH_INDEX" 2>/dev/null <<'PY'
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5)
PY
        then
            sources=(--extra-index-url "$TORCH_INDEX")
        else
            step "PyTorch's CPU index $TORCH_INDEX does not answer: looking in pip's configured sources"
        fi
    fi
    step "installing PyTorch ($spec, the CPU build: about 200 MB download)"
    if ! "${PIP[@]}" "${sources[@]}" "$spec"; then
        echo "scripts/setup.sh: could not install $spec. Set LATCOMP_TORCH_INDEX to a reachable mirror of" \
             "PyTorch's CPU wheel index (https://download.pytorch.org/whl/cpu)." >&2
        return 1
    fi
}

if [ ! -x .venv/bin/python ]; then
    step "creating .venv ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv .venv
fi
case "$LATCOMP_SETUP" in
    serve)
        if ! fresh .venv/.latcomp-serving && ! fresh .venv/.latcomp-installed; then
            step "installing latcomp for serving: pip install -e '.[cpu]' (numpy, Pillow, grpcio, onnxruntime; no torch)"
            "${PIP[@]}" -e ".[cpu]"
            touch .venv/.latcomp-serving
        fi
        ;;
    full)
        if ! fresh .venv/.latcomp-installed; then
            install_torch
            step "installing latcomp with training, serving and test tools: pip install -e '.[train,cpu,dev]'"
            "${PIP[@]}" -e ".[train,cpu,dev]"
            touch .venv/.latcomp-serving .venv/.latcomp-installed
        fi
        ;;
    *)
        echo "scripts/setup.sh: unknown set-up '$LATCOMP_SETUP' (serve or full)" >&2
        return 2 2>/dev/null || exit 2
        ;;
esac
step ".venv is ready ($LATCOMP_SETUP)"
