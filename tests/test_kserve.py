"""The Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`) on `latcomp serve`, called by the
real tritonclient (in its own environment: tests/tritonclient_env.py), and its schema checked field by
field against the one tritonclient ships."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient_env
from reliability.support import wait_for_port

from latcomp.inference import grpc_service_pb2 as kpb
from latcomp.inference import grpc_service_pb2_grpc as kpb_grpc
from latcomp.runtime import open_bundle
from latcomp.service.client import AsyncClient
from latcomp.service.server import ServerConfig, ServerThread

REPO = Path(__file__).resolve().parents[1]
TOKEN = "kserve-test-token-0123456789"
MODEL = "faces64"  # the shipped bundle's name


@pytest.fixture(scope="module")
def engine():
    with open_bundle(None, backend="ort", instances=1, threads=1) as engine:
        yield engine


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`latcomp serve` on the shipped bundle with a bearer token, as a process: its target."""
    directory = tmp_path_factory.mktemp("kserve")
    (directory / "token").write_text(TOKEN)
    command = [sys.executable, "-m", "latcomp", "serve", "--backend", "ort", "--instances", "1", "--threads",
               "1", "--host", "127.0.0.1", "--port", "0", "--auth-token-file", str(directory / "token"),
               "--drain-delay-s", "0"]
    log_path = directory / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        yield f"127.0.0.1:{wait_for_port(log_path, process)}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def inputs(engine, tmp_path_factory) -> Path:
    """Three samples as tritonclient sends them: image [3,R,R,3], mask [3,R,R,1] uint8, realism [3,1] fp32."""
    r = engine.resolution
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("kserve-inputs") / "inputs.npz"
    np.savez(path, image=rng.integers(0, 256, (3, r, r, 3), dtype=np.uint8),
             mask=np.where(rng.random((3, r, r, 1)) < 0.5, 255, 0).astype(np.uint8),
             realism=np.array([[0.0], [0.5], [1.0]], np.float32))
    return path


def test_our_protocol_is_tritonclients(tmp_path):
    """Every message, field number and type, enum value and method of our .proto is tritonclient's."""
    from google.protobuf import descriptor_pb2

    descriptors = descriptor_pb2.FileDescriptorSet()
    kpb.DESCRIPTOR.CopyToProto(descriptors.file.add())
    path = tmp_path / "ours.pb"
    path.write_bytes(descriptors.SerializeToString())
    answer = tritonclient_env.run_tool("schema", str(path))
    assert answer["mismatches"] == []
    assert answer["checked"] > 100


def test_tritonclient_infers_on_latcomp_serve(served, inputs, engine, tmp_path):
    outputs_path = tmp_path / "outputs.npz"
    answer = tritonclient_env.run_tool("infer", served, MODEL, str(inputs), str(outputs_path), TOKEN)
    r, latent_shape = engine.resolution, list(engine.latent_shape)
    assert answer["live"] and answer["ready"] and answer["model_ready"]
    assert answer["unknown_model_ready"] is False
    assert answer["server"]["name"] == "latcomp"

    metadata = answer["metadata"]
    assert metadata["name"] == MODEL and metadata["versions"] == [str(engine.version)]
    tensors = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]])
               for t in metadata["inputs"] + metadata["outputs"]}
    assert tensors == {
        "image": ("UINT8", [-1, r, r, 3]),
        "mask": ("UINT8", [-1, r, r, 1]),
        "realism": ("FP32", [-1, 1]),
        "result": ("UINT8", [-1, r, r, 3]),
        "latent": ("FP32", [-1, *latent_shape]),
    }
    config = answer["config"]  # what perf_analyzer reads
    assert int(config["max_batch_size"]) == engine.max_batch
    assert [t["name"] for t in config["input"]] == ["image", "mask", "realism"]

    assert answer["id"] == "42" and answer["model_version"] == str(engine.version)
    assert answer["outputs"] == [
        {"name": "result", "datatype": "UINT8", "shape": [3, r, r, 3]},
        {"name": "latent", "datatype": "FP32", "shape": [3, *latent_shape]},
    ]
    sent, got = np.load(inputs), np.load(outputs_path)
    images, latents = engine.run(sent["image"], sent["mask"], sent["realism"][:, 0])
    np.testing.assert_array_equal(got["result"], images)  # what the engine returns for the same inputs
    np.testing.assert_allclose(got["latent"], latents, rtol=0, atol=1e-5)


