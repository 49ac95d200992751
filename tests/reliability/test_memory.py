"""Memory bounded by what the server admits, not by what clients send.

Small PNGs that declare large canvases (the cheapest way to make a server allocate) are charged against the
working-memory budget from their headers, before decoding: what does not fit is refused RESOURCE_EXHAUSTED,
a raw answer over the message limit is refused before any compute, and under 16 concurrent worst-case
requests the server's peak RSS stays under its RSS after warm-up plus the budget plus a fixed margin.
Short form: --max-pixels 1024^2 and a 192 MiB budget; long form: the defaults (4096^2, 1280 MiB).
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from latcomp.service.admission import AdmissionLimits
from latcomp.service.client import AsyncClient, Client, ServiceError

from .support import image, serve, start_process, stop_process, wait_for_port

CODE = grpc.StatusCode
MARGIN_MIB = 160  # allocator arenas of the io threads, grpc buffers of the requests in flight


def worst_case_png(side: int) -> bytes:
    """A few KB of RGBA PNG declaring side x side pixels, a hole in its alpha: inpainted at canvas size with
    the known pixels pasted back, the most memory per request byte."""
    rgba = np.full((side, side, 4), 200, np.uint8)
    rgba[side // 4 : side // 2, side // 4 : side // 2, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def test_the_budget_refuses_before_decoding_and_is_released(engine):
    data = worst_case_png(1024)
    options = {"size": "canvas", "preserve_known": True}
    limits = AdmissionLimits(memory_budget_mb=100)  # one such edit fits (~77 MiB), not two
    with serve(engine, max_pixels=1024 * 1024, admission=limits, max_message_mb=1) as server:
        admission = server.server.admission

        async def burst() -> list:
            async with AsyncClient(server.target, timeout=120) as client:
                return await asyncio.gather(*(client.inpaint(data, **options) for _ in range(8)),
                                            return_exceptions=True)  # fmt: skip

        outcomes = asyncio.run(burst())
        refused = [o for o in outcomes if isinstance(o, ServiceError)]
        answered = [o for o in outcomes if not isinstance(o, BaseException)]
        assert answered and all(o.image.shape == (1024, 1024, 3) for o in answered)
        assert refused and all(o.code == CODE.RESOURCE_EXHAUSTED and "budget" in o.details for o in refused)
        assert len(answered) + len(refused) == 8
        assert server.server.metrics.refused.labels("memory")._value.get() == len(refused)
        assert admission.reserved == 0 and admission.edits == 0
        with Client(server.target) as client:
            # more than the whole budget (three layers: ~101 MiB): refused whatever else runs
            with pytest.raises(ServiceError) as error:
                client.composite([data, data, data], **options)
            assert error.value.code == CODE.RESOURCE_EXHAUSTED and "whole budget" in error.value.details
            # a raw answer over the 1 MiB message limit: refused before any compute
            before = server.server.batcher.stats()["requests"]
            with pytest.raises(ServiceError) as error:
                client.inpaint(data, size="canvas", format="raw")
            assert error.value.code == CODE.RESOURCE_EXHAUSTED and "message limit" in error.value.details
            assert server.server.batcher.stats()["requests"] == before
            assert client.inpaint(image(64, 64)).image.shape == (64, 64, 3)  # and it serves on


def _status_mib(pid: int, field: str) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) / 1024


def peak_rss_under_worst_case_load(bundle, tmp_path, side: int, budget_mb: float, concurrency: int = 16,
                                   rounds: int = 3, extra_args: tuple = ()) -> dict:  # fmt: skip
    """Serves `bundle` in a subprocess with --max-pixels side^2 and the budget, sends `rounds` bursts of
    `concurrency` worst-case requests, and returns the RSS figures (MiB) and the outcomes."""
    log_path = tmp_path / "serve.log"
    code = "import sys\nfrom latcomp.cli import main\nsys.exit(main(sys.argv[1:]))"
    args = ["serve", str(bundle), "--backend", "ort", "--host", "127.0.0.1", "--port", "0",
            "--drain-delay-s", "0", "--max-pixels", str(side * side), "--memory-budget-mb", str(budget_mb),
            *extra_args]  # fmt: skip
    process = start_process(code, *args, log_path=log_path)
    data = worst_case_png(side)
    try:
        target = f"127.0.0.1:{wait_for_port(log_path, process)}"
        with Client(target) as probe:
            probe.wait_ready(120)
        warm = _status_mib(process.pid, "VmRSS")
        codes: dict[str, int] = {}
        started = time.monotonic()

        async def burst() -> None:
            async with AsyncClient(target, timeout=600) as client:
                outcomes = await asyncio.gather(
                    *(client.inpaint(data, size="canvas", preserve_known=True) for _ in range(concurrency)),
                    return_exceptions=True,
                )
            for outcome in outcomes:
                name = outcome.code.name if isinstance(outcome, ServiceError) else "OK"
                assert not isinstance(outcome, BaseException) or isinstance(outcome, ServiceError), outcome
                codes[name] = codes.get(name, 0) + 1

        for _ in range(rounds):
            asyncio.run(burst())
        peak = _status_mib(process.pid, "VmHWM")
        assert process.poll() is None, log_path.read_text()
    finally:
        stop_process(process)
    return {"warm_mib": warm, "peak_mib": peak, "budget_mib": budget_mb, "png_bytes": len(data),
            "codes": codes, "seconds": time.monotonic() - started}  # fmt: skip


def _check(result: dict) -> None:
    print(f"peak RSS {result['peak_mib']:.0f} MiB (after warm-up {result['warm_mib']:.0f} MiB, budget "
          f"{result['budget_mib']:.0f} MiB), {result['png_bytes']} B PNGs, outcomes {result['codes']}, "
          f"{result['seconds']:.1f} s")  # fmt: skip
    assert set(result["codes"]) <= {"OK", "RESOURCE_EXHAUSTED"} and result["codes"].get("OK"), result
    assert result["peak_mib"] <= result["warm_mib"] + result["budget_mib"] + MARGIN_MIB, result


def test_peak_rss_under_sixteen_worst_case_requests(small_bundle, tmp_path):
    _check(peak_rss_under_worst_case_load(small_bundle, tmp_path, side=1024, budget_mb=192))


@pytest.mark.long
def test_peak_rss_under_sixteen_worst_case_requests_at_the_default_limits(small_bundle, tmp_path):
    _check(peak_rss_under_worst_case_load(small_bundle, tmp_path, side=4096, budget_mb=1280, rounds=2))
