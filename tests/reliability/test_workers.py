"""`latcomp serve --workers N` and the null engine against real processes on 127.0.0.1.

Two workers share one port (SO_REUSEPORT): connections spread over them, each answers health and its own
metrics (--metrics-port + i), auth and bad requests behave as with one server, and SIGTERM to the
supervisor drains both under load: every call ends OK or UNAVAILABLE, exit status 0.
"""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request

import grpc
import numpy as np
import pytest

from latcomp.runtime import open_bundle
from latcomp.service.client import AsyncClient, Client, ServiceError, inpaint_request
from latcomp.service.proto import ComposerStub

from .support import image, start_process, stop_process, until
from .test_shutdown import _free_port

SERVE = "import sys\nfrom latcomp.cli import main\nsys.exit(main(sys.argv[1:]))"
TOKEN = "workers-test-token-0123456"


def _requests_counted(metrics_port: int) -> float:
    request = urllib.request.Request(f"http://127.0.0.1:{metrics_port}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    pattern = r'^latcomp_requests_total\{[^}]*method="Inpaint"[^}]*\} (\S+)'
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def test_workers_share_the_port_and_drain_together(small_bundle, tmp_path, monkeypatch):
    port, metrics = _free_port(), _free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    monkeypatch.delenv("LATCOMP_AUTH_TOKEN", raising=False)
    log_path = tmp_path / "serve.log"
    process = start_process(SERVE, "serve", str(small_bundle), "--backend", "ort", "--host", "127.0.0.1",
                            "--port", str(port), "--metrics-port", str(metrics), "--workers", "2",
                            "--drain-delay-s", "0.5", "--auth-token-file", str(token_file),
                            log_path=log_path)  # fmt: skip
    try:
        until(lambda: log_path.read_text().count("SERVING") >= 2, 120, "two workers SERVING")
        target = f"127.0.0.1:{port}"
        with Client(target, token=TOKEN) as client:
            size = client.model_info()["resolution"]
        bearer = (("authorization", f"Bearer {TOKEN}"),)
        for index in range(16):  # new connections (distinct channel arguments): the kernel spreads them
            with grpc.insecure_channel(target, options=[("latcomp.test.channel", f"w{index}")]) as channel:
                stub = ComposerStub(channel)
                stub.Inpaint(inpaint_request(image(size, size, index)), metadata=bearer, timeout=30)
                with pytest.raises(grpc.RpcError) as error:
                    stub.Inpaint(inpaint_request(image(size, size)), timeout=30)
                assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        counts = [_requests_counted(metrics + index) for index in range(2)]
        assert sum(counts) == 32 and min(counts) > 0, counts  # both served; each its own metrics port

        outcomes: list = []

        async def load() -> None:
            async def worker(client: AsyncClient, index: int, stop: list) -> None:
                picture = image(2 * size, 2 * size, index)
                while not stop:
                    try:
                        await client.inpaint(picture)
                        outcomes.append("OK")
                    except ServiceError as error:
                        outcomes.append(error.code.name)
                        await asyncio.sleep(0.05)

            stop: list = []
            clients = [AsyncClient(target, token=TOKEN) for _ in range(4)]  # separate connections
            tasks = [asyncio.ensure_future(worker(clients[i % 4], i, stop)) for i in range(12)]
            await asyncio.sleep(1.0)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(2.5)
            stop.append(True)
            await asyncio.gather(*tasks)
            for client in clients:
                await client.close()

        asyncio.run(load())
        status = process.wait(60)
    finally:
        stop_process(process)
    log = log_path.read_text()
    assert status == 0, log
    assert set(outcomes) <= {"OK", "UNAVAILABLE"} and "OK" in outcomes, sorted(set(outcomes))
    assert log.count("stopped") == 2, log


def test_the_null_engine_is_a_real_engine_with_the_bundle_shapes(small_bundle):
    with open_bundle(small_bundle, backend="null") as null, open_bundle(small_bundle, backend="ort") as real:
        assert (null.resolution, null.latent_shape, null.max_batch) == (real.resolution, real.latent_shape,
                                                                         real.max_batch)  # fmt: skip
        size = real.resolution
        images = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), np.uint8)
        masks = np.full((3, size, size, 1), 255, np.uint8)
        out, latents = null.run(images, masks)
        expected, expected_latents = real.run(images, masks)
        assert out.shape == expected.shape and out.dtype == expected.dtype
        assert latents.shape == expected_latents.shape and latents.dtype == expected_latents.dtype
        samples, sample_latents = null.sample([1, 2])
        assert samples.shape == (2, size, size, 3) and sample_latents.shape == (2, *real.latent_shape)
