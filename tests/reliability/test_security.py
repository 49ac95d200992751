"""Security: code-running checkpoints, bundle paths that leave the bundle, auth on every RPC, TLS.

All against real files and servers: pickles that would create a marker directory if they ever ran, tampered
copies of the session's exported bundle, a token-protected server with every RPC and stream, and TLS with
the real clients (blocking, asyncio, the CLI and the soak's load generator).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from latcomp.runtime import BundleError, open_bundle, read_bundle
from latcomp.service.client import AsyncClient, Client, ServiceError, inpaint_request, stream_request
from latcomp.service.proto import ComposerStub, pb

from .support import image, self_signed, serve

TOKEN = "reliability-token"
CODE = grpc.StatusCode


# ---- checkpoints that would run code --------------------------------------------------------------------


class _Payload:
    """Unpickling this calls os.makedirs(marker): proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def _malicious_files(directory: Path, marker: Path) -> dict[str, Path]:
    import torch

    state_dict = {"conv1.weight": torch.zeros(2, 4, 3, 3), "fc.weight": torch.zeros(3, 2)}
    evil = {"state_dict": state_dict, "optimizer": _Payload(marker)}
    files = {}
    files["zip"] = directory / "zip.pth"
    torch.save(evil, files["zip"])
    files["legacy"] = directory / "legacy.pt"
    torch.save(evil, files["legacy"], _use_new_zipfile_serialization=False)
    files["pickle"] = directory / "plain.pkl.pt"
    files["pickle"].write_bytes(pickle.dumps(evil, protocol=2))
    files["nested"] = directory / "nested.ckpt"
    torch.save(
        {"g_ema": {"input.input": torch.zeros(1), "style.1.weight": [_Payload(marker)]}}, files["nested"]
    )
    return files


def test_a_malicious_pickle_checkpoint_is_refused_without_running_it(tmp_path, capsys):
    pytest.importorskip("torch")
    from latcomp.cli import main
    from latcomp.nets import CheckpointError, load
    from latcomp.training.checkpoints import load_checkpoint

    marker = tmp_path / "code-ran"
    for kind, path in _malicious_files(tmp_path, marker).items():
        with pytest.raises(CheckpointError, match="refusing to load|cannot read") as error:
            load(path)
        assert "weights_only=False" not in str(error.value)  # no advice to switch the guard off
        assert main(["info", str(path)]) == 2, kind
        assert "latcomp info" in capsys.readouterr().err
        with pytest.raises(Exception):  # noqa: B017 - the training loader: torch's own refusal
            load_checkpoint(path)
        assert not marker.exists(), f"{kind}: unpickling ran code"


# ---- bundle paths ---------------------------------------------------------------------------------------


def _entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _tampered(bundle: Path, tmp_path: Path, edit) -> Path:
    """A copy of the bundle whose manifest `edit(manifest, copy, outside)` changed; `outside` is a
    directory next to the copy holding copies of the bundle's files."""
    copy, outside = tmp_path / "bundle", tmp_path / "outside"
    shutil.copytree(bundle, copy)
    shutil.copytree(bundle, outside)
    manifest = json.loads((copy / "latcomp.json").read_text())
    edit(manifest, copy, outside)
    (copy / "latcomp.json").write_text(json.dumps(manifest, indent=1))
    return copy


def _escape_files(manifest, copy, outside):
    manifest["files"]["../outside/weights.bin"] = _entry(outside / "weights.bin")


def _absolute_files(manifest, copy, outside):
    manifest["files"][str(outside / "weights.bin")] = _entry(outside / "weights.bin")


def _escape_graph(manifest, copy, outside):
    manifest["graphs"]["composer"]["file"] = "../outside/composer.onnx"
    manifest["files"]["../outside/composer.onnx"] = _entry(outside / "composer.onnx")


def _absolute_graph(manifest, copy, outside):
    manifest["graphs"]["generator"]["file"] = str(outside / "generator.onnx")
    manifest["files"][str(outside / "generator.onnx")] = _entry(outside / "generator.onnx")


