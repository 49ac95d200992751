"""Admission: what a latcomp server lets in, decided before any work is done (no torch).

One `Admission` per server holds the policy and the counts; `AdmissionInterceptor` applies it to every RPC
of every service registered on the server (latcomp.v1, grpc.health.v1, reflection, KServe v2, ...), so
each servicer only asks for what is specific to it (`Admission.reserve` for the memory an edit will use).

Per RPC kind:
- probes (health `Check`) and cheap unary calls: never counted, never refused by a full server, and
  health needs no token, so a saturated or attacked server still answers its load balancer;
- long-lived streams (any streaming RPC, health `Watch` included): at most `max_streams` at once, at most
  `max_streams_per_connection` per client connection, and, with auth on, at most `max_anonymous_streams`
  held by callers without a valid token; each ends after `stream_idle_s` without a message from the client
  (a stream that only receives, like `Watch`, after `stream_idle_s` in all);
- edits: at most `max_edits` admitted at once, and together no more working memory than
  `memory_budget_bytes` (each servicer charges an edit its estimated peak before decoding it);
- while draining (after the drain delay), every call but health gets UNAVAILABLE from here.

Bytes that are not the method's request message get INVALID_ARGUMENT (not grpc's UNKNOWN), on unary and
streaming calls alike, logged as a rate-limited one-line warning. Every call is counted in
`latcomp_requests_total{method,code}` with the status it ended with, refusals included.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from dataclasses import dataclass

import grpc

from .auth import BearerToken
from .metrics import ServiceMetrics

log = logging.getLogger("latcomp.service")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
MAX_ECHO_CHARS = 100  # user-supplied strings echoed in error messages are cut to this


DRAIN_PUSHBACK_MS = 500  # a client refused by a draining server retries after this (its port closes first)


class RpcFailure(Exception):
    """Ends an RPC with `code` and `details` (raised by admission and by servicers); `trailing`: metadata
    sent with the status."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple = ()):
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = trailing

    @classmethod
    def draining(cls) -> RpcFailure:
        """UNAVAILABLE from a draining server, with gRPC's retry pushback: a retrying client (the latcomp
        clients retry UNAVAILABLE) comes back after the port has closed, so it reaches the next server
        rather than spending its attempts here."""
        return cls(grpc.StatusCode.UNAVAILABLE, "the server is draining",
                   (("grpc-retry-pushback-ms", str(DRAIN_PUSHBACK_MS)),))  # fmt: skip


def echo(text: str) -> str:
    """A user-supplied string as it may appear in an error message: quoted, cut to MAX_ECHO_CHARS."""
    text = str(text)
    if len(text) > MAX_ECHO_CHARS:
        text = text[:MAX_ECHO_CHARS] + "..."
    return repr(text)


@dataclass(frozen=True)
class AdmissionLimits:
    max_edits: int = 320  # edits admitted at once (decoding, queued, computing, encoding)
    memory_budget_mb: float = 1280.0  # estimated working memory of all admitted edits
    max_streams: int = 1024  # long-lived streams at once, all callers
    max_streams_per_connection: int = 64
    max_anonymous_streams: int = 16  # with auth on: streams of callers without a valid token
    stream_idle_s: float = 120.0  # a stream ends after this long without a client message

    def __post_init__(self) -> None:
        for name in ("max_edits", "max_streams", "max_streams_per_connection", "max_anonymous_streams"):
            if getattr(self, name) < 0 if name == "max_anonymous_streams" else getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= {0 if name == 'max_anonymous_streams' else 1}")
        if not self.memory_budget_mb > 0 or not self.stream_idle_s > 0:
            raise ValueError("memory_budget_mb and stream_idle_s must be > 0")

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_mb * 1024 * 1024)


