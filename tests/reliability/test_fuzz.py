"""Fuzzing the request path: every reply is a defined status (never UNKNOWN), no bad input is INTERNAL.

- hypothesis drives the fuzz target's property (`fuzz_decoder.check`: the server's decoding and encoding
  raise nothing but InvalidArgument) with random bytes, and sends generated requests (random bytes in image
  and mask fields, extreme and negative sizes and offsets, truncated PNG/JPEG, decompression bombs, any
  output options, extreme seeds and truncations) to a real server;
- extreme inputs that once cost GBs (a 1-pixel-high canvas) are checked by their memory;
- extreme but finite latents go through the real generator graph;
- a short coverage-guided run of fuzz_decoder.py under atheris, when atheris is installed.
Long forms: LATCOMP_FUZZ_EXAMPLES (hypothesis examples per test) and LATCOMP_FUZZ_RUNS (atheris runs).
"""

from __future__ import annotations

import functools
import io
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from latcomp import compose
from latcomp.service import codec
from latcomp.service.client import Client, inpaint_request
from latcomp.service.proto import ComposerStub, pb

from .fuzz_decoder import check
from .support import env_number, image, png, serve

HERE = Path(__file__).resolve().parent
EXAMPLES = int(env_number("LATCOMP_FUZZ_EXAMPLES", 0))  # 0: each test's short default
DEFINED = {
    "OK",
    "INVALID_ARGUMENT",
    "RESOURCE_EXHAUSTED",
}  # RESOURCE_EXHAUSTED: an answer over the size limit
INT32 = st.integers(-(2**31), 2**31 - 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def fuzz_settings(short: int):
    return settings(
        max_examples=EXAMPLES or short,
        deadline=None,
        database=None,  # nothing written into the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.data_too_large],
    )  # fmt: skip


# ---- the decoder's property, on random bytes ------------------------------------------------------------


@fuzz_settings(400)
@given(st.binary(max_size=4096))
def test_decoding_any_bytes_is_ok_or_invalid_argument(data):
    outcome = check(data)
    event(outcome)  # shown by --hypothesis-show-statistics
    assert outcome in ("ok", "invalid")


# ---- generated requests against a real server -----------------------------------------------------------


def _encode(array: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format)
    return buffer.getvalue()


@functools.cache
def _bombs() -> tuple[bytes, ...]:
    """Small files that decode to many pixels: over the limit (refused from the header), at its edge, and
    PNG headers that lie about their size."""
    over = _encode(np.zeros((4000, 5000), np.uint8), "PNG")  # 20 Mpx in a few KB
    flat = _encode(np.zeros((1, 1 << 20), np.uint8), "PNG")  # 1 Mpx in one row
    liar = bytearray(_encode(np.zeros((8, 8, 3), np.uint8), "PNG"))
    liar[16:24] = struct.pack(">II", 100_000, 100_000)
    return over, flat, bytes(liar)


@st.composite
def encoded_bytes(draw):
    kind = draw(st.sampled_from(["random", "png", "jpeg", "webp", "truncated", "flipped", "bomb"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    if kind == "bomb":
        return draw(st.sampled_from(_bombs()))
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    pixels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, (height, width, 3), np.uint8)
    data = _encode(pixels, {"png": "PNG", "webp": "WEBP"}.get(kind, "JPEG"))
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flipped":
        flipped = bytearray(data)
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            flipped[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(flipped)
    return data


@st.composite
def raw_pixels(draw, channels: int):
    extreme = st.one_of(INT32, st.sampled_from([0, -1, 1 << 20, 4097]))
    width = draw(st.integers(1, 48) if draw(st.integers(0, 3)) else extreme)
    height = draw(st.integers(1, 48) if draw(st.integers(0, 3)) else extreme)
    if draw(st.integers(0, 3)) and 0 < width * height * channels <= 48 * 48 * 3:
        data = draw(st.binary(min_size=width * height * channels, max_size=width * height * channels))
    else:
        data = draw(st.binary(max_size=256))
    return pb.RawPixels(width=width, height=height, data=data)


def images():
    return st.one_of(
        st.builds(pb.Image, encoded=encoded_bytes()),
        st.builds(pb.Image, raw=raw_pixels(3)),
        st.just(pb.Image()),
    )


def masks():
    return st.one_of(
        st.none(),
        st.builds(pb.Mask, encoded=encoded_bytes()),
        st.builds(pb.Mask, raw=raw_pixels(1)),
        st.just(pb.Mask()),
    )


@st.composite
def output_options(draw):
    """Mostly valid options (so that requests get through to the engine), a quarter anything at all."""
    wild = draw(st.integers(0, 3)) == 0
    options = pb.OutputOptions(
        format=draw(st.integers(-1, 5) if wild else st.integers(0, 3)),
        jpeg_quality=draw(st.one_of(st.integers(-1, 101), INT32) if wild else st.integers(0, 100)),
        return_latent=draw(st.booleans()),
        return_input=draw(st.booleans()),
        preserve_known=draw(st.booleans()),
        realism=draw(st.floats(width=32) if wild else st.floats(0, 1, width=32)),
        size=draw(st.integers(-1, 3) if wild else st.integers(0, 2)),
    )
    if draw(st.booleans()):
        options.feather_px = draw(st.one_of(st.integers(-2, 1100), INT32) if wild else st.integers(0, 1024))
    return options


@st.composite
def clean_layer(draw):
    """A well-formed layer: raw or PNG pixels, no mask or a random one of the same size, any offset."""
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    pixels = rng.integers(0, 256, (height, width, 3), np.uint8)
    encoded = draw(st.booleans())
    layer = pb.Layer(
        image=pb.Image(encoded=_encode(pixels, "PNG")) if encoded else codec.image_message(pixels),
        offset_x=draw(st.one_of(st.integers(-60, 60), INT32)),
        offset_y=draw(st.one_of(st.integers(-60, 60), INT32)),
    )
    if draw(st.booleans()):
        layer.mask.CopyFrom(codec.mask_message(rng.integers(0, 256, (height, width), np.uint8)))
    return layer


@st.composite
def requests(draw):
    kind = draw(st.sampled_from(["Inpaint", "Composite", "Sample"]))
    output = draw(output_options())
    if kind == "Sample":
        request = pb.SampleRequest(seed=draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))),
                                   output=output)  # fmt: skip
        if draw(st.booleans()):  # extreme, negative, NaN, inf
            request.truncation = draw(st.one_of(st.floats(0, FLOAT32_MAX, width=32), st.floats(width=32)))
        return kind, request
    if draw(st.booleans()):  # well-formed pixels, the options and offsets still anything
        layers = draw(st.lists(clean_layer(), min_size=1, max_size=4))
        if kind == "Inpaint":
            request = pb.InpaintRequest(image=layers[0].image, output=output)
            if layers[0].HasField("mask"):
                request.mask.CopyFrom(layers[0].mask)
            return kind, request
        return kind, pb.CompositeRequest(layers=layers, output=output)
    if kind == "Inpaint":
        request = pb.InpaintRequest(image=draw(images()), output=output)
        mask = draw(masks())
        if mask is not None:
            request.mask.CopyFrom(mask)
        return kind, request
    request = pb.CompositeRequest(output=output)
    for _ in range(draw(st.integers(0, 4))):
        layer = request.layers.add(image=draw(images()), offset_x=draw(INT32), offset_y=draw(INT32))
        mask = draw(masks())
        if mask is not None:
            layer.mask.CopyFrom(mask)
    return kind, request


@pytest.fixture(scope="module")
def server(engine):
    with serve(engine) as thread:
        yield thread


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield ComposerStub(channel)


@fuzz_settings(80)
@given(call=requests())
def test_generated_requests_get_a_defined_status(server, stub, call):
    method, request = call
    try:
        getattr(stub, method)(request, timeout=60)
        code, details = "OK", ""
    except grpc.RpcError as error:
        code, details = error.code().name, error.details() or ""
    event(f"{method} {code}")
    assert code in DEFINED, (code, details)
    assert code == "OK" or details, "a refusal without a message"


def test_the_server_serves_after_the_fuzzing(server, engine):
    size = engine.resolution
    with Client(server.target) as client:
        assert client.inpaint(image(size, size)).image.shape == (size, size, 3)
    assert server.server.admission.edits == 0 and server.server.batcher.queue_depth == 0


# ---- extreme sizes, offsets, seeds and truncations ------------------------------------------------------


def test_a_one_pixel_high_canvas_needs_little_memory():
    """1 x 1M pixels stretched to the model and back: once an R x 1M float intermediate (864 MB here)."""
    canvas = np.zeros((1, 1_000_000, 3), np.uint8)
    mask = np.full((1, 1_000_000), 255, np.uint8)
    tracemalloc.start()
    try:
        model_image, _ = compose.to_model(canvas, mask, 32)
        compose.resize_image(model_image, 1, 1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"peak {peak / 1e6:.0f} MB for a 3 MB canvas"


def test_extreme_requests_are_answered(server, engine):
    size = engine.resolution
    flat = np.random.default_rng(0).integers(0, 256, (1, 1_000_000, 3), np.uint8)
    tall = png(image(1 << 16, 1))
    edge = (2**31 - 1, -(2**31))
    cases = [
        ("1 x 1M canvas", "Inpaint", inpaint_request(flat, size="canvas", preserve_known=True), "OK"),
        ("64K x 1 PNG", "Inpaint", inpaint_request(tall, size="canvas", format="png"), "OK"),
        (
            "64K x 1 as JPEG",
            "Inpaint",
            inpaint_request(tall, size="canvas", format="jpeg"),
            "INVALID_ARGUMENT",
        ),
        (
            "int32 offsets",
            "Composite",
            pb.CompositeRequest(
                layers=[
                    pb.Layer(image=codec.image_message(image(size, size))),
                    *(
                        pb.Layer(image=codec.image_message(image(3, 3)), offset_x=x, offset_y=y)
                        for x in edge
                        for y in edge
                    ),
                ]
            ),
            "OK",
        ),  # fmt: skip
        ("largest seed", "Sample", pb.SampleRequest(seed=2**32 - 1), "OK"),
        ("huge truncation", "Sample", pb.SampleRequest(seed=1, truncation=3.4e38), "OK"),
        ("tiny truncation", "Sample", pb.SampleRequest(seed=1, truncation=1e-45), "OK"),
        ("seed 2^64-1", "Sample", pb.SampleRequest(seed=2**64 - 1), "INVALID_ARGUMENT"),
        (
            "negative raw",
            "Inpaint",
            pb.InpaintRequest(image=pb.Image(raw=pb.RawPixels(width=-(2**31), height=-1))),
            "INVALID_ARGUMENT",
        ),  # fmt: skip
        ("bomb", "Inpaint", pb.InpaintRequest(image=pb.Image(encoded=_bombs()[0])), "INVALID_ARGUMENT"),
        (
            "lying header",
            "Inpaint",
            pb.InpaintRequest(image=pb.Image(encoded=_bombs()[2])),
            "INVALID_ARGUMENT",
        ),
    ]
    with grpc.insecure_channel(
        server.target, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = ComposerStub(channel)
        for name, method, request, expected in cases:
            started = time.perf_counter()
            try:
                getattr(stub, method)(request, timeout=60)
                code = "OK"
            except grpc.RpcError as error:
                code = f"{error.code().name}"
            assert code == expected, (name, code)
            assert time.perf_counter() - started < 30, name


# ---- extreme latents ------------------------------------------------------------------------------------


finite32 = st.floats(-FLOAT32_MAX, FLOAT32_MAX, allow_nan=False, allow_infinity=False, width=32)


@fuzz_settings(40)
@given(data=st.data())
def test_extreme_finite_latents_give_images(engine, data):
    scale = data.draw(st.sampled_from([1.0, 1e3, 1e10, 1e30, 3.4e38]))
    latents = data.draw(arrays(np.float32, (1, *engine.latent_shape), elements=st.floats(-1, 1, width=32)))
    latents = np.clip(latents.astype(np.float64) * scale, -FLOAT32_MAX, FLOAT32_MAX).astype(np.float32)
    if data.draw(st.booleans()):  # a few entries set to anything finite
        flat = latents.reshape(-1)
        for index in data.draw(st.lists(st.integers(0, flat.size - 1), max_size=8)):
            flat[index] = data.draw(finite32)
    assert np.all(np.isfinite(latents))
    images = engine.generate(latents)
    assert images.dtype == np.uint8 and images.shape == (1, engine.resolution, engine.resolution, 3)


# ---- coverage-guided: atheris ---------------------------------------------------------------------------


def _atheris(runs: int, tmp_path: Path, timeout: float) -> str:
    pytest.importorskip("atheris")
    command = [sys.executable, str(HERE / "fuzz_decoder.py"), f"-atheris_runs={runs}",
               f"-artifact_prefix={tmp_path}/", "-rss_limit_mb=4096"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"Done {runs} " in output, output[-2000:]
    return output


def test_coverage_guided_fuzzing_of_the_decoder(tmp_path):
    _atheris(3000, tmp_path, timeout=120)


@pytest.mark.long
def test_coverage_guided_fuzzing_of_the_decoder_long(tmp_path):
    output = _atheris(int(env_number("LATCOMP_FUZZ_RUNS", 200_000)), tmp_path, timeout=3600)
    print(output.strip().splitlines()[-2])
