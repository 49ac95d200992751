"""Hostile bytes and requests against a real server: messages that are not the request message, EditStream
messages that fail, truncated images, and error messages (no internals, bounded size)."""

from __future__ import annotations

import io
import logging
import struct
import zlib

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from PIL import Image

from latcomp.service.client import Client, ServiceError, inpaint_request, sample_request, stream_request
from latcomp.service.proto import ComposerStub, pb

from .support import image, png, serve

CODE = grpc.StatusCode
GARBAGE = (b"\xff\xff\xff\x07", b"\x0a\x05abc", b"\x12\xff\xff\xff\xff\x0f" + b"x" * 40,
           b"\x08" * 9 + b"\x80")  # fmt: skip
UNARY = ("Composite", "Inpaint", "Sample", "GetModelInfo")


@pytest.fixture(scope="module")
def server(engine):
    with serve(engine) as server:
        yield server


def _requests_total(server, method: str, code: str) -> float:
    return server.server.metrics.requests.labels(method, code)._value.get()


def test_bytes_that_are_not_the_message_are_invalid_argument_on_every_rpc(server, engine, caplog):
    size = engine.resolution
    service = "/latcomp.v1.ComposerService/"
    methods = (*UNARY, "EditStream")
    before = {method: _requests_total(server, method, "INVALID_ARGUMENT") for method in methods}
    with grpc.insecure_channel(server.target) as channel, caplog.at_level(logging.WARNING, "latcomp.service"):
        for method in UNARY:
            call = channel.unary_unary(service + method)
            for data in GARBAGE:
                with pytest.raises(grpc.RpcError) as error:
                    call(data, timeout=10)
                assert error.value.code() == CODE.INVALID_ARGUMENT, (method, data, error.value.details())
                assert "not a valid request message" in error.value.details()
        good = stream_request(inpaint_request(image(size, size)), 1).SerializeToString()
        for method, valid in (("/latcomp.v1.ComposerService/EditStream", good),
                              ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                               reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()),
                              ("/grpc.health.v1.Health/Watch", None), ("/grpc.health.v1.Health/Check", None)):
            for data in GARBAGE:
                if method.endswith("Check"):
                    with pytest.raises(grpc.RpcError) as error:
                        channel.unary_unary(method)(data, timeout=10)
                elif method.endswith("Watch"):
                    with pytest.raises(grpc.RpcError) as error:
                        list(channel.unary_stream(method)(data, timeout=10))
                else:  # a valid message first, then the garbage
                    with pytest.raises(grpc.RpcError) as error:
                        list(channel.stream_stream(method)(iter([valid, data]), timeout=10))
                assert error.value.code() == CODE.INVALID_ARGUMENT, (method, data, error.value.details())
        # the server serves on, and health answers
        assert health_pb2.HealthCheckResponse.SERVING == channel.unary_unary(
            "/grpc.health.v1.Health/Check", response_deserializer=health_pb2.HealthCheckResponse.FromString
        )(health_pb2.HealthCheckRequest().SerializeToString(), timeout=10).status
    for method in (*UNARY, "EditStream"):  # counted with their status
        assert _requests_total(server, method, "INVALID_ARGUMENT") - before[method] >= len(GARBAGE), method
    lines = [record for record in caplog.records if "malformed message" in record.getMessage()]
    assert 1 <= len(lines) <= 2, [record.getMessage() for record in lines]  # rate-limited, one line each
    assert not any(record.exc_info for record in caplog.records)  # no traceback


