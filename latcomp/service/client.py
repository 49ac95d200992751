"""Clients of latcomp.v1.ComposerService: `Client` (blocking) and `AsyncClient` (asyncio), no torch.

    with Client("localhost:50051") as client:
        result = client.inpaint("face.png", mask="holes.png", preserve_known=True)
        result.image            # uint8 [H, W, 3]
        result.timing           # {"queue_ms", "compute_ms", "total_ms", "batch_size", "client_ms"}

Images may be numpy arrays (uint8 [H,W,3], [H,W] gray or [H,W,4] RGBA, whose alpha becomes the mask when
none is given), PIL images, file paths or encoded bytes (sent as they are). Masks likewise (uint8 or bool
[H,W], 255/True = known). Output options are keywords of every edit call:
format ("png" | "jpeg" | "raw"), jpeg_quality, return_latent, return_input, preserve_known, realism (0..1),
size ("canvas", the default: the first layer's / the image's own size; "model": R x R), feather_px.
Failures raise ServiceError with the gRPC status code and message.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ..runtime import edits
from . import codec, proto
from .proto import ComposerStub, pb

_FORMATS = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "jpg": pb.IMAGE_FORMAT_JPEG,
    "raw": pb.IMAGE_FORMAT_RAW,
}
_SIZES = {"model": pb.OUTPUT_SIZE_MODEL, "canvas": pb.OUTPUT_SIZE_CANVAS}


class ServiceError(Exception):
    """An RPC failed: `code` (grpc.StatusCode) and `details` (the server's message)."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def _error(error: grpc.RpcError) -> ServiceError:
    return ServiceError(error.code(), error.details() or "")


@dataclass
class EditResult:
    image: np.ndarray  # uint8 [H, W, 3]
    timing: dict[str, float] = field(default_factory=dict)
    latent: np.ndarray | None = None  # float32 [*latent_shape]
    input: np.ndarray | None = None  # the collage fed to the model, uint8 [R, R, 3]
    input_mask: np.ndarray | None = None  # its mask, uint8 [R, R]
    request_id: int = 0


# ---- building requests ----------------------------------------------------------------------------------


def output_options(
    format: str = "png",
    jpeg_quality: int = 0,
    return_latent: bool = False,
    return_input: bool = False,
    preserve_known: bool = False,
    realism: float = 0.0,
    size: str = "canvas",
    feather_px: int | None = None,
) -> Any:
    options = pb.OutputOptions(
        format=_FORMATS[format.lower()],
        jpeg_quality=jpeg_quality,
        return_latent=return_latent,
        return_input=return_input,
        preserve_known=preserve_known,
        realism=realism,
        size=_SIZES[size],
    )
    if feather_px is not None:
        options.feather_px = feather_px
    return options


def _image_and_mask(image: Any, mask: Any | None) -> tuple[Any, Any | None]:
    rgb, alpha = edits.split_alpha(image)
    message = codec.image_message(rgb)
    if mask is None:
        mask = alpha
    return message, None if mask is None else codec.mask_message(mask)


def _layer(spec: Any) -> Any:
    """compose.Layer, (image[, mask[, (x, y)]]) or a bare image -> pb.Layer."""
    image, mask, x, y = edits.layer_parts(spec)
    image_msg, mask_msg = _image_and_mask(image, mask)
    layer = pb.Layer(image=image_msg, offset_x=int(x), offset_y=int(y))
    if mask_msg is not None:
        layer.mask.CopyFrom(mask_msg)
    return layer


def composite_request(layers: Sequence[Any], model: str = "", **output: Any) -> Any:
    """pb.CompositeRequest; each layer a compose.Layer, a tuple (image[, mask[, (x, y)]]) or an image."""
    return pb.CompositeRequest(
        model=model, layers=[_layer(spec) for spec in layers], output=output_options(**output)
    )


def inpaint_request(image: Any, mask: Any | None = None, model: str = "", **output: Any) -> Any:
    image_msg, mask_msg = _image_and_mask(image, mask)
    request = pb.InpaintRequest(model=model, image=image_msg, output=output_options(**output))
    if mask_msg is not None:
        request.mask.CopyFrom(mask_msg)
    return request


def sample_request(seed: int, truncation: float | None = None, model: str = "", **output: Any) -> Any:
    request = pb.SampleRequest(model=model, seed=seed, output=output_options(**output))
    if truncation is not None:
        request.truncation = truncation
    return request


def stream_request(request: Any, request_id: int) -> Any:
    """Wraps a Composite/Inpaint/Sample request (or passes an EditStreamRequest through)."""
    if isinstance(request, pb.EditStreamRequest):
        return request
    field_name = {
        pb.CompositeRequest: "composite",
        pb.InpaintRequest: "inpaint",
        pb.SampleRequest: "sample",
    }[type(request)]
    return pb.EditStreamRequest(request_id=request_id, **{field_name: request})


def result(response: Any, started: float | None = None) -> EditResult:
    timing = {
        "queue_ms": response.timing.queue_ms,
        "compute_ms": response.timing.compute_ms,
        "total_ms": response.timing.total_ms,
        "batch_size": response.timing.batch_size,
    }
    if started is not None:
        timing["client_ms"] = (time.perf_counter() - started) * 1000
    return EditResult(
        image=codec.image_array(response.image),
        timing=timing,
        latent=codec.latent_array(response.latent) if response.HasField("latent") else None,
        input=codec.image_array(response.input) if response.HasField("input") else None,
        input_mask=codec.mask_array(response.input_mask) if response.HasField("input_mask") else None,
        request_id=response.request_id,
    )


def model_info_dict(info: Any) -> dict:
    return {
        "name": info.name,
        "version": info.version,
        "resolution": info.resolution,
        "latent_shape": list(info.latent_shape),
        "z_dim": info.z_dim,
        "backend": info.backend,
        "device": info.device,
        "precision": info.precision,
        "max_batch": info.max_batch,
        "max_pixels": info.max_pixels,
        "max_message_bytes": info.max_message_bytes,
        "instances": info.instances,
    }


# ---- channels -------------------------------------------------------------------------------------------


# The channels' default retry policy: a call answered UNAVAILABLE (a server draining or restarting, a
# connection refused or broken) is sent again after an exponential, jittered backoff (or the delay a
# draining server asks for), five attempts in all: an unreachable server fails a call within ~1.5 s.
# CANCELLED too, when the server sends it: grpc core cancels calls that reach a server in the instant its
# port closes, before any handler saw them (a cancellation by this client is never retried).
# grpc retries a call only while no response has started, and an edit has no side effects.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}
# round_robin: a target that resolves to several servers (a Kubernetes headless Service, dns:///...) gets a
# connection to each and spreads calls over them; with one address it is the same as grpc's pick_first.
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{"name": [{"service": proto.SERVICE_NAME}], "retryPolicy": RETRY_POLICY}],
})


