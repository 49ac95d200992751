"""The real tritonclient, in a virtual environment of its own, for the tests that check latcomp against it.

tritonclient[grpc] 2.73 requires protobuf < 7, while the grpcio-health-checking the server installs requires
protobuf >= 7.35, so they cannot share one environment (and tritonclient stays out of latcomp's install).
Like any Triton user, the tests run the client in its own process: `run_tool(command, ...)` runs
tests/tritonclient_tool.py with that environment's Python and returns its JSON answer.

The environment is made once with pip (about a minute; PyPI is reached as by scripts/setup.sh) under
$LATCOMP_TEST_ENVS (default ~/.cache/latcomp/test-envs), named after the pinned requirement, and reused by
later runs; a lock keeps concurrent test processes from building it twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REQUIREMENT = "tritonclient[grpc]==2.73.0"
TOOL = Path(__file__).resolve().with_name("tritonclient_tool.py")
ENVS = Path(os.environ.get("LATCOMP_TEST_ENVS", Path.home() / ".cache" / "latcomp" / "test-envs"))


def python() -> Path:
    """The Python of the tritonclient environment, built first if needed (RuntimeError if pip fails)."""
    env = ENVS / REQUIREMENT.replace("[", "-").replace("]", "").replace("==", "-")
    interpreter, done = env / "bin" / "python", env / ".complete"
    ENVS.mkdir(parents=True, exist_ok=True)
    with open(ENVS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return interpreter
        shutil.rmtree(env, ignore_errors=True)  # a half-built environment from an interrupted run
        started = time.monotonic()
        steps = (
            [sys.executable, "-m", "venv", str(env)],
            [str(interpreter), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", REQUIREMENT],
        )
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"cannot build the tritonclient test environment in {env}: "
                                   f"{' '.join(step)} failed:\n{result.stdout}{result.stderr}")
        done.write_text(f"{REQUIREMENT}\nbuilt in {time.monotonic() - started:.0f} s\n")
        return interpreter


def run_tool(*args: str, timeout: float = 120.0) -> dict:
    """Runs tritonclient_tool.py in the tritonclient environment; its JSON output, or AssertionError."""
    command = [str(python()), str(TOOL), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"tritonclient_tool {args[0]} failed:\n{result.stdout}{result.stderr}"
    return json.loads(result.stdout)
