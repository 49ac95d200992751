"""Several models: `latcomp serve --model-repository DIR`, `model` picking one, and reloads (SIGHUP, polling,
ModelRepository.reload) that add, replace and remove models without failing a request. Real bundles, real
servers on 127.0.0.1: the shipped faces64 (64 px) and the small exported test bundle (32 px)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from reliability.support import wait_for_port

from latcomp.inference import grpc_service_pb2 as kpb
from latcomp.inference import grpc_service_pb2_grpc as kpb_grpc
from latcomp.runtime.bundle import DEFAULT_BUNDLE, read_manifest
from latcomp.service.client import AsyncClient, Client, ServiceError
from latcomp.service.server import ServerConfig, ServerThread

REPO = Path(__file__).resolve().parents[1]


def link(repository: Path, name: str, bundle: Path) -> None:
    """Points repository/name at bundle atomically (a symlink renamed over the old one), as an operator
    would: requests see the old model or the new one, never a half-copied directory."""
    staged = repository / f".{name}.new"
    staged.unlink(missing_ok=True)
    staged.symlink_to(bundle, target_is_directory=True)
    os.replace(staged, repository / name)


@pytest.fixture
def repository(tmp_path, small_bundle) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    link(root, "faces", DEFAULT_BUNDLE)
    link(root, "small", small_bundle)
    return root


def serve_repository(root: Path, **config) -> ServerThread:
    settings = {"backend": "ort", "instances": 1, "threads": 1, "drain_delay_s": 0.0, **config}
    return ServerThread(None, ServerConfig(host="127.0.0.1", port=0, model_repository=str(root), **settings))


def test_every_bundle_is_served_by_name_and_the_default_answers_the_rest(repository, small_bundle):
    with serve_repository(repository, default_model="small") as server, Client(server.target) as client:
        assert server.server.models.names() == ["faces", "small"]
        faces, small = client.model_info("faces"), client.model_info("small")
        assert (faces["name"], faces["resolution"]) == ("faces", 64)
        assert (small["name"], small["resolution"]) == ("small", 32)
        assert client.model_info()["name"] == "small"  # "" = --default-model
        image, mask = np.zeros((48, 48, 3), np.uint8), np.full((48, 48), 255, np.uint8)
        assert client.inpaint(image, mask, model="faces", return_latent=True).latent.shape == (10, 128)
        small_latent = client.inpaint(image, mask, return_latent=True).latent.shape
        assert small_latent != (10, 128)
        with pytest.raises(ServiceError) as unknown:
            client.model_info("nope")
        assert unknown.value.code == grpc.StatusCode.NOT_FOUND and "'faces', 'small'" in unknown.value.details
        with grpc.insecure_channel(server.target) as channel:  # KServe: one model per bundle too
            stub = kpb_grpc.GRPCInferenceServiceStub(channel)
            metadata = stub.ModelMetadata(kpb.ModelMetadataRequest(name="small"), timeout=10)
            assert list(metadata.inputs[0].shape) == [-1, 32, 32, 3]
            version = read_manifest(DEFAULT_BUNDLE)["version"]
            ready = stub.ModelReady(kpb.ModelReadyRequest(name="faces", version=version), timeout=10)
            assert ready.ready
            assert not stub.ModelReady(kpb.ModelReadyRequest(name="faces", version="9"), timeout=10).ready


def test_reload_adds_replaces_removes_and_keeps_a_model_whose_new_bundle_is_broken(repository, small_bundle,
                                                                                   tmp_path):
    with serve_repository(repository) as server, Client(server.target) as client:
        reload = lambda: server.call(server.server.reload())  # noqa: E731
        assert reload() == {"added": [], "replaced": [], "removed": [], "failed": []}

        link(repository, "other", small_bundle)
        (repository / "small").unlink()
        assert reload() == {"added": ["other"], "replaced": [], "removed": ["small"], "failed": []}
        assert server.server.models.names() == ["faces", "other"]
        with pytest.raises(ServiceError) as gone:
            client.model_info("small")
        assert gone.value.code == grpc.StatusCode.NOT_FOUND

        broken = tmp_path / "broken"  # a copy whose weights no longer match the manifest's sha256
        shutil.copytree(small_bundle, broken)
        weights = next(broken.glob("*.bin"))
        weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
        link(repository, "faces", broken)
        assert reload()["failed"] == ["faces"]
        assert client.model_info("faces")["resolution"] == 64  # still the old, working one

        link(repository, "faces", small_bundle)
        assert reload()["replaced"] == ["faces"]
        assert client.model_info("faces")["resolution"] == 32


def test_no_more_than_max_models_are_loaded(repository, small_bundle):
    link(repository, "third", small_bundle)
    with pytest.raises(Exception, match="max-models 2"):
        serve_repository(repository, max_models=2)
    (repository / "third").unlink()
    with serve_repository(repository, max_models=2) as server:
        link(repository, "third", small_bundle)
        outcome = server.call(server.server.reload())
        assert outcome["failed"] == ["third"] and server.server.models.names() == ["faces", "small"]


def test_polling_picks_up_a_new_model(repository, small_bundle):
    with serve_repository(repository, poll_s=0.2) as server:
        link(repository, "polled", small_bundle)
        end = time.monotonic() + 30
        while "polled" not in server.server.models.names():
            assert time.monotonic() < end, "the poller did not load the new model"
            time.sleep(0.05)


def test_bad_repositories_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for root, words in ((tmp_path / "missing", "not a directory"), (empty, "no bundles")):
        result = subprocess.run(
            [sys.executable, "-m", "latcomp", "serve", "--model-repository", str(root), "--host", "127.0.0.1",
             "--port", "0", "--drain-delay-s", "0"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert words in result.stderr


def test_a_model_swap_under_load_loses_nothing(repository, small_bundle, tmp_path):
    """`latcomp serve --model-repository` as a process; clients keep sending Inpaint to model `faces` while
    its bundle is replaced and SIGHUP sent: every answer is OK, and they switch from the old model (faces64:
    latent [10, 128]) to the new one, never back."""
    command = [sys.executable, "-m", "latcomp", "serve", "--model-repository", str(repository),
               "--backend", "ort", "--instances", "1", "--threads", "1", "--host", "127.0.0.1", "--port", "0",
               "--max-delay-ms", "1", "--drain-delay-s", "0"]
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        target = f"127.0.0.1:{wait_for_port(log_path, process)}"
        with Client(target) as probe:
            probe.wait_ready(120)
        old_shape = (10, 128)
        answers: list[list[tuple[str, tuple]]] = [[] for _ in range(6)]  # per client, in order

        async def client_loop(client: AsyncClient, index: int, stop: asyncio.Event):
            image, mask = np.full((40, 40, 3), 9 * index, np.uint8), np.zeros((40, 40), np.uint8)
            mask[:, :20] = 255
            while not stop.is_set():
                try:
                    result = await client.inpaint(image, mask, model="faces", return_latent=True)
                    answers[index].append(("OK", result.latent.shape))
                except ServiceError as error:
                    answers[index].append((error.code.name, ()))

        async def load():
            stop = asyncio.Event()
            async with AsyncClient(target, timeout=60) as client:
                tasks = [asyncio.ensure_future(client_loop(client, i, stop)) for i in range(len(answers))]
                await asyncio.sleep(1.0)
                link(repository, "faces", small_bundle)
                process.send_signal(signal.SIGHUP)
                end = time.monotonic() + 60
                while not all(a and a[-1][1] not in (old_shape, ()) for a in answers):
                    assert time.monotonic() < end, "the new model never answered every client"
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                stop.set()
                await asyncio.gather(*tasks)

        asyncio.run(load())
        codes = {code for per_client in answers for code, _ in per_client}
        assert codes == {"OK"}, codes
        for per_client in answers:
            shapes = [shape for _, shape in per_client]
            switch = next(i for i, shape in enumerate(shapes) if shape != old_shape)
            assert switch > 0, "the old model answered nothing before the swap"
            assert all(shape == old_shape for shape in shapes[:switch])
            assert all(shape == shapes[-1] != old_shape for shape in shapes[switch:])  # never back
        log_text = log_path.read_text()
        assert "reload of" in log_text and "replaced ['faces']" in log_text
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
