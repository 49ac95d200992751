"""The gRPC service against a real server on 127.0.0.1 with real channels, on the small exported bundle.

Where a test needs the engine busy at a known moment it occupies the server batcher's single engine thread
with a gate (conftest's GatedEngine: `engine.hold()`), so the order of events is fixed rather than left to
timing.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from latcomp import compose
from latcomp.service import codec, proto
from latcomp.service.client import (
    AsyncClient,
    Client,
    ServiceError,
    composite_request,
    inpaint_request,
    sample_request,
)
from latcomp.service.proto import pb
from latcomp.service.server import ServerConfig, ServerThread

REPO = Path(__file__).resolve().parents[1]
CODE = grpc.StatusCode


@pytest.fixture(scope="module")
def bundle(small_bundle):
    return small_bundle


@pytest.fixture(scope="module")
def engine(gated_engine):
    return gated_engine()


@pytest.fixture(scope="module")
def server(engine):
    with ServerThread(engine, ServerConfig(host="127.0.0.1", port=0, metrics_port=0)) as thread:
        yield thread


@pytest.fixture(scope="module")
def client(server):
    with Client(server.target, timeout=30) as client:
        yield client


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _hole(height: int, width: int) -> np.ndarray:
    mask = np.full((height, width), 255, np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 0
    return mask


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _until(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.002)


def _metrics(server: ServerThread) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=5) as page:
        return page.read().decode()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# ---- the RPCs -------------------------------------------------------------------------------------------


def test_model_info_health_and_reflection(server, client, engine):
    info = client.model_info()
    assert info["name"] == engine.name and info["resolution"] == engine.resolution
    assert info["latent_shape"] == list(engine.latent_shape) and info["backend"] == "ort"
    assert info["max_batch"] == engine.max_batch and info["max_pixels"] == 4096 * 4096
    assert info["instances"] == engine.concurrency == server.server.batcher.threads
    assert client.health() == "SERVING" and client.health(proto.SERVICE_NAME) == "SERVING"

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=proto.SERVICE_NAME),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {service.name for service in listed.list_services_response.service}
    assert {"latcomp.v1.ComposerService", "grpc.health.v1.Health"} <= names
    from google.protobuf import descriptor_pb2

    files = described.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(files[0]).name == "latcomp/v1/composer.proto"


def test_inpaint_matches_the_engine(client, engine):
    size = engine.resolution
    image, mask = _image(size, size, 1), _hole(size, size)
    result = client.inpaint(image, mask, realism=0.3, return_latent=True, return_input=True)
    model_image, model_mask = compose.to_model(image, mask, size)
    expected, latents = engine.run(model_image[None], model_mask[None], np.float32([0.3]))
    assert np.abs(result.image.astype(int) - expected[0]).max() <= 1
    np.testing.assert_allclose(result.latent, latents[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(result.input, model_image)
    np.testing.assert_array_equal(result.input_mask, model_mask[..., 0])
    timing = result.timing
    assert timing["compute_ms"] > 0 and timing["total_ms"] >= timing["compute_ms"]
    assert timing["batch_size"] >= 1
    assert timing["queue_ms"] >= 0 and timing["client_ms"] >= timing["total_ms"] * 0.5


def test_inpaint_at_canvas_size_preserves_known_pixels(client, engine):
    height, width = 3 * engine.resolution, 2 * engine.resolution + 5
    image, mask = _image(height, width, 2), _hole(height, width)
    result = client.inpaint(image, mask, size="canvas", preserve_known=True, feather_px=4)
    assert result.image.shape == (height, width, 3)
    deep = compose.feather_alpha(mask, 4) == 1
    np.testing.assert_array_equal(result.image[deep], image[deep])
    plain = client.inpaint(image, mask, size="canvas")
    assert plain.image.shape == (height, width, 3) and not np.array_equal(plain.image[deep], image[deep])


def test_rgba_alpha_serves_as_mask(client, engine, tmp_path):
    size = engine.resolution
    image, mask = _image(size, size, 3), _hole(size, size)
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([image, mask])).save(path)
    from_file = client.inpaint(path, return_input=True)
    from_arrays = client.inpaint(image, mask, return_input=True)
    np.testing.assert_array_equal(from_file.input_mask, from_arrays.input_mask)
    np.testing.assert_array_equal(from_file.input, from_arrays.input)


def test_composite_pastes_layers_like_compose(client, engine):
    size = engine.resolution
    base, patch = _image(2 * size, 2 * size, 4), _image(size, size, 5)
    patch_mask = _hole(size, size)
    layers = [(base, _hole(2 * size, 2 * size)), (patch, patch_mask, (-3, size + 2)), patch[:5, :7]]
    result = client.composite(layers, return_input=True, format="raw", size="canvas")
    canvas, union = compose.paste_layers(
        [
            compose.Layer(base, _hole(2 * size, 2 * size)),
            compose.Layer(patch, patch_mask, -3, size + 2),
            compose.Layer(patch[:5, :7]),
        ]
    )
    expected_input, expected_mask = compose.to_model(canvas, union, size)
    np.testing.assert_array_equal(result.input, expected_input)
    np.testing.assert_array_equal(result.input_mask, expected_mask[..., 0])
    assert result.image.shape == (2 * size, 2 * size, 3)


def test_sample_matches_the_engine_and_formats(client, engine):
    images, latents = engine.sample([7], 0.7)
    result = client.sample(7, truncation=0.7, return_latent=True, format="raw")
    assert np.abs(result.image.astype(int) - images[0]).max() <= 1
    np.testing.assert_allclose(result.latent, latents[0], rtol=1e-4, atol=1e-4)
    jpeg = client.sample(7, truncation=0.7, format="jpeg", jpeg_quality=95)
    assert jpeg.image.shape == images[0].shape and np.abs(jpeg.image.astype(int) - images[0]).mean() < 20
    default = client.sample(7)
    np.testing.assert_array_equal(default.image, client.sample(7, truncation=1.0).image)


def test_realism_one_gives_the_average_latent(client, engine):
    size = engine.resolution
    first = client.inpaint(_image(size, size, 6), _hole(size, size), realism=1.0, return_latent=True)
    second = client.inpaint(_image(size, size, 7), realism=1.0, return_latent=True)
    np.testing.assert_allclose(first.latent, second.latent, rtol=1e-4, atol=1e-4)


def test_edit_stream_answers_the_newest_request(server, engine):
    size = engine.resolution
    images = [_image(size, size, 10 + index) for index in range(12)]
    requests = [inpaint_request(image, return_input=True) for image in images]
    dropped_before = server.server.metrics.stream_dropped._value.get()
    gate = engine.hold()
    results: list = []
    with Client(server.target) as client:
        reader = threading.Thread(target=lambda: results.extend(client.edit_stream(requests, timeout=60)))
        reader.start()
        # Request 1 waits for the held engine while 2..12 arrive: each replaces the pending one.
        _until(lambda: server.server.metrics.stream_dropped._value.get() - dropped_before == 10)
        gate.set()
        reader.join(60)
    assert [r.request_id for r in results] == [1, 12]
    for result in results:
        all_known = np.full((size, size), 255, np.uint8)
        expected, _ = compose.to_model(images[result.request_id - 1], all_known, size)
        np.testing.assert_array_equal(result.input, expected)


def test_edit_stream_mixes_kinds_and_async_client(server, engine):
    size = engine.resolution

    async def main():
        async with AsyncClient(server.target) as client:
            requests = [
                sample_request(3),
                composite_request([_image(size, size, 1)]),
                pb.EditStreamRequest(request_id=99, inpaint=inpaint_request(_image(size, size, 2))),
            ]

            answered = asyncio.Event()

            async def one_at_a_time():  # the next request only once the last is answered: none goes stale
                for request in requests:
                    answered.clear()
                    yield request
                    await answered.wait()

            results = []
            async for result in client.edit_stream(one_at_a_time()):
                results.append(result)
                answered.set()
            return results

    results = asyncio.run(main())
    assert [r.request_id for r in results] == [1, 2, 99]  # the newest request is always answered
    assert all(r.image.shape == (size, size, 3) for r in results)


def test_fifty_concurrent_requests_are_batched(server, engine):
    size = engine.resolution
    before = _metrics(server)

    async def main():
        async with AsyncClient(server.target, timeout=60) as client:
            calls = [client.inpaint(_image(size, size, i), _hole(size, size)) for i in range(50)]
            return await asyncio.gather(*calls)

    started = time.perf_counter()
    results = asyncio.run(main())
    elapsed = time.perf_counter() - started
    assert len(results) == 50 and all(r.image.shape == (size, size, 3) for r in results)
    assert max(r.timing["batch_size"] for r in results) > 1
    after = _metrics(server)
    name = 'latcomp_batch_size_count{kind="run"}'
    batches = _metric(after, name) - _metric(before, name)
    assert 0 < batches < 50
    print(f"50 concurrent inpaints: {elapsed * 1000:.0f} ms, {batches:.0f} engine calls")


def test_deadline_exceeded_then_still_serving(client, engine):
    with pytest.raises(ServiceError) as error:
        client.sample(1, timeout=0.0001)
    assert error.value.code == CODE.DEADLINE_EXCEEDED
    assert client.sample(1).image.shape[0] == engine.resolution


# ---- the commands ---------------------------------------------------------------------------------------


def test_parse_layer():
    from latcomp.service.cli import parse_layer

    assert parse_layer("a.png") == ("a.png", None, (0, 0))
    assert parse_layer("a.png:m.png") == ("a.png", "m.png", (0, 0))
    assert parse_layer("dir/a.png@3,-4") == ("dir/a.png", None, (3, -4))
    assert parse_layer("a.png:m.png@-1,2") == ("a.png", "m.png", (-1, 2))


def test_cli_commands(server, bundle, engine, tmp_path, capsys, monkeypatch):
    import json

    from latcomp.cli import main

    for name in ("SERVER", "AUTH_TOKEN", "BUNDLE", "BACKEND", "TLS_CA"):
        monkeypatch.delenv(f"LATCOMP_{name}", raising=False)
    size = engine.resolution
    base, patch, mask = tmp_path / "base.png", tmp_path / "patch.png", tmp_path / "mask.png"
    Image.fromarray(_image(2 * size, 3 * size, 1)).save(base)
    Image.fromarray(_image(size, size, 2)).save(patch)
    Image.fromarray(_hole(size, size)).save(mask)
    out = tmp_path / "out" / "collage.png"
    layers = ["--layer", str(base), "--layer", f"{patch}:{mask}@-3,5"]
    assert main(["compose", *layers, "-o", str(out), "--server", server.target, "--size", "canvas"]) == 0
    assert Image.open(out).size == (3 * size, 2 * size)
    assert "compute" in capsys.readouterr().out

    filled, latent = tmp_path / "filled.png", tmp_path / "z.npy"
    command = ["inpaint", str(patch), "--mask", str(mask), "-o", str(filled), "--latent-out", str(latent)]
    assert main([*command, "--server", server.target, "--preserve-known", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["timing"]["compute_ms"] > 0 and np.load(latent).shape == tuple(engine.latent_shape)

    sample = tmp_path / "s.jpg"
    assert main(["sample", "--seed", "3", "-o", str(sample), "--server", server.target]) == 0
    assert Image.open(sample).format == "JPEG"
    # No --server: an in-process server on --bundle answers the one request.
    assert (
        main(["sample", "--seed", "3", "-o", str(sample), "--bundle", str(bundle), "--backend", "ort"]) == 0
    )
    assert "in-process server" in capsys.readouterr().err
    assert main(["inpaint", str(tmp_path / "missing.png"), "-o", str(filled), "--server", server.target]) == 2
    assert "missing.png" in capsys.readouterr().err


# ---- bad requests ---------------------------------------------------------------------------------------


def _raw(width, height, data):
    return pb.Image(raw=pb.RawPixels(width=width, height=height, data=data))


def _bad_requests(size: int) -> list:
    good = _image(size, size)
    good_png = _png(good)
    truncated = pb.Image(encoded=good_png[: len(good_png) // 2])
    bomb = io.BytesIO()
    Image.new("L", (5000, 4000)).save(bomb, format="PNG")  # 20 Mpx in a few KB
    bomb = pb.Image(encoded=bomb.getvalue())
    gif = io.BytesIO()
    Image.fromarray(good).save(gif, format="GIF")
    full = pb.Mask(raw=pb.RawPixels(width=size, height=size, data=bytes(size * size)))
    image = pb.Image(raw=codec.raw_pixels(good))

    def inpaint(**fields):
        return "Inpaint", pb.InpaintRequest(**fields)

    def options(**fields):
        return inpaint(image=image, output=pb.OutputOptions(**fields))

    def composite(*layers):
        return "Composite", pb.CompositeRequest(layers=list(layers))

    def sample(**fields):
        return "Sample", pb.SampleRequest(**fields)

    invalid = CODE.INVALID_ARGUMENT
    return [
        ("corrupt bytes", inpaint(image=pb.Image(encoded=b"\x89PNG not really")), invalid, "decodable"),
        ("empty bytes", inpaint(image=pb.Image(encoded=b"")), invalid, "empty"),
        ("gif", inpaint(image=pb.Image(encoded=gif.getvalue())), invalid, "decodable"),
        ("truncated png", inpaint(image=truncated), invalid, "corrupt"),
        ("image missing", inpaint(), invalid, "image is missing"),
        ("image empty", inpaint(image=pb.Image()), invalid, "image is empty"),
        ("zero size", inpaint(image=_raw(0, 5, b"")), invalid, "zero size"),
        ("negative size", inpaint(image=_raw(-4, 4, b"")), invalid, "negative size"),
        ("raw length", inpaint(image=_raw(size, size, bytes(10))), invalid, "expected width*height*3"),
        ("raw too large", inpaint(image=_raw(5000, 4000, b"")), invalid, "exceeds the limit"),
        ("decompression bomb", inpaint(image=bomb), invalid, "exceeds the limit"),
        (
            "mask size",
            inpaint(image=image, mask=pb.Mask(raw=codec.raw_pixels(np.zeros((size - 1, size), np.uint8)))),
            invalid,
            "mask is",
        ),
        (
            "mask raw length",
            inpaint(image=image, mask=pb.Mask(raw=pb.RawPixels(width=size, height=size, data=bytes(3)))),
            invalid,
            "expected width*height*1",
        ),
        ("mask empty", inpaint(image=image, mask=pb.Mask()), invalid, "mask is empty"),
        ("corrupt mask", inpaint(image=image, mask=pb.Mask(encoded=b"nope")), invalid, "inpaint.mask"),
        ("no layers", composite(), invalid, "at least one layer"),
        ("layer without image", composite(pb.Layer(image=image), pb.Layer(mask=full)), invalid, "layers[1]"),
        ("too many layers", composite(*[pb.Layer(image=image)] * 65), invalid, "exceed the limit"),
        ("realism > 1", options(realism=1.5), invalid, "realism"),
        ("realism nan", options(realism=math.nan), invalid, "realism"),
        ("jpeg quality", options(jpeg_quality=101), invalid, "jpeg_quality"),
        ("feather", options(feather_px=-1), invalid, "feather_px"),
        ("format enum", options(format=7), invalid, "output.format"),
        ("seed", sample(seed=2**32), invalid, "seed"),
        ("truncation", sample(seed=1, truncation=math.inf), invalid, "truncation"),
        ("negative truncation", sample(seed=1, truncation=-1.0), invalid, "truncation"),
        ("unknown model", inpaint(model="nope", image=image), CODE.NOT_FOUND, "unknown model 'nope'"),
        ("unknown model sample", sample(model="nope"), CODE.NOT_FOUND, "unknown model"),
        ("unknown model info", ("GetModelInfo", pb.GetModelInfoRequest(model="x")), CODE.NOT_FOUND, "'x'"),
        (
            "oversize message",
            inpaint(image=_raw(2048, 2048 + 800, bytes(2048 * (2048 + 800) * 3))),
            CODE.RESOURCE_EXHAUSTED,
            "",
        ),
        ("stream without edit", ("EditStream", pb.EditStreamRequest(request_id=5)), invalid, "request 5"),
    ]


def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(server, client, engine):
    stub = proto.ComposerStub(client.channel)
    good = _image(engine.resolution, engine.resolution)
    failures = []
    for name, (method, request), code, fragment in _bad_requests(engine.resolution):
        try:
            if method == "EditStream":
                list(stub.EditStream(iter([request]), timeout=30))
            else:
                getattr(stub, method)(request, timeout=30)
            failures.append(f"{name}: no error")
        except grpc.RpcError as error:
            if error.code() != code or fragment not in (error.details() or ""):
                failures.append(f"{name}: {error.code()} {error.details()!r}, expected {code} ~ {fragment!r}")
        assert client.inpaint(good).image.shape == good.shape, f"not serving after {name}"
    assert not failures, "\n".join(failures)


def test_full_queue_is_resource_exhausted(engine):
    config = ServerConfig(host="127.0.0.1", port=0, max_queue=2, max_batch=1)
    size = engine.resolution
    with ServerThread(engine, config) as server, Client(server.target) as client:
        gate = engine.hold()
        batcher = server.server.batcher
        with ThreadPoolExecutor(batcher.threads + 2) as pool:
            running = [pool.submit(client.sample, seed) for seed in range(batcher.threads)]  # each instance
            _until(lambda: batcher.inflight == batcher.threads)
            queued = [pool.submit(client.sample, seed) for seed in (10, 11)]
            _until(lambda: batcher.queue_depth == 2)
            with pytest.raises(ServiceError) as error:
                client.sample(12)
            assert error.value.code == CODE.RESOURCE_EXHAUSTED and "queue is full" in error.value.details
            gate.set()
            assert all(f.result(30).image.shape == (size, size, 3) for f in [*running, *queued])
        assert client.sample(13).image.shape == (size, size, 3)


def test_engine_failure_is_internal(bundle):
    from latcomp.runtime import open_bundle

    engine = open_bundle(bundle, backend="ort")
    config = ServerConfig(host="127.0.0.1", port=0)
    with ServerThread(engine, config) as server, Client(server.target) as client:
        engine.close()  # the engine can no longer run
        with pytest.raises(ServiceError) as error:
            client.sample(1)
        assert error.value.code == CODE.INTERNAL and "engine failed" in error.value.details


# ---- lifecycle ------------------------------------------------------------------------------------------


def test_health_transitions_and_drain(engine):
    size = engine.resolution
    server = ServerThread(engine, ServerConfig(host="127.0.0.1", port=0, grace_s=20), warm_up=False)
    try:
        with Client(server.target) as client:
            assert client.health() == "NOT_SERVING" and client.health(proto.SERVICE_NAME) == "NOT_SERVING"
            with pytest.raises(ServiceError) as error:
                client.sample(1)
            assert error.value.code == CODE.UNAVAILABLE and "warming up" in error.value.details
            server.call(server.server.warm_up())
            assert client.health() == "SERVING"
            assert client.sample(1).image.shape == (size, size, 3)

            gate = engine.hold()
            with ThreadPoolExecutor(1) as pool:
                accepted = pool.submit(client.inpaint, _image(size, size))
                _until(lambda: server.server.batcher.inflight == 1)
                draining = asyncio.run_coroutine_threadsafe(server.server.drain(), server._loop)
                _until(lambda: client.health() == "NOT_SERVING")
                with pytest.raises(ServiceError) as error:
                    client.sample(2)
                assert error.value.code == CODE.UNAVAILABLE and "draining" in error.value.details
                gate.set()
                assert accepted.result(30).image.shape == (size, size, 3)  # accepted before: not lost
                draining.result(30)
            with pytest.raises(ServiceError) as error:
                client.sample(3, timeout=30)  # the client retries UNAVAILABLE ~1.5 s first
            assert error.value.code == CODE.UNAVAILABLE
    finally:
        server.stop()


# ---- packaging ------------------------------------------------------------------------------------------


def test_nothing_imports_torch(bundle):
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np
import latcomp.compose, latcomp.runtime, latcomp.runtime.batcher, latcomp.service.cli
from latcomp.runtime import open_bundle
from latcomp.service.client import Client
from latcomp.service.server import ServerConfig, ServerThread
engine = open_bundle({str(bundle)!r}, backend="ort")
with ServerThread(engine, ServerConfig(host="127.0.0.1", port=0)) as server, Client(server.target) as client:
    result = client.inpaint(np.zeros((8, 8, 3), np.uint8))
print("served", result.image.shape)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "served" in done.stdout