def _sneaky_graph(manifest, copy, outside):
    manifest["graphs"]["composer"]["file"] = "plans/../../outside/composer.onnx"


def _escape_plan(manifest, copy, outside):
    (outside / "evil.plan").write_bytes(b"not a plan")
    manifest["plans"] = [{"file": "../outside/evil.plan", "compute_capability": [9, 0], "tensorrt": "10.0.0"}]


def _absolute_plan(manifest, copy, outside):
    manifest["plans"] = [{"file": "/etc/passwd", "compute_capability": [9, 0], "tensorrt": "10.0.0"}]


@pytest.mark.parametrize(
    "edit",
    [
        _escape_files,
        _absolute_files,
        _escape_graph,
        _absolute_graph,
        _sneaky_graph,
        _escape_plan,
        _absolute_plan,
    ],
)
def test_manifest_paths_cannot_leave_the_bundle(small_bundle, tmp_path, edit):
    copy = _tampered(small_bundle, tmp_path, edit)
    for verify in (True, False):
        with pytest.raises(BundleError, match="outside the bundle"):
            read_bundle(copy, verify=verify)
    with pytest.raises(BundleError, match="outside the bundle"):
        open_bundle(copy, backend="ort")


def test_a_symlink_out_of_the_bundle_is_refused(small_bundle, tmp_path):
    def link(manifest, copy, outside):
        (copy / "weights.bin").unlink()
        (copy / "weights.bin").symlink_to(outside / "weights.bin")  # same bytes, same checksum

    copy = _tampered(small_bundle, tmp_path, link)
    with pytest.raises(BundleError, match="outside the bundle"):
        open_bundle(copy, backend="ort")


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_external_weights_outside_the_bundle_are_refused(small_bundle, tmp_path, backend):
    """A graph (re-checksummed in the manifest) whose weights point outside: the engines refuse it."""
    onnx = pytest.importorskip("onnx")
    if backend == "torch":
        pytest.importorskip("torch")

    def outside_weights(manifest, copy, outside):
        for name in ("composer.onnx", "generator.onnx", "sampler.onnx"):
            model = onnx.load(str(copy / name), load_external_data=False)
            for tensor in model.graph.initializer:
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = "../outside/weights.bin"
            onnx.save(model, str(copy / name))
            manifest["files"][name] = _entry(copy / name)

    copy = _tampered(small_bundle, tmp_path, outside_weights)
    read_bundle(copy)  # the manifest itself is in order
    with pytest.raises(Exception, match="(?i)outside|escapes"):
        open_bundle(copy, backend=backend)


# ---- auth on every RPC ----------------------------------------------------------------------------------

BAD_METADATA = {
    "none": (),
    "wrong token": (("authorization", "Bearer wrong"),),
    "token without scheme": (("authorization", TOKEN),),
    "lower-case scheme": (("authorization", f"bearer {TOKEN}"),),
    "other scheme": (("authorization", f"Basic {TOKEN}"),),
    "no space": (("authorization", f"Bearer{TOKEN}"),),
    "trailing space": (("authorization", f"Bearer {TOKEN} "),),
    "prefix of the token": (("authorization", f"Bearer {TOKEN[:-1]}"),),
    "token plus more": (("authorization", f"Bearer {TOKEN}x"),),
    "wrong first": (("authorization", "Bearer wrong"), ("authorization", f"Bearer {TOKEN}")),
    "binary header": (("authorization-bin", f"Bearer {TOKEN}".encode()),),
    "another header": (("x-authorization", f"Bearer {TOKEN}"),),
}


