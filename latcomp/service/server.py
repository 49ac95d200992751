"""The grpc.aio server of latcomp.v1.ComposerService (no torch: it talks only to a runtime Engine).

    engine = latcomp.runtime.open_bundle(path, backend="ort")
    server = ComposerServer(engine, ServerConfig(port=0))
    port = await server.start()          # NOT_SERVING -> warm-up (one dummy run) -> SERVING
    ...
    await server.drain()                 # NOT_SERVING, refuse new RPCs, finish accepted ones, stop

Besides the service it serves grpc.health.v1 (overall "" and the service name), server reflection and,
optionally, Prometheus metrics over HTTP. `serve(config)` is the `latcomp serve` main: it opens the bundle
and drains on SIGTERM/SIGINT (a second signal stops at once). `ServerThread` runs a server on its own event
loop in a background thread (tests, the CLI's in-process mode).

Status codes: INVALID_ARGUMENT (malformed request, message says what), NOT_FOUND (unknown model name),
RESOURCE_EXHAUSTED (queue full; oversize messages are refused by grpc itself), DEADLINE_EXCEEDED,
UNAUTHENTICATED (missing/wrong bearer token), UNAVAILABLE (warming up or draining), INTERNAL (the engine
failed). A bad request never affects the next one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..runtime import edits
from ..runtime.batcher import Batcher, BatcherClosed, DeadlineExceeded, EngineFailed, QueueFull
from . import codec, kserve, proto
from .admission import Admission, AdmissionInterceptor, AdmissionLimits, RpcFailure
from .auth import check_token
from .metrics import ServiceMetrics
from .models import Model, ModelNotFound, ModelRepository, ModelSet, RepositoryError
from .proto import pb
from .workers import WORKER_ENV

log = logging.getLogger("latcomp.service")

MAX_SEED = 2**32  # numpy.random.RandomState seeds
# Admission's estimate of an edit's peak working memory (measured on the decode/compose/encode path:
# docs/RELIABILITY.md). Input: decoded pixels of every image and mask (Pillow's buffer, the converted copy,
# the split arrays); canvas: the collage and its mask, held to the end, and the resize to the model;
# output: the resize to the output size, the feathered paste-back in float32 and the encoded copy.
BYTES_PER_INPUT_PIXEL = 12
BYTES_PER_CANVAS_PIXEL = 16
BYTES_PER_OUTPUT_PIXEL = 48
BYTES_PER_EDIT = 1 << 20
INLINE_PIXELS = 128 * 128  # edits no larger (inputs, canvas, output) decode and encode on the event loop
INLINE_MAX_EDITS = 4  # ... while at most this many edits are in the server
RESPONSE_OVERHEAD = 64 * 1024  # timing, latent, framing


@dataclass
class ServerConfig:
    bundle: str | None = None  # None: the default bundle shipped in the package
    host: str = "[::]"
    port: int = 50051  # 0: a free port (ComposerServer.start returns it)
    metrics_port: int | None = None  # None: no metrics endpoint; 0: a free port
    metrics_host: str | None = None  # None: the serving host
    metrics_auth: bool = True  # with auth_token: /metrics requires it too
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "auto"
    max_batch: int | None = None  # None: the engine's
    instances: int | None = None  # ort: engine calls in flight at once, each on its own sessions
    threads: int | None = None  # ort: intra-op threads per instance (None: the cores over the instances)
    max_delay_ms: float = 2.0
    max_queue: int = 256
    max_message_mb: float = 16.0
    max_pixels: int = codec.DEFAULT_MAX_PIXELS
    tls_cert: str | None = None
    tls_key: str | None = None
    auth_token: str | None = None
    grace_s: float = 30.0
    drain_delay_s: float = 0.0  # on shutdown: NOT_SERVING but still answering, while load balancers react
    reuse_port: bool = False  # SO_REUSEPORT: several servers share the port (workers, rolling restarts)
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    io_threads: int = 4  # decoding, compositing and encoding, off the event loop
    # Several models (models.py): every bundle under model_repository, instead of `bundle`
    model_repository: str | None = None
    default_model: str | None = None  # the model of requests that name none (None: the first by name)
    max_models: int = 8  # models loaded at once (each holds its engine's memory; a swap holds two)
    poll_s: float | None = None  # rescan the repository this often (None: on SIGHUP only)


@dataclass
class _Job:
    """One edit, decoded and validated, with what finishing it needs."""

    kind: str  # "composite" | "inpaint" | "sample"
    spec: codec.OutputSpec
    edit: edits.Edit | None = None  # the canvas and the model's input (not for samples)
    seed: int = 0
    truncation: float = 1.0

    @property
    def image(self) -> np.ndarray:
        """uint8 [R,R,3], the model's input."""
        return self.edit.image

    @property
    def mask(self) -> np.ndarray:
        """uint8 [R,R,1]."""
        return self.edit.mask


