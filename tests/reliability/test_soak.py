"""Soak: steady open-loop load at 80 % of the measured peak on a server in its own process (real engine,
small bundle), through `latcomp bench soak`: no errors, and the server's resident memory stays put.

Short here (a few seconds); the long form runs LATCOMP_SOAK_S seconds (default 300):
    pytest -m long tests/reliability -k soak        or        latcomp bench soak BUNDLE --duration 300
"""

from __future__ import annotations

import json

import pytest

from latcomp.cli import main

from .support import env_number


def _soak(bundle, tmp_path, duration: float, peak_seconds: float) -> dict:
    out = tmp_path / "soak.json"
    command = ["bench", "soak", str(bundle), "--backend", "ort", "--duration", str(duration)]
    command += ["--peak-seconds", str(peak_seconds), "--load-fraction", "0.8", "--json", str(out), "--quiet"]
    status = main(command)
    assert out.is_file(), f"latcomp bench soak failed (status {status}); see its stderr"
    result = json.loads(out.read_text())
    assert status == 0, result["soak"]["errors"]  # 1: the soak had errors
    return result


def _check(result: dict, growth_limit_mb: float) -> None:
    peak, soak, memory = result["peak"], result["soak"], result["memory"]
    assert not peak["errors"] and not soak["errors"], (peak["errors"], soak["errors"])
    assert soak["sent"] == soak["ok"] > 0 and soak["dropped_by_client"] == 0
    assert soak["server_status_counts"] == {"OK": soak["ok"]}  # the server counted the same
    assert soak["throughput_rps"] > 0.5 * peak["throughput_rps"], "the server fell behind 80 % of its peak"
    assert memory["rss_soak_start_mb"] > 0 and memory["rss_end_mb"] > 0
    assert memory["growth_during_soak_mb"] < growth_limit_mb, memory["growth_during_soak_mb"]


def test_soak_short(small_bundle, tmp_path, capsys):
    result = _soak(small_bundle, tmp_path, duration=6, peak_seconds=3)
    _check(result, growth_limit_mb=64)
    assert "## Soak" in capsys.readouterr().out


@pytest.mark.long
def test_soak_long(small_bundle, tmp_path, capsys):
    duration = env_number("LATCOMP_SOAK_S", 300)
    result = _soak(small_bundle, tmp_path, duration=duration, peak_seconds=10)
    _check(result, growth_limit_mb=64)
    trend = result["memory"]["trend_mb_per_min"]
    assert trend is None or trend < 3.0, f"RSS still growing {trend:.2f} MiB/min in the second half"
    print(capsys.readouterr().out)