def _every_rpc(channel: grpc.Channel, size: int, metadata) -> dict[str, str]:
    """Calls every method of the service (and server reflection) once -> {method: status code name}."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = ComposerStub(channel)
    edit = inpaint_request(image(size, size))
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    calls = {
        "Composite": lambda: stub.Composite(pb.CompositeRequest(layers=[pb.Layer(image=edit.image)]),
                                            metadata=metadata, timeout=30),  # fmt: skip
        "Inpaint": lambda: stub.Inpaint(edit, metadata=metadata, timeout=30),
        "Sample": lambda: stub.Sample(pb.SampleRequest(seed=1), metadata=metadata, timeout=30),
        "GetModelInfo": lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=30),
        "EditStream": lambda: list(stub.EditStream(iter([stream_request(edit, i) for i in range(1, 6)]),
                                                   metadata=metadata, timeout=30)),  # fmt: skip
        "ServerReflectionInfo": lambda: list(reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=30)),
    }  # fmt: skip
    codes = {}
    for method, call in calls.items():
        try:
            call()
            codes[method] = "OK"
        except grpc.RpcError as error:
            codes[method] = error.code().name
    return codes


def test_auth_cannot_be_bypassed_on_any_rpc(engine):
    size = engine.resolution
    with serve(engine, auth_token=TOKEN) as server, grpc.insecure_channel(server.target) as channel:
        batcher = server.server.batcher
        before = batcher.stats()["requests"]
        failures = {}
        for name, metadata in BAD_METADATA.items():
            codes = _every_rpc(channel, size, metadata)
            if set(codes.values()) != {"UNAUTHENTICATED"}:
                failures[name] = codes
        assert not failures, failures
        assert batcher.stats()["requests"] == before, "a refused call reached the engine"
        with Client(server.target) as client:
            assert client.health() == "SERVING"  # probes carry no token
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert set(_every_rpc(channel, size, good).values()) == {"OK"}
        for order in (good + (("authorization", "Bearer wrong"),),):  # the first header decides
            assert _every_rpc(channel, size, order)["GetModelInfo"] == "OK"


# ---- TLS with the real clients --------------------------------------------------------------------------


def test_tls_with_the_real_clients(engine, tmp_path, monkeypatch, capsys):
    from latcomp.bench.soak import SoakConfig, run_soak
    from latcomp.cli import main
    from latcomp.report import Progress

    cert, key = self_signed(tmp_path, "server")
    other_ca, _ = self_signed(tmp_path, "other")
    size = engine.resolution
    config = {"tls_cert": str(cert), "tls_key": str(key), "auth_token": TOKEN}
    with serve(engine, **config) as server:
        target = f"localhost:{server.port}"
        with Client(target, token=TOKEN, tls_ca=cert) as client:
            assert client.health() == "SERVING"
            assert client.inpaint(image(size, size), return_latent=True).latent is not None
            assert client.composite([image(2 * size, size)], size="canvas").image.shape == (2 * size, size, 3)
            assert client.sample(3, format="jpeg").image.shape == (size, size, 3)
            assert [r.request_id for r in client.edit_stream([inpaint_request(image(size, size))])] == [1]
            assert client.model_info()["resolution"] == size

        async def asynchronous():
            async with AsyncClient(target, token=TOKEN, tls_ca=cert) as client:
                return await asyncio.gather(*(client.sample(seed) for seed in range(8)))

        assert len(asyncio.run(asynchronous())) == 8

        monkeypatch.setenv("LATCOMP_AUTH_TOKEN", TOKEN)
        assert main(["info", "--server", target, "--tls-ca", str(cert), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["health"] == "SERVING"

        soak = run_soak(
            SoakConfig(target=target, tls_ca=str(cert), token=TOKEN, duration=1.0, peak_seconds=1.0,
                       peak_concurrency=4, warmup=1),
            Progress("soak", enabled=False),
        )  # fmt: skip
        assert soak["soak"]["sent"] > 0 and not soak["soak"]["errors"] and not soak["peak"]["errors"]

        for wrong in ({"tls_ca": None}, {"tls_ca": other_ca}):  # plaintext, or a CA that did not sign it
            with Client(target, token=TOKEN, timeout=5, **wrong) as client:
                with pytest.raises(ServiceError) as error:
                    client.sample(1)
                assert error.value.code == CODE.UNAVAILABLE
    assert np.isfinite(soak["soak"]["latency_ms"]["p99"])