# ---- the service ----------------------------------------------------------------------------------------


class _Servicer(proto.ComposerServicer):
    """ComposerService methods (the generated servicer's, overridden: none is left UNIMPLEMENTED)."""

    def __init__(self, server: ComposerServer):
        self._server = server

    async def Composite(self, request, context):
        return await self._server.unary(context, "composite", request)

    async def Inpaint(self, request, context):
        return await self._server.unary(context, "inpaint", request)

    async def Sample(self, request, context):
        return await self._server.unary(context, "sample", request)

    async def GetModelInfo(self, request, context):
        try:
            model = self._server.admit(request.model)
        except RpcFailure as failure:
            await context.abort(failure.code, failure.details, failure.trailing)
        return self._server.model_info(model)

    async def EditStream(self, request_iterator, context):
        async for response in self._server.stream(request_iterator, context):
            yield response


class ComposerServer:
    def __init__(self, engine: Any | None, config: ServerConfig | None = None):
        self._engine = engine  # None: the models of config.model_repository
        self.config = config or ServerConfig()
        self.models = ModelSet(default=self.config.default_model)  # filled by start()
        self.repository: ModelRepository | None = None
        self._poller: asyncio.Task | None = None
        self.metrics = ServiceMetrics()
        max_pixels = self.config.max_pixels
        self.limits = codec.Limits(max_pixels=max_pixels, max_total_pixels=4 * max_pixels)
        self.max_message_bytes = int(self.config.max_message_mb * 1024 * 1024)
        token = check_token(self.config.auth_token) if self.config.auth_token is not None else None
        self.admission = Admission(self.config.admission, token, self.metrics)
        self.state = "created"  # -> starting -> serving -> draining -> stopped
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._draining: asyncio.Event | None = None  # set when streams must end (the drain refuses)
        self._stream_wakeups: set[asyncio.Event] = set()  # each EditStream's, set on drain to end it
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._io = ThreadPoolExecutor(max_workers=self.config.io_threads, thread_name_prefix="latcomp-io")

    @property
    def engine(self) -> Any:
        """The default model's engine (what requests naming no model run on)."""
        model = self.models.default
        return self._engine if model is None else model.engine

    @property
    def batcher(self) -> Batcher | None:
        model = self.models.default
        return None if model is None else model.batcher

    def make_batcher(self, engine: Any) -> Batcher:
        config = self.config
        return Batcher(
            engine,
            max_batch=config.max_batch,
            max_delay_ms=config.max_delay_ms,
            max_queue=config.max_queue,
            on_batch=self.metrics.on_batch,
        )

    def _open_bundle(self, path) -> Any:
        """An engine for one bundle of the model repository, with the server's engine settings."""
        return open_engine(dataclasses.replace(self.config, bundle=str(path)))

    # ---- lifecycle ----

    async def start(self, warm_up: bool = True) -> int:
        """Binds and starts serving (health NOT_SERVING until warmed up); returns the bound port."""
        config = self.config
        if self._engine is not None:
            engine = self._engine
            self.models.put(Model(engine.name, engine, self.make_batcher(engine), owned=False))
        else:
            self.repository = ModelRepository(config.model_repository, self.models, self._open_bundle,
                                              self.make_batcher, config.max_models, config.grace_s)
        self.metrics.queue_depth.set_function(lambda: self.models.queue_depth)
        self._draining = asyncio.Event()
        # No maximum_concurrent_rpcs: grpc's global cap would count health checks and idle streams alike,
        # so a few hundred idle streams would lock everyone out. Admission limits each kind of call instead.
        self._server = grpc.aio.server(
            migration_thread_pool=None,
            interceptors=[AdmissionInterceptor(self.admission)],
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", int(config.reuse_port)),
            ],
        )
        proto.add_servicer_to_server(_Servicer(self), self._server)
        kserve.add_to_server(self, self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        services = (proto.SERVICE_NAME, kserve.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(services, self._server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{config.host}:{config.port}"
        if config.tls_cert or config.tls_key:
            if not (config.tls_cert and config.tls_key):
                raise ValueError("TLS needs both a certificate and a key")
            with open(config.tls_cert, "rb") as cert, open(config.tls_key, "rb") as key:
                credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            self.port = self._server.add_secure_port(address, credentials)
        else:
            self.port = self._server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot bind {address}")
        await self._server.start()
        self.state = "starting"
        if config.metrics_port is not None:
            host = config.host if config.metrics_host is None else config.metrics_host
            token = config.auth_token if config.metrics_auth else None
            self.metrics_port = self.metrics.start_http(config.metrics_port, host, token)
        if warm_up:
            await self.warm_up()
        return self.port

    async def warm_up(self) -> None:
        """Loads the model repository, if any; warms up every model (one dummy engine run per instance, at
        once: first-call costs, allocations, kernels), then SERVING."""
        if self.repository is not None:
            await self.repository.load()  # each bundle opened and warmed up
        else:
            await asyncio.gather(*(model.warm_up() for model in self.models))
        if self.state == "starting":
            self.state = "serving"
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)
            if self.repository is not None and self.config.poll_s:
                self._poller = asyncio.get_running_loop().create_task(self._poll(self.config.poll_s))

    async def reload(self) -> dict[str, list[str]] | None:
        """Applies the model repository's changes (SIGHUP, polling); None when there is nothing to reload."""
        if self.repository is None or self.state != "serving":
            return None
        return await self.repository.reload()

    async def _poll(self, every_s: float) -> None:
        while self.state == "serving":
            await asyncio.sleep(every_s)
            await self.reload()

    async def _set_health(self, status: int) -> None:
        for service in ("", proto.SERVICE_NAME, kserve.SERVICE_NAME):
            await self._health.set(service, status)
        self.metrics.serving.set(1 if status == health_pb2.HealthCheckResponse.SERVING else 0)

    async def drain(self, grace: float | None = None, delay: float | None = None) -> None:
        """Stops without losing an accepted call: health NOT_SERVING; for `delay` seconds (the config's
        drain_delay_s) calls are still answered while load balancers notice; then new calls get
        UNAVAILABLE, accepted edits finish and open streams end UNAVAILABLE (all within `grace` seconds
        from the start), and the port closes."""
        if self.state in ("draining", "stopped"):
            return
        grace = self.config.grace_s if grace is None else grace
        delay = self.config.drain_delay_s if delay is None else delay
        end = time.monotonic() + grace
        self.state = "draining"
        self.metrics.serving.set(0)
        if self._poller is not None:
            self._poller.cancel()
        await self._health.enter_graceful_shutdown()
        admission = self.admission
        log.info("draining: NOT_SERVING, answering for %.1f s more (grace %.1f s, %d edits in progress)",
                 delay, grace, admission.edits)  # fmt: skip
        await asyncio.sleep(max(0.0, min(delay, end - time.monotonic())))
        admission.accepting = False  # from here every call but health gets UNAVAILABLE from admission
        self._draining.set()  # EditStreams end after the request they are computing
        for wakeup in self._stream_wakeups:
            wakeup.set()
        while admission.edits and time.monotonic() < end:
            await asyncio.sleep(0.005)
        await admission.end_streams()  # idle streams (Watch, reflection, EditStream): UNAVAILABLE
        # grpc core cancels (CANCELLED) the calls that reach it after stop() begins and before their
        # client has seen the GOAWAY, so the port closes in a pause between calls: until none has arrived
        # for 30 ms (at most 0.25 s) the calls that come are answered UNAVAILABLE, which clients retry.
        quiet_end = min(end, time.monotonic() + 0.25)
        while time.monotonic() - admission.last_call < 0.03 and time.monotonic() < quiet_end:
            await asyncio.sleep(0.005)
        await self._server.stop(max(0.0, end - time.monotonic()))
        # batchers close (a hung engine cannot outlast grace); engines the server opened close too
        await asyncio.gather(*(model.retire(max(0.0, end - time.monotonic())) for model in self.models))
        if self.models.inflight:
            log.error("an engine call is still running after the grace period; it is abandoned")
        self.metrics.stop_http()
        self._io.shutdown(wait=False)
        self.state = "stopped"
        log.info("stopped")

    async def stop_now(self) -> None:
        """Cancels whatever is still running (a second signal during a drain)."""
        if self._server is not None:
            await self._server.stop(None)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

    # ---- request handling ----

    def admit(self, model: str, version: str = "") -> Model:
        """The model a request names ("" = the default), or UNAVAILABLE (warming up, draining), NOT_FOUND."""
        if self.state in ("created", "starting"):
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, "the server is warming up")
        if not self.admission.accepting:
            raise RpcFailure.draining()
        try:
            return self.models.get(model, version)
        except ModelNotFound as error:
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, str(error)) from None

    @contextmanager
    def admitted(self, model: str, version: str = "") -> Iterator[Model]:
        """admit(), holding the model until the block ends (a reload cannot close it under the request)."""
        with self.admit(model, version).hold() as held:
            yield held

    async def compute(self, batcher_call) -> tuple:
        """Awaits a Batcher call (run or sample), its failures as the RpcFailure every service answers."""
        try:
            return await batcher_call
        except QueueFull as error:
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)) from None
        except DeadlineExceeded as error:
            raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, str(error)) from None
        except BatcherClosed:
            raise RpcFailure.draining() from None
        except EngineFailed as error:
            log.error("engine failure: %s", error, exc_info=error.__cause__)
            reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
            raise RpcFailure(grpc.StatusCode.INTERNAL, f"the engine failed: {reason}") from None

    def model_info(self, model: Model) -> Any:
        engine = model.engine
        return pb.ModelInfo(
            name=model.name,
            version=model.version,
            resolution=int(engine.resolution),
            latent_shape=[int(n) for n in engine.latent_shape],
            z_dim=int(engine.z_dim),
            backend=str(engine.backend),
            device=str(engine.device),
            precision=str(getattr(engine, "precision", "")),
            max_batch=model.batcher.max_batch,
            max_pixels=self.limits.max_pixels,
            max_message_bytes=self.max_message_bytes,
            instances=model.batcher.threads,
        )

    async def unary(self, context, kind: str, request) -> Any:
        try:
            return await self._edit(kind, request, _deadline(context), time.monotonic())
        except RpcFailure as failure:
            await context.abort(failure.code, failure.details, failure.trailing)

    async def stream(self, request_iterator, context):
        """EditStream: answers the newest request; ones superseded while the engine was busy are dropped
        (counted). A request that fails, a message that is not an EditStreamRequest, an idle stream and a
        drain end the stream with their status, naming the request: a stream that ends OK has answered
        its newest request."""
        pending: list[Any] = []  # holds at most the newest unanswered request
        arrived = asyncio.Event()
        ended = False
        failure: RpcFailure | None = None  # why reading stopped early (admission: malformed, idle)
        read_id = 0  # request_id of the newest request read

        async def read() -> None:
            nonlocal ended, failure, read_id
            try:
                async for request in request_iterator:
                    if pending:
                        self.metrics.stream_dropped.inc()
                    pending[:] = [request]
                    read_id = request.request_id
                    arrived.set()
            except RpcFailure as error:
                failure = RpcFailure(error.code, f"after request {read_id}: {error.details}")
            finally:
                ended = True
                arrived.set()

        reader = asyncio.get_running_loop().create_task(read())
        self._stream_wakeups.add(arrived)
        request_id = 0
        try:
            while True:  # one request at a time, always the newest
                if pending:
                    request = pending.pop()
                    request_id, kind = request.request_id, request.WhichOneof("edit")
                    if not kind:
                        missing = "no edit (composite, inpaint, sample)"
                        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, missing)
                    edit = getattr(request, kind)
                    yield await self._edit(kind, edit, _deadline(context), time.monotonic(), request_id)
                    continue
                if failure is not None:
                    await context.abort(failure.code, failure.details, failure.trailing)
                if ended:
                    break
                if self._draining.is_set():
                    raise RpcFailure.draining()
                arrived.clear()
                await arrived.wait()
        except RpcFailure as failure:
            await context.abort(failure.code, f"request {request_id}: {failure.details}", failure.trailing)
        finally:
            self._stream_wakeups.discard(arrived)
            reader.cancel()

    async def _edit(self, kind: str, request, deadline: float | None, started: float, request_id: int = 0):
        with self.admitted(request.model) as model:
            resolution = model.engine.resolution
            nbytes, inline = self._cost(kind, request, resolution)
            with self.admission.reserve(nbytes, f"this {kind}"):
                return await self._run_edit(kind, request, deadline, started, request_id, model, inline)

    def _cost(self, kind: str, request, resolution: int) -> tuple[int, bool]:
        """(the peak memory an edit may use, whether its decoding and encoding are cheap enough to run on
        the event loop), from its headers before anything is decoded; an edit whose raw answer cannot fit
        the message limit is refused here, before any compute."""
        try:
            spec = codec.output_spec(request.output)
            pixels, canvas = codec.request_sizes(kind, request, self.limits)
        except codec.InvalidArgument as error:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        model = (resolution, resolution)
        output = canvas if kind != "sample" and spec.size == edits.CANVAS else model
        raw_answer = output[0] * output[1] * 3 + (4 * resolution**2 if spec.return_input else 0)
        if spec.format == pb.IMAGE_FORMAT_RAW and raw_answer + RESPONSE_OVERHEAD > self.max_message_bytes:
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the raw {output[1]}x{output[0]} answer would be {raw_answer / 2**20:.1f} MiB, over the "
                f"{self.max_message_bytes / 2**20:.1f} MiB message limit: ask for PNG or JPEG, or size MODEL",
            )
        nbytes = (
            2 * request.ByteSize()  # grpc's buffer and the parsed message
            + BYTES_PER_INPUT_PIXEL * pixels
            + BYTES_PER_CANVAS_PIXEL * canvas[0] * canvas[1]
            + BYTES_PER_OUTPUT_PIXEL * output[0] * output[1]
            + BYTES_PER_EDIT
        )
        inline = max(pixels, canvas[0] * canvas[1], output[0] * output[1]) <= INLINE_PIXELS
        return nbytes, inline

    async def _run_edit(self, kind: str, request, deadline: float | None, started: float, request_id: int,
                        model: Model, inline: bool = False):
        # A small edit (a few thousand pixels: decoding, compositing and encoding take tens of microseconds)
        # runs on the event loop while few edits are in the server: two thread-pool round trips would cost
        # more than the work. Larger edits, and every edit when many are in, go to the io threads: the loop
        # then only accepts and hands over, so a burst reaches admission and the queue (and is refused
        # there) instead of waiting unseen in grpc behind edits done one by one on the loop.
        inline = inline and self.admission.edits <= INLINE_MAX_EDITS
        loop = asyncio.get_running_loop()
        resolution = model.engine.resolution
        try:
            if inline:
                job = self._prepare(kind, request, resolution)
            else:
                job = await loop.run_in_executor(self._io, self._prepare, kind, request, resolution)
        except codec.InvalidArgument as error:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        if kind == "sample":
            call = model.batcher.sample(job.seed, job.truncation, deadline)
        else:
            call = model.batcher.run(job.image, job.mask, job.spec.realism, deadline)
        image, latent, timing = await self.compute(call)
        self.metrics.queue.observe(timing.queue_ms / 1000)
        if inline:
            response = self._finish(job, image, latent)
        else:
            response = await loop.run_in_executor(self._io, self._finish, job, image, latent)
        response.request_id = request_id
        response.timing.queue_ms = timing.queue_ms
        response.timing.compute_ms = timing.compute_ms
        response.timing.batch_size = timing.batch_size
        response.timing.total_ms = (time.monotonic() - started) * 1000
        return response

    def _prepare(self, kind: str, request, resolution: int) -> _Job:
        """Decodes and validates a request into the model's inputs (in the io pool)."""
        spec = codec.output_spec(request.output)
        if kind == "sample":
            if request.seed >= MAX_SEED:
                raise codec.InvalidArgument(f"seed: {request.seed} is not below 2^32")
            truncation = request.truncation if request.HasField("truncation") else 1.0
            if not math.isfinite(truncation) or truncation < 0:
                raise codec.InvalidArgument(f"truncation: {truncation} must be finite and >= 0")
            return _Job(kind, spec, seed=int(request.seed), truncation=float(truncation))
        if kind == "composite":
            layers = codec.decode_layers(request, self.limits)
        else:
            layers = [codec.decode_inpaint(request, self.limits)]
        edit = edits.prepare(layers, resolution)
        codec.check_output_size(spec, *edit.output_shape(spec.size))
        return _Job(kind, spec, edit)

    def _finish(self, job: _Job, image: np.ndarray, latent: np.ndarray) -> Any:
        """Output size, paste-back and encoding (in the io pool)."""
        spec = job.spec
        if job.kind != "sample":  # the same path as Engine.composite / Engine.inpaint
            image = edits.finish(job.edit, image, spec.size, spec.preserve_known, spec.feather)
        response = pb.EditResponse(image=codec.encode_image(image, spec))
        if spec.return_latent:
            response.latent.CopyFrom(codec.encode_latent(latent))
        if spec.return_input and job.kind != "sample":
            response.input.CopyFrom(codec.encode_image(job.image, spec))
            response.input_mask.CopyFrom(codec.encode_mask(job.mask[..., 0], spec))
        return response