def _open_channel(channels, target: str, tls_ca: str | Path | bool | None, max_message_mb: float):
    """A channel from `channels` (the grpc module, or grpc.aio) with TLS when `tls_ca` is set: a CA file,
    or True for the system's roots; with the default retry policy (SERVICE_CONFIG)."""
    options = [
        ("grpc.max_receive_message_length", int(max_message_mb * 1024 * 1024)),
        ("grpc.max_send_message_length", int(max_message_mb * 1024 * 1024)),
        ("grpc.service_config", SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
    ]
    if tls_ca is None or tls_ca is False:
        return channels.insecure_channel(target, options=options)
    roots = None if tls_ca is True else Path(tls_ca).read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return channels.secure_channel(target, credentials, options=options)


class _Base:
    def __init__(self, target: str, token: str | None, timeout: float | None):
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout


class Client(_Base):
    """Blocking client. `tls_ca`: a CA certificate file (or True for the system roots) to use TLS."""

    def __init__(
        self,
        target: str,
        token: str | None = None,
        tls_ca: str | Path | bool | None = None,
        timeout: float | None = 60.0,
        max_message_mb: float = 64.0,
    ):
        super().__init__(target, token, timeout)
        self.channel = _open_channel(grpc, target, tls_ca, max_message_mb)
        self._stub = ComposerStub(self.channel)

    def _unary(self, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return getattr(self._stub, method)(
                request, timeout=self._timeout(timeout), metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise _error(error) from None

    def _edit(self, method: str, request: Any, timeout: float | None) -> EditResult:
        started = time.perf_counter()
        return result(self._unary(method, request, timeout), started)

    def composite(
        self, layers: Sequence[Any], model: str = "", timeout: float | None = None, **output
    ) -> EditResult:
        return self._edit("Composite", composite_request(layers, model, **output), timeout)

    def inpaint(
        self, image: Any, mask: Any | None = None, model: str = "", timeout: float | None = None, **output
    ) -> EditResult:
        return self._edit("Inpaint", inpaint_request(image, mask, model, **output), timeout)

    def sample(
        self,
        seed: int,
        truncation: float | None = None,
        model: str = "",
        timeout: float | None = None,
        **output,
    ) -> EditResult:
        return self._edit("Sample", sample_request(seed, truncation, model, **output), timeout)

    def model_info(self, model: str = "", timeout: float | None = None) -> dict:
        return model_info_dict(self._unary("GetModelInfo", pb.GetModelInfoRequest(model=model), timeout))

    def edit_stream(self, requests: Iterable[Any], timeout: float | None = None) -> Iterator[EditResult]:
        """Streams requests (built with *_request, numbered 1, 2, ... unless EditStreamRequests); yields
        the results the server chose to compute (always including the last request's)."""
        wrapped = (stream_request(request, index) for index, request in enumerate(requests, 1))
        started = time.perf_counter()
        try:
            for response in self._stub.EditStream(wrapped, timeout=timeout, metadata=self._metadata):
                yield result(response, started)
        except grpc.RpcError as error:
            raise _error(error) from None

    def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """The server's grpc.health.v1 status name: SERVING, NOT_SERVING, ..."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            raise _error(error) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Blocks until health says SERVING (or raises TimeoutError)."""
        end = time.monotonic() + timeout
        while True:
            try:
                if self.health(timeout=max(0.1, min(2.0, end - time.monotonic()))) == "SERVING":
                    return
            except ServiceError:
                pass
            if time.monotonic() >= end:
                raise TimeoutError(f"{self.target} not SERVING after {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio client with the same methods as Client, as coroutines (edit_stream: an async iterator)."""

    def __init__(
        self,
        target: str,
        token: str | None = None,
        tls_ca: str | Path | bool | None = None,
        timeout: float | None = 60.0,
        max_message_mb: float = 64.0,
    ):
        super().__init__(target, token, timeout)
        self.channel = _open_channel(grpc.aio, target, tls_ca, max_message_mb)
        self._stub = ComposerStub(self.channel)

    async def _unary(self, method: str, request: Any, timeout: float | None) -> Any:
        try:
            call = getattr(self._stub, method)(
                request, timeout=self._timeout(timeout), metadata=self._metadata
            )
            return await call
        except grpc.RpcError as error:
            raise _error(error) from None

    async def _edit(self, method: str, request: Any, timeout: float | None) -> EditResult:
        started = time.perf_counter()
        return result(await self._unary(method, request, timeout), started)

    async def composite(
        self, layers: Sequence[Any], model: str = "", timeout: float | None = None, **output
    ) -> EditResult:
        return await self._edit("Composite", composite_request(layers, model, **output), timeout)

    async def inpaint(
        self, image: Any, mask: Any | None = None, model: str = "", timeout: float | None = None, **output
    ) -> EditResult:
        return await self._edit("Inpaint", inpaint_request(image, mask, model, **output), timeout)

    async def sample(
        self,
        seed: int,
        truncation: float | None = None,
        model: str = "",
        timeout: float | None = None,
        **output,
    ) -> EditResult:
        return await self._edit("Sample", sample_request(seed, truncation, model, **output), timeout)

    async def model_info(self, model: str = "", timeout: float | None = None) -> dict:
        return model_info_dict(
            await self._unary("GetModelInfo", pb.GetModelInfoRequest(model=model), timeout)
        )

    async def edit_stream(
        self, requests: Iterable[Any] | AsyncIterable[Any], timeout: float | None = None
    ) -> AsyncIterator[EditResult]:
        async def wrapped():
            index = 0
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    index += 1
                    yield stream_request(request, index)
            else:
                for request in requests:
                    index += 1
                    yield stream_request(request, index)

        started = time.perf_counter()
        call = self._stub.EditStream(wrapped(), timeout=timeout, metadata=self._metadata)
        try:
            async for response in call:
                yield result(response, started)
        except grpc.RpcError as error:
            raise _error(error) from None

    async def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            raise _error(error) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
