"""scripts/gpu_check.sh without a GPU: its syntax, its usage errors, --help and --dry-run (the real run
needs a CUDA machine; its results go to BENCHMARKS.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env, check=False)


def test_syntax():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args", [(), ("--bogus", "out"), ("a", "b")])
def test_usage_errors_exit_2(args):
    result = _run(*args)
    assert result.returncode == 2 and "usage: scripts/gpu_check.sh" in result.stderr


def test_help():
    result = _run("--help")
    assert result.returncode == 0 and "--dry-run" in result.stdout and "StyleGAN2-1024" in result.stdout


def test_dry_run_prints_the_plan_without_a_gpu(tmp_path):
    result = _run("--dry-run", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("stylegan2-256 batch 1: torch-fp16", "stylegan2-1024 batch 64: torch-fp16",
                 "stylegan2-1024 batch 64: ort-cuda-fp32"):
        assert line in result.stdout
    assert (tmp_path / "out" / "gpu_check.log").is_file()


def test_gpu_sizes_arguments():
    from latcomp.bench import gpu_sizes

    assert gpu_sizes.main(["unused", "--dry-run", "--models", "progan-256", "--batches", "1,2"]) == 0
    assert gpu_sizes.main(["unused", "--dry-run", "--models", "stylegan2-999"]) == 2
    assert gpu_sizes.main(["unused", "--dry-run", "--batches", "1,x"]) == 2
    assert gpu_sizes.main(["unused", "--dry-run", "--budget-s", "0"]) == 2


def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the real run belongs to gpu_check itself")
    result = _run(str(tmp_path / "out"))
    assert result.returncode == 2 and "no CUDA GPU is visible" in result.stdout