def security_mode(config: ServerConfig) -> str:
    """The start-up log's statement of the auth and TLS mode (always logged, on or off)."""
    tls = f"TLS on (certificate {config.tls_cert})" if config.tls_cert else "TLS off (plaintext)"
    auth = "auth on (bearer token)" if config.auth_token else "auth OFF (any client may call)"
    return f"{auth}, {tls}"


def admission_summary(config: ServerConfig) -> str:
    limits = config.admission
    return (
        f"admission: {limits.max_edits} edits and {limits.memory_budget_mb:g} MiB of working memory at once, "
        f"{limits.max_streams} streams ({limits.max_streams_per_connection} per connection, "
        f"{limits.max_anonymous_streams} without a token), streams idle for {limits.stream_idle_s:g} s end"
    )


def _deadline(context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


# ---- running it -----------------------------------------------------------------------------------------


def open_engine(config: ServerConfig) -> Any:
    from ..runtime import open_bundle

    return open_bundle(
        config.bundle,
        backend=config.backend,
        device=config.device,
        precision=config.precision,
        max_batch=config.max_batch,
        instances=config.instances,
        threads=config.threads,
    )


async def _serve(config: ServerConfig, engine: Any | None) -> int:
    server = ComposerServer(engine, config)
    port = await server.start(warm_up=False)
    what = (f"the model repository {config.model_repository}" if engine is None
            else f"{engine.name} {engine.version}")  # fmt: skip
    log.info(
        "serving %s (%s, %s) on %s:%d, backend %s on %s, warming up",
        what, proto.SERVICE_NAME, kserve.SERVICE_NAME, config.host, port, config.backend, config.device,
    )  # fmt: skip
    log.info("%s; %s", security_mode(config), admission_summary(config))
    if server.metrics_port is not None:
        host = config.host if config.metrics_host is None else config.metrics_host
        guarded = "token required" if config.auth_token and config.metrics_auth else "no token"
        log.info("metrics on http://%s:%d/metrics (%s)", host, server.metrics_port, guarded)
    stop = asyncio.Event()
    signals = 0
    status = 0

    def on_signal(number: int) -> None:
        nonlocal signals
        signals += 1
        log.info("%s: %s", signal.Signals(number).name, "draining" if signals == 1 else "stopping now")
        if signals == 1:
            stop.set()
        else:
            asyncio.get_running_loop().create_task(server.stop_now())

    def on_warm(task: asyncio.Task) -> None:
        nonlocal status
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("warm-up failed, stopping: %s", task.exception())
            status = 2 if isinstance(task.exception(), RepositoryError) else 1  # 2: a bad repository
            stop.set()
        else:
            log.info("SERVING")

    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, on_signal, number)
    if config.model_repository:  # SIGHUP: add, replace and remove models as the repository now holds them
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(server.reload()))
    warm = loop.create_task(server.warm_up())
    warm.add_done_callback(on_warm)
    await stop.wait()
    if not warm.done():
        warm.cancel()
    await server.drain()
    if server.models.inflight:
        # A hung engine call: its thread cannot be stopped, and joining it at exit (or closing the engine
        # under it) would hang, so the process exits now; accepted requests were lost: status 1.
        logging.shutdown()
        os._exit(1)
    return status