def test_edit_stream_never_drops_a_failing_request_silently(server, engine):
    size = engine.resolution
    edit = inpaint_request(image(size, size))
    stub = ComposerStub(grpc.insecure_channel(server.target))
    raw = grpc.insecure_channel(server.target).stream_stream(
        "/latcomp.v1.ComposerService/EditStream", response_deserializer=pb.EditResponse.FromString
    )

    def run(messages) -> tuple[list[int], grpc.StatusCode, str]:
        answered = []
        try:
            for response in raw(iter(messages), timeout=30):
                answered.append(response.request_id)
        except grpc.RpcError as error:
            return answered, error.code(), error.details()
        return answered, CODE.OK, ""

    good = [stream_request(edit, i).SerializeToString() for i in (1, 2, 3)]
    # the rule: a message that is not an EditStreamRequest, or a request that fails, ends the stream
    # with its status and names the request; OK means the newest request was answered
    answered, code, details = run([good[0], b"\xff\xff\xff\x07", good[2]])
    assert code == CODE.INVALID_ARGUMENT and "after request 1" in details, (answered, code, details)
    bad = pb.EditStreamRequest(request_id=7, inpaint=pb.InpaintRequest(image=pb.Image(encoded=b"nope")))
    answered, code, details = run([good[0], bad.SerializeToString()])
    assert code == CODE.INVALID_ARGUMENT and "request 7" in details and 7 not in answered, details
    empty = pb.EditStreamRequest(request_id=9)  # no edit
    answered, code, details = run([empty.SerializeToString()])
    assert code == CODE.INVALID_ARGUMENT and "request 9" in details, details
    answered, code, _ = run(good)
    assert code == CODE.OK and answered[-1] == 3
    requests = [stream_request(sample_request(seed), seed + 1) for seed in range(20)]
    answered = [r.request_id for r in stub.EditStream(iter(requests), timeout=30)]
    assert answered[-1] == 20


def _png_short_idat(array: np.ndarray, rows: int) -> bytes:
    """A well-formed PNG declaring all rows of `array` whose image data holds only the first `rows`."""
    height, width = array.shape[:2]
    data = b"".join(b"\0" + array[row].tobytes() for row in range(rows))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _jpeg(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def test_truncated_images_are_invalid_argument(server, engine):
    picture = image(96, 80)
    whole_png, whole_jpeg = png(picture), _jpeg(picture)
    progressive = _jpeg(picture, progressive=True)
    truncated = {
        "PNG, image data ends early (a complete zlib stream)": _png_short_idat(picture, 40),
        "PNG, cut in its image data": whole_png[: len(whole_png) // 2],
        "JPEG, cut": whole_jpeg[: len(whole_jpeg) // 2],
        "JPEG, cut and an end marker added": whole_jpeg[: len(whole_jpeg) // 2] + b"\xff\xd9",
        "progressive JPEG, cut and an end marker added": progressive[: len(progressive) // 2] + b"\xff\xd9",
    }
    with Client(server.target) as client:
        for name, data in truncated.items():
            for as_mask in (False, True):
                with pytest.raises(ServiceError) as error:
                    if as_mask:
                        client.inpaint(picture, mask=data)
                    else:
                        client.inpaint(data)
                assert error.value.code == CODE.INVALID_ARGUMENT, (name, as_mask, error.value)
                assert "truncated" in error.value.details or "corrupt" in error.value.details, error.value
        # complete images still decode, exactly
        assert client.inpaint(whole_png, size="canvas").image.shape == (96, 80, 3)
        assert client.inpaint(_png_short_idat(picture, 96), size="canvas").image.shape == (96, 80, 3)
        assert client.inpaint(whole_jpeg, size="canvas").image.shape == (96, 80, 3)
        assert client.inpaint(progressive, size="canvas").image.shape == (96, 80, 3)
        gray = _jpeg(picture[..., 0])
        cmyk = io.BytesIO()
        Image.fromarray(picture).convert("CMYK").save(cmyk, format="JPEG")
        for data in (gray, cmyk.getvalue()):
            assert client.inpaint(data, size="canvas").image.shape == (96, 80, 3)


def test_error_messages_carry_no_internals_and_stay_small(server, engine):
    size = engine.resolution
    gif = io.BytesIO()
    Image.fromarray(image(8, 8)).save(gif, format="GIF")
    long_name = "m" * 20000
    with Client(server.target) as client:
        failures = []
        for call in (lambda: client.inpaint(gif.getvalue()),
                     lambda: client.inpaint(b"\x89PNG\r\n\x1a\n" + b"x" * 50),
                     lambda: client.inpaint(image(size, size), model=long_name),
                     lambda: client.sample(1, model=long_name), lambda: client.model_info(model=long_name),
                     lambda: list(client.edit_stream([sample_request(1, model=long_name)]))):  # fmt: skip
            with pytest.raises(ServiceError) as error:
                call()
            failures.append(error.value)
    codes = [failure.code for failure in failures]
    assert codes == [CODE.INVALID_ARGUMENT] * 2 + [CODE.NOT_FOUND] * 4, codes
    for failure in failures:
        assert " at 0x" not in failure.details and "<" not in failure.details, failure.details
        assert len(failure.details) < 400, len(failure.details)
