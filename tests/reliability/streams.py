"""Idle long-lived streams held open from the test process (grpc.aio on its own loop thread, no thread per
stream), for the lock-out tests: EditStream, health Watch and reflection, with or without a token."""

from __future__ import annotations

import asyncio
import resource
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from latcomp.service.proto import ComposerStub


def raise_fd_limit(needed: int) -> None:
    """Raises the soft RLIMIT_NOFILE to at least `needed` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class StreamHolder:
    """Opens streams over `channels` connections and keeps them open until close()."""

    KINDS = ("edit", "watch", "reflection")

    def __init__(self, target: str, channels: int):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stream-holder", daemon=True)
        self._thread.start()
        self.calls: list = []
        self._channels = self._run(self._open_channels(target, channels))
        self._readers: list[asyncio.Task] = []

    def _run(self, coroutine, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _open_channels(self, target: str, count: int) -> list:
        # distinct channel arguments give distinct connections (grpc shares one subchannel otherwise)
        return [grpc.aio.insecure_channel(target, options=[("latcomp.test.channel", f"{id(self)}/{index}")])
                for index in range(count)]  # fmt: skip

    def open(self, count: int, kind: str, metadata=(), refused: int = 0, settle: float = 0.3):
        """Opens `count` streams of `kind` spread over the channels, waits until `refused` of them have
        ended (at most 60 s) and `settle` seconds more -> (still open, {code: n} of the ones that ended)."""
        return self._run(self._open(count, kind, tuple(metadata), refused, settle))

    async def _open(self, count: int, kind: str, metadata, refused: int, settle: float):
        calls = []
        for index in range(count):
            channel = self._channels[index % len(self._channels)]
            if kind == "edit":
                call = ComposerStub(channel).EditStream(metadata=metadata)
            elif kind == "watch":
                call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(),
                                                                metadata=metadata)  # fmt: skip
                self._readers.append(asyncio.ensure_future(self._read(call)))  # a Watch ends once read
            else:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                call = stub.ServerReflectionInfo(metadata=metadata)
            calls.append(call)
        end = asyncio.get_running_loop().time() + 60
        while sum(call.done() for call in calls) < refused and asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.05)
        await asyncio.sleep(settle)
        ended: dict[str, int] = {}
        for call in calls:
            if call.done():
                code = (await call.code()).name
                ended[code] = ended.get(code, 0) + 1
        self.calls.extend(calls)
        return sum(not call.done() for call in calls), ended

    @staticmethod
    async def _read(call) -> None:
        try:
            async for _ in call:
                pass
        except grpc.RpcError:
            pass

    def codes(self) -> dict[str, int]:
        """{code: n} of every stream opened so far that has ended ("open": still open)."""

        async def collect():
            counts: dict[str, int] = {}
            for call in self.calls:
                code = (await call.code()).name if call.done() else "open"
                counts[code] = counts.get(code, 0) + 1
            return counts

        return self._run(collect())

    def close(self) -> None:
        async def shut():
            for call in self.calls:
                call.cancel()
            await asyncio.gather(*self._readers, return_exceptions=True)
            await asyncio.gather(*(channel.close() for channel in self._channels))

        try:
            self._run(shut())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> StreamHolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