def serve(config: ServerConfig) -> int:
    """`latcomp serve`: runs until SIGTERM/SIGINT, then drains; returns the exit status."""
    worker = os.environ.get(WORKER_ENV)  # set by `latcomp serve --workers N` in each worker
    label = "latcomp serve" if worker is None else f"latcomp serve [worker {worker}]"
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {label}: %(message)s")
    if config.model_repository:  # the server opens (and closes) the repository's engines
        if config.bundle:
            raise ValueError("give a bundle or --model-repository, not both")
        return asyncio.run(_serve(config, None))
    engine = open_engine(config)
    try:
        return asyncio.run(_serve(config, engine))
    finally:
        engine.close()


class ServerThread:
    """A ComposerServer on its own event loop in a daemon thread (`with ServerThread(engine) as s:`)."""

    def __init__(self, engine: Any, config: ServerConfig | None = None, warm_up: bool = True):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latcomp-server", daemon=True)
        self._thread.start()
        self.server = ComposerServer(engine, config or ServerConfig(host="127.0.0.1", port=0))
        try:
            self.port = self.call(self.server.start(warm_up=warm_up))
        except BaseException:
            self._shutdown()
            raise

    @property
    def target(self) -> str:
        host = self.server.config.host
        return f"{'localhost' if host in ('[::]', '0.0.0.0', '') else host}:{self.port}"

    def call(self, coroutine, timeout: float | None = 120.0):
        """Runs a coroutine on the server's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, grace: float | None = 5.0) -> None:
        if self._loop.is_closed():
            return
        try:
            self.call(self.server.drain(grace))
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
