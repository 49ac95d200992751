"""`latcomp info` on a bundle directory and on a running server (checkpoints: test_checkpoint.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from latcomp.runtime import open_bundle
from latcomp.service.server import ServerConfig, ServerThread


def run_info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latcomp", "info", *args, "--json"], capture_output=True,
                          text=True, timeout=120, check=False)


def test_info_describes_a_bundle_and_refuses_a_tampered_one(small_bundle, tmp_path):
    bundle = shutil.copytree(small_bundle, tmp_path / "bundle")
    result = run_info(str(bundle))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["name"] == "small-stylegan2" and info["generator"] == "stylegan2"
    assert "composer" in info["graphs"]
    with (bundle / "weights.bin").open("r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = run_info(str(bundle))
    assert result.returncode == 2 and "weights.bin" in result.stderr


def test_info_asks_a_running_server(small_bundle):
    engine = open_bundle(small_bundle, backend="ort")
    with ServerThread(engine, ServerConfig(host="127.0.0.1", port=0, metrics_port=0)) as server:
        result = run_info("--server", server.target)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["health"] == "SERVING" and info["backend"] == "ort" and info["resolution"] == 32
    result = run_info("--server", "127.0.0.1:1")
    assert result.returncode == 2 and "127.0.0.1:1" in result.stderr


def test_demo_serves_a_bundle_and_writes_the_images(small_bundle, tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "latcomp", "demo", "--bundle", str(small_bundle), "--out", str(out),
               "--sheet-scale", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    for name in ("composite_input.png", "composite_result.png", "inpaint_result.png", "demo.png"):
        assert (out / name).is_file(), name
    report = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    size = report["resolution"]
    assert Image.open(out / "composite_result.png").size == (size, size)  # the model's own pixels
    sheet = np.asarray(Image.open(out / "demo.png"))
    assert sheet.shape[:2] == (2 * 3 * size + 3 * 4, 5 * 3 * size + 6 * 4)  # 2 x 5 tiles, 3x, 4 px gaps
    tile = sheet[4 : 4 + 3 * size, 4 + 4 * (3 * size + 4) :][:, : 3 * size]  # the composite, enlarged
    assert np.array_equal(tile[::3, ::3], np.asarray(Image.open(out / "composite_result.png").convert("RGB")))
    assert report["composite_ms"]["compute_ms"] > 0