def test_bad_requests_get_clear_statuses_and_the_server_keeps_serving(served, inputs):
    answer = tritonclient_env.run_tool("errors", served, MODEL, str(inputs), TOKEN)
    expected = {
        "float_image": ("INVALID_ARGUMENT", "datatype UINT8"),
        "wrong_size": ("INVALID_ARGUMENT", "must have shape"),
        "no_mask": ("INVALID_ARGUMENT", "missing input 'mask'"),
        "realism_out_of_range": ("INVALID_ARGUMENT", "[0, 1]"),
        "unknown_model": ("NOT_FOUND", "unknown model 'no-such-model'"),
        "unknown_output": ("INVALID_ARGUMENT", "unknown output 'nope'"),
        "metadata_of_unknown_model": ("NOT_FOUND", "no-such-model"),
        "without_token": ("UNAUTHENTICATED", "bearer token"),
    }
    for case, (code, words) in expected.items():
        assert answer[case].startswith(f"StatusCode.{code}:") and words in answer[case], (case, answer[case])
    assert answer["good_after_the_bad"] == "OK"


def test_kserve_needs_the_token_but_health_does_not(served):
    with grpc.insecure_channel(served) as channel:
        stub = kpb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ServerLive(kpb.ServerLiveRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = [("authorization", f"Bearer {TOKEN}")]
        assert stub.ServerLive(kpb.ServerLiveRequest(), metadata=metadata, timeout=10).live
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        status = health.Check(check, timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def _infer_request(engine, seed: int, samples: int = 1):
    r = engine.resolution
    rng = np.random.default_rng(seed)
    request = kpb.ModelInferRequest(model_name="")  # "": the default model
    for name, datatype, array in (
        ("image", "UINT8", rng.integers(0, 256, (samples, r, r, 3), dtype=np.uint8)),
        ("mask", "UINT8", np.full((samples, r, r, 1), 255, np.uint8)),
    ):
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(array.tobytes())
    return request


def test_kserve_and_latcomp_v1_requests_share_one_batcher_and_the_metrics(engine):
    """While a first request holds the engine, one ModelInfer and one Inpaint queue up; then they run as ONE
    engine call."""
    with ServerThread(engine, ServerConfig(host="127.0.0.1", port=0)) as server:
        batcher = server.server.batcher
        gate = threading.Event()
        for _ in range(batcher.threads):  # every engine slot busy until the gate opens
            batcher._executor.submit(gate.wait, 30)

        async def until(condition):
            end = time.monotonic() + 20
            while not condition():
                assert time.monotonic() < end, "the requests did not queue up"
                await asyncio.sleep(0.005)

        async def requests():
            channel = grpc.aio.insecure_channel(server.target)
            stub = kpb_grpc.GRPCInferenceServiceStub(channel)
            r = engine.resolution
            async with AsyncClient(server.target, timeout=30) as client:
                first = asyncio.ensure_future(stub.ModelInfer(_infer_request(engine, 0), timeout=30))
                await until(lambda: batcher.inflight == batcher.threads)  # taken, waiting for the gate
                infer = asyncio.ensure_future(stub.ModelInfer(_infer_request(engine, 1), timeout=30))
                inpaint = asyncio.ensure_future(client.inpaint(np.zeros((r, r, 3), np.uint8),
                                                               np.full((r, r), 255, np.uint8)))
                await until(lambda: batcher.queue_depth == 2)
                before = dict(batcher.batch_sizes)
                gate.set()
                results = await asyncio.gather(first, infer, inpaint)
            await channel.close()
            return before, results

        before, (_, response, _) = asyncio.run(requests())
        assert list(response.outputs[0].shape) == [1, engine.resolution, engine.resolution, 3]
        new = {size: count - before.get(size, 0) for size, count in batcher.batch_sizes.items()}
        assert new.get(2) == 1, batcher.batch_sizes  # the ModelInfer and the Inpaint: one engine call
        requests_total = server.server.metrics.requests
        assert requests_total.labels("ModelInfer", "OK")._value.get() == 2
        assert requests_total.labels("Inpaint", "OK")._value.get() == 1


def test_a_batch_over_max_batch_size_is_refused(engine):
    config = ServerConfig(host="127.0.0.1", port=0, max_batch=2)
    with ServerThread(engine, config) as server, grpc.insecure_channel(server.target) as channel:
        stub = kpb_grpc.GRPCInferenceServiceStub(channel)
        assert len(stub.ModelInfer(_infer_request(engine, 2, samples=2), timeout=30).raw_output_contents) == 2
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(_infer_request(engine, 3, samples=3), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_batch_size" in refused.value.details()
