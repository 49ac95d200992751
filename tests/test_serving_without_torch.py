"""The main job and the first commands a user runs need no torch (scripts/demo.sh installs none)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

# `import torch` (and any torch submodule) raises ImportError, as in a `.[cpu]` install
NO_TORCH = """
import sys
from importlib.abc import MetaPathFinder

class NoTorch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (blocked: a serving install has no torch)")
        return None

sys.meta_path.insert(0, NoTorch())
from latcomp.cli import main
code = main(sys.argv[1:])
assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules), "torch got imported"
sys.exit(code)
"""


def latcomp_without_torch(*argv, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, argv)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_demo_runs_without_torch(tmp_path):
    done = latcomp_without_torch("demo", "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Image.open(tmp_path / "out" / "demo.png").size[0] > 0


@pytest.mark.parametrize("argv", [
    ["info"],
    ["examples", "."],
    ["--help"],
])
def test_first_commands_run_without_torch(tmp_path, argv):
    done = latcomp_without_torch(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_inpaint_of_a_photo_runs_without_torch(tmp_path):
    assert latcomp_without_torch("examples", ".", cwd=tmp_path).returncode == 0
    done = latcomp_without_torch("inpaint", "face_rgba.png", "-o", "filled.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Image.open(tmp_path / "filled.png").size == Image.open(tmp_path / "face_rgba.png").size
