#!/usr/bin/env bash
# Regenerates the committed stubs (latcomp/**/*_pb2*.py*) from protos/ after a .proto changed.
# grpcio-tools is pinned to the version whose gencode matches our grpcio/protobuf floors, and it pins its own
# protobuf, so it runs from a venv of its own (build/protoc-venv, made once) rather than .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
tools=$(sed -n 's/^GRPCIO_TOOLS = "\(.*\)"$/\1/p' latcomp/service/_stubgen.py)
venv=build/protoc-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip show "grpcio-tools" 2>/dev/null | grep -qx "Version: $tools"; then
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "grpcio-tools==$tools"
fi
"$venv/bin/python" -m latcomp.service._stubgen "$@"