class Reservation:
    """Working memory held by one admitted edit; `release()` (or leaving the `with`) gives it back."""

    def __init__(self, admission: Admission, nbytes: int):
        self._admission, self.nbytes = admission, nbytes

    def release(self) -> None:
        if self._admission is not None:
            self._admission._release(self.nbytes)
            self._admission = None

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Admission:
    def __init__(self, limits: AdmissionLimits | None = None, token: str | None = None,
                 metrics: ServiceMetrics | None = None):  # fmt: skip
        self.limits = limits or AdmissionLimits()
        self.metrics = metrics or ServiceMetrics()
        self._token = None if token is None else BearerToken(token)
        self.accepting = True  # False once a drain starts refusing
        self.edits = 0  # edits admitted and not yet answered
        self.reserved = 0  # bytes reserved by them
        self.streams = 0
        self.anonymous_streams = 0
        self._per_connection: Counter[str] = Counter()
        self._stream_tasks: set[asyncio.Task] = set()  # the handlers of the open streams
        self._ending: set[asyncio.Task] = set()  # those end_streams cancelled (they end UNAVAILABLE)
        self.last_call = 0.0  # time.monotonic() of the latest call that reached the interceptor
        self.metrics.memory_reserved.set_function(lambda: self.reserved)
        self.metrics.streams.set_function(lambda: self.streams)

    @property
    def auth(self) -> bool:
        return self._token is not None

    def authenticated(self, metadata) -> bool:
        """Whether the call's first `authorization` header is `Bearer <token>` (true when auth is off)."""
        if self._token is None:
            return True
        for key, value in metadata or ():
            if key == "authorization":
                return self._token.matches(value)
        return False

    # ---- edits ------------------------------------------------------------------------------------

    def reserve(self, nbytes: int, what: str = "the request") -> Reservation:
        """Admits one edit whose working memory is estimated at nbytes, or raises RESOURCE_EXHAUSTED."""
        budget = self.limits.memory_budget_bytes
        if not self.accepting:
            raise RpcFailure.draining()
        if nbytes > budget:
            self._refused("memory")
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{what} needs ~{_mib(nbytes)} of working memory, more than the server's whole budget of "
                f"{_mib(budget)} (--memory-budget-mb); send a smaller image or ask for a smaller output",
            )
        if self.edits >= self.limits.max_edits:
            self._refused("edits")
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server holds {self.edits} edits already (--max-edits); retry later",
            )
        if self.reserved + nbytes > budget:
            self._refused("memory")
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{what} needs ~{_mib(nbytes)} of working memory and {_mib(budget - self.reserved)} of the "
                f"{_mib(budget)} budget is free; retry later",
            )
        self.edits += 1
        self.reserved += nbytes
        return Reservation(self, nbytes)

    def _release(self, nbytes: int) -> None:
        self.edits -= 1
        self.reserved -= nbytes

    # ---- long-lived streams -----------------------------------------------------------------------

    def open_stream(self, peer: str, authenticated: bool) -> None:
        limits = self.limits
        if self.streams >= limits.max_streams:
            self._refused("streams")
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"the server holds {self.streams} streams already (--max-streams)")  # fmt: skip
        if self._per_connection[peer] >= limits.max_streams_per_connection:
            self._refused("streams_per_connection")
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this connection holds {limits.max_streams_per_connection} streams already "
                "(--max-streams-per-connection)",
            )
        if not authenticated and self.anonymous_streams >= limits.max_anonymous_streams:
            self._refused("anonymous_streams")
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{limits.max_anonymous_streams} streams without a valid token are open already "
                "(--max-anonymous-streams); send 'authorization: Bearer <token>'",
            )
        self.streams += 1
        self._per_connection[peer] += 1
        self.anonymous_streams += not authenticated
        self._stream_tasks.add(asyncio.current_task())

    def close_stream(self, peer: str, authenticated: bool) -> None:
        task = asyncio.current_task()
        self._stream_tasks.discard(task)
        self._ending.discard(task)
        self.streams -= 1
        self.anonymous_streams -= not authenticated
        self._per_connection[peer] -= 1
        if not self._per_connection[peer]:
            del self._per_connection[peer]

    async def end_streams(self) -> None:
        """Ends every open stream with UNAVAILABLE (a drain, once edits are done) and waits for them."""
        tasks = list(self._stream_tasks)
        self._ending.update(tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def ended(self, task: asyncio.Task | None) -> bool:
        """Whether end_streams cancelled this handler (rather than its client)."""
        return task in self._ending

    def _refused(self, reason: str) -> None:
        self.metrics.refused.labels(reason).inc()


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


# ---- the interceptor ------------------------------------------------------------------------------------


class _Malformed:
    """What the guarded deserializer returns for bytes that are not the request message."""

    def __init__(self, error: BaseException):
        self.error = type(error).__name__  # the class only: parser messages may quote internals


def _guard_deserializer(deserializer):
    if deserializer is None:
        return None

    def guarded(data: bytes):
        try:
            return deserializer(data)
        except Exception as error:  # noqa: BLE001 - protobuf's DecodeError, or anything a parser raises
            return _Malformed(error)

    return guarded


class _RateLimitedWarning:
    """At most one log line per `interval` seconds; the lines in between are counted, not lost."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(self, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" (and {self._suppressed} more like it in the last {self.interval:.0f} s)"
        self._last, self._suppressed = now, 0
        log.warning(message, *args)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Applies an Admission to every RPC: metrics, malformed messages, auth, drain refusal, stream limits."""

    def __init__(self, admission: Admission):
        self.admission = admission
        self._warn = _RateLimitedWarning()
        self._wrapped: dict[tuple[str, bool], tuple] = {}  # (method, authenticated) -> (handler, wrapped)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        self.admission.last_call = time.monotonic()
        authenticated = self.admission.authenticated(details.invocation_metadata)
        # the wrapped handler depends only on the method's handler and on the token check, so it is made
        # once per pair rather than per call
        key = (details.method, authenticated)
        cached = self._wrapped.get(key)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[key] = (handler, self._admitted(handler, details.method, authenticated))
        return cached[1]

    def _admitted(self, handler, full_method: str, authenticated: bool):
        """The handler wrapped in admission, for calls to full_method that are (not) authenticated."""
        admission = self.admission
        method = full_method.rsplit("/", 1)[-1]
        health = full_method.startswith(HEALTH_PREFIX)
        streaming = handler.request_streaming or handler.response_streaming
        guard = self

        async def gate(context) -> bool:
            """Refusals that come before the call's own work; returns whether it holds a stream slot."""
            if not authenticated and not health:
                raise RpcFailure(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or wrong bearer token (metadata 'authorization: Bearer <token>')",
                )
            if not admission.accepting and not health:
                raise RpcFailure.draining()
            if streaming:
                admission.open_stream(context.peer(), authenticated)
            return streaming

        def run(behaviour, unary_request: bool):
            async def call(request, context):
                if unary_request and isinstance(request, _Malformed):
                    raise guard._malformed(full_method, request, context)
                if not unary_request:
                    request = guard._requests(request, full_method, context)
                if handler.response_streaming and not inspect.isasyncgenfunction(behaviour):
                    # a stream written with context.write (health Watch): bounded in all
                    lifetime = admission.limits.stream_idle_s
                    try:
                        return await asyncio.wait_for(behaviour(request, context), lifetime)
                    except asyncio.TimeoutError:
                        return None  # ends with OK; the watcher opens a new one
                return await behaviour(request, context)

            return call

        def wrap_unary(behaviour, unary_request: bool):
            inner = run(behaviour, unary_request)

            async def admitted(request, context):
                started, error, stream = time.monotonic(), None, False
                admission.metrics.inflight.inc()
                try:
                    stream = await gate(context)
                    return await inner(request, context)
                except RpcFailure as failure:
                    await context.abort(failure.code, failure.details, failure.trailing)
                except asyncio.CancelledError as raised:
                    if not admission.ended(asyncio.current_task()):
                        error = raised
                        raise
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                except BaseException as raised:
                    error = raised
                    raise
                finally:
                    if stream:
                        admission.close_stream(context.peer(), authenticated)
                    admission.metrics.inflight.dec()
                    guard._record(method, context, started, error)

            return admitted

        def wrap_stream(behaviour, unary_request: bool):
            if not inspect.isasyncgenfunction(behaviour):
                return wrap_unary(behaviour, unary_request)

            async def admitted(request, context):
                started, error, stream = time.monotonic(), None, False
                admission.metrics.inflight.inc()
                try:
                    stream = await gate(context)
                    if unary_request and isinstance(request, _Malformed):
                        raise guard._malformed(full_method, request, context)
                    if not unary_request:
                        request = guard._requests(request, full_method, context)
                    async for response in behaviour(request, context):
                        yield response
                except RpcFailure as failure:
                    await context.abort(failure.code, failure.details, failure.trailing)
                except asyncio.CancelledError as raised:
                    if not admission.ended(asyncio.current_task()):
                        error = raised
                        raise
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                except BaseException as raised:
                    error = raised
                    raise
                finally:
                    if stream:
                        admission.close_stream(context.peer(), authenticated)
                    admission.metrics.inflight.dec()
                    guard._record(method, context, started, error)

            return admitted

        return _wrap_handler(handler, wrap_unary, wrap_stream)

    def _malformed(self, method: str, request: _Malformed, context, index: int | None = None) -> RpcFailure:
        where = "the request" if index is None else f"stream message {index}"
        self._warn("malformed message from %s to %s: %s", context.peer(), method, request.error)
        return RpcFailure(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{where} is not a valid request message for {method} ({request.error})",
        )

    async def _requests(self, iterator, method: str, context):
        """The request stream: malformed messages raise INVALID_ARGUMENT, idleness DEADLINE_EXCEEDED."""
        idle = self.admission.limits.stream_idle_s
        messages = iterator.__aiter__()
        index = 0
        while True:
            try:
                request = await asyncio.wait_for(messages.__anext__(), idle)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise RpcFailure(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no message on this stream for {idle:g} s (--stream-idle-s)",
                ) from None
            index += 1
            if isinstance(request, _Malformed):
                raise self._malformed(method, request, context, index)
            yield request

    def _record(self, method: str, context, started: float, error: BaseException | None) -> None:
        if isinstance(error, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        else:
            code = context.code()
            if code is None:
                code = grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        metrics = self.admission.metrics
        metrics.requests.labels(method, name).inc()
        metrics.latency.labels(method).observe(time.monotonic() - started)


def _wrap_handler(handler: grpc.RpcMethodHandler, wrap_unary, wrap_stream) -> grpc.RpcMethodHandler:
    """The same handler with a guarded deserializer and its behaviour wrapped."""
    handler = handler._replace(request_deserializer=_guard_deserializer(handler.request_deserializer))
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=wrap_unary(handler.unary_unary, True))
    if handler.stream_unary is not None:
        return handler._replace(stream_unary=wrap_unary(handler.stream_unary, False))
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=wrap_stream(handler.unary_stream, True))
    return handler._replace(stream_stream=wrap_stream(handler.stream_stream, False))
