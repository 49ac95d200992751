"""Faults around REAL engines on the small exported bundle, behind real gRPC servers on 127.0.0.1.

A fault is injected by `FaultyEngine`, a delegating wrapper defined here around the real engine: chosen
run() calls raise, return a malformed result, or block until released. Everything else is the real thing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from latcomp.runtime import Engine
from latcomp.service.client import AsyncClient, Client, ServiceError, inpaint_request, stream_request
from latcomp.service.proto import ComposerStub

from .support import (
    image,
    inflight_gauge,
    serve,
    server_tasks,
    start_process,
    stop_process,
    until,
    wait_for_port,
)

CODE = grpc.StatusCode


class FaultyEngine:
    """The real engine with faults injected into chosen run() calls (numbered from 1 after `arm`)."""

    concurrency = 1  # calls in order, one at a time, so that a call's number says which requests it holds

    def __init__(self, engine):
        self._engine = engine
        self._lock = threading.Lock()
        self.arm()

    def arm(self, raise_on=(), malformed_on=(), block_on=()) -> None:
        self.calls = 0
        self.raise_on, self.malformed_on, self.block_on = set(raise_on), set(malformed_on), set(block_on)
        self.blocked = threading.Event()  # a blocking call has started
        self.release = threading.Event()  # lets blocking calls go on

    def __getattr__(self, name):  # resolution, max_batch, name, sample, generate, ...: the real engine's
        return getattr(self._engine, name)

    def run(self, images, masks, realism=None):
        with self._lock:
            self.calls += 1
            call = self.calls
        if call in self.block_on:
            self.blocked.set()
            self.release.wait(120)  # "forever" for the test; bounded so a failed test leaves no thread behind
        if call in self.raise_on:
            raise RuntimeError(f"injected fault in engine call {call}")
        result = self._engine.run(images, masks, realism)
        if call in self.malformed_on:
            return tuple(output[:-1] for output in result)  # one answer short
        return result


def _outcome(future) -> tuple[str, str]:
    try:
        future.result(60)
        return "OK", ""
    except ServiceError as error:
        return error.code.name, error.details


def _slots_free(server) -> bool:
    core = server.server
    return core.admission.edits == 0 and core.batcher.queue_depth == 0 and inflight_gauge(server) == 0


# ---- an engine call that raises -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["raise", "malformed"])
def test_a_failing_engine_call_fails_only_its_own_batch(engine, fault):
    faulty = FaultyEngine(engine)
    size = engine.resolution
    with serve(faulty, max_batch=2) as server, Client(server.target, timeout=60) as client:
        # call 1 (alone) holds the engine while three requests queue; call 2 takes two of them and fails,
        # call 3 takes the last one
        faulty.arm(block_on={1}, **{"raise_on" if fault == "raise" else "malformed_on": {2}})
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(client.inpaint, image(size, size, 0))
            until(faulty.blocked.is_set, what="the first engine call")
            queued = [pool.submit(client.inpaint, image(size, size, seed)) for seed in (1, 2, 3)]
            until(lambda: server.server.batcher.queue_depth == 3, what="three queued requests")
            faulty.release.set()
            outcomes = [_outcome(future) for future in [first, *queued]]
        codes = sorted(code for code, _ in outcomes)
        assert outcomes[0] == ("OK", "") and codes == ["INTERNAL", "INTERNAL", "OK", "OK"], outcomes
        expected = "injected fault in engine call 2" if fault == "raise" else "results for a batch of 2"
        for code, details in outcomes:
            if code == "INTERNAL":
                assert "engine failed" in details and expected in details, details
        assert client.inpaint(image(size, size, 4)).image.shape == (size, size, 3)  # and it serves on
        assert faulty.calls == 4
        until(lambda: _slots_free(server), what="free slots")


# ---- an engine call that hangs --------------------------------------------------------------------------


def test_a_hung_engine_call_is_bounded_by_deadlines_and_by_the_grace_period(engine):
    faulty = FaultyEngine(engine)
    size = engine.resolution
    server = serve(faulty, grace_s=30)
    try:
        with Client(server.target, timeout=60) as client, ThreadPoolExecutor(9) as pool:
            faulty.arm(block_on={1})

            def timed(timeout: float):
                started = time.monotonic()
                try:
                    client.inpaint(image(size, size), timeout=timeout)
                    return "OK", time.monotonic() - started
                except ServiceError as error:
                    return error.code.name, time.monotonic() - started

            hung = pool.submit(timed, 1.0)  # runs and hangs in the engine
            until(faulty.blocked.is_set, what="the hung call")
            behind = [pool.submit(timed, 0.5) for _ in range(8)]  # queued behind it
            waited = []
            for future in [hung, *behind]:
                code, elapsed = future.result(30)
                assert code == "DEADLINE_EXCEEDED" and elapsed < 3.0, (code, elapsed)
                waited.append(round(elapsed, 2))
            assert client.health() == "SERVING"
            until(lambda: _slots_free(server), what="free slots after the deadlines")

            faulty.release.set()  # the engine recovers: so does the service
            until(lambda: server.server.batcher.inflight == 0, what="the released call")
            assert client.inpaint(image(size, size)).image.shape == (size, size, 3)

            faulty.arm(block_on={1})  # hung again, without a deadline this time, then drained
            pending = pool.submit(timed, None)
            until(faulty.blocked.is_set, what="the second hung call")
            started = time.monotonic()
            server.stop(grace=1.0)
            drained = time.monotonic() - started
            assert drained < 6.0, "the drain outlasted its grace period"
            print(f"hung engine: deadlines answered after {waited} s; drain with grace 1 s: {drained:.2f} s")
            code, _ = pending.result(30)
            assert code in ("UNAVAILABLE", "CANCELLED"), code  # abandoned with the hung engine call
    finally:
        faulty.release.set()
        server.stop()


_HUNG_SERVER = """
import asyncio, logging, sys, threading
from latcomp.runtime import open_bundle
from latcomp.service import server
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

class Hung:  # the real engine, whose run() hangs after the warm-up
    concurrency = 1  # a single warm-up call
    def __init__(self, engine):
        self._engine, self.calls = engine, 0
    def __getattr__(self, name):
        return getattr(self._engine, name)
    def run(self, *args):
        self.calls += 1
        if self.calls > 1:
            threading.Event().wait()
        return self._engine.run(*args)

engine = Hung(open_bundle(sys.argv[1], backend="ort"))
config = server.ServerConfig(host="127.0.0.1", port=0, grace_s=1.0)
sys.exit(asyncio.run(server._serve(config, engine)))
"""


def test_sigterm_with_a_hung_engine_exits_after_the_grace_period(small_bundle, tmp_path):
    log_path = tmp_path / "serve.log"
    process = start_process(_HUNG_SERVER, str(small_bundle), log_path=log_path)
    try:
        target = f"127.0.0.1:{wait_for_port(log_path, process)}"
        with Client(target, timeout=60) as client, ThreadPoolExecutor(1) as pool:
            client.wait_ready(60)
            resolution = client.model_info()["resolution"]
            pending = pool.submit(client.inpaint, image(resolution, resolution))
            until(lambda: _hung(client), timeout=30, what="the hung call")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            status = process.wait(20)
            elapsed = time.monotonic() - started
            code, _ = _outcome(pending)
    finally:
        stop_process(process)
    log = log_path.read_text()
    assert status == 1 and elapsed < 10, (status, elapsed, log)
    assert "still running after the grace period" in log, log
    print(f"SIGTERM with a hung engine: exit status {status} after {elapsed:.2f} s (grace 1 s)")
    assert code in ("UNAVAILABLE", "CANCELLED"), code


def _hung(client: Client) -> bool:
    """True once a request is stuck in the server (a second one then misses a short deadline)."""
    try:
        client.sample(1, timeout=0.3)
    except ServiceError as error:
        return error.code == CODE.DEADLINE_EXCEEDED
    return False


# ---- cancellation and disconnects -----------------------------------------------------------------------


def test_cancelled_calls_and_streams_free_their_slots(engine):
    faulty = FaultyEngine(engine)
    size = engine.resolution
    request = inpaint_request(image(size, size))
    with serve(faulty) as server:
        core = server.server
        with Client(server.target) as client:
            client.inpaint(image(size, size))  # starts the batcher's worker task
        baseline = server_tasks(server)

        async def cancel_round(count: int) -> None:
            async with grpc.aio.insecure_channel(server.target) as channel:
                stub = ComposerStub(channel)
                calls = [stub.Inpaint(request) for _ in range(count)]
                never = asyncio.Event()

                async def requests():
                    yield stream_request(request, 1)
                    await never.wait()  # the client keeps its side of the stream open

                stream = stub.EditStream(requests())
                streamed = asyncio.ensure_future(stream.read())
                while core.admission.edits < count + 1:  # all in the server: one running, the rest queued
                    await asyncio.sleep(0.005)
                for call in calls:
                    call.cancel()
                stream.cancel()
                await asyncio.gather(*calls, streamed, return_exceptions=True)

        for _ in range(3):  # the same again and again: nothing may pile up
            faulty.arm(block_on={1})
            asyncio.run(cancel_round(20))
            until(lambda: _slots_free(server), what="free slots after cancelling")
            faulty.release.set()
            until(lambda: core.batcher.inflight == 0, what="the released call")
            until(lambda: server_tasks(server) <= baseline, what="no leftover asyncio tasks")

        async def still_serving():
            async with AsyncClient(server.target) as client:
                return await client.inpaint(image(size, size))

        assert asyncio.run(still_serving()).image.shape == (size, size, 3)


_CLIENT = """
import sys, time, grpc, numpy as np
from latcomp.runtime import Engine
from latcomp.service.client import inpaint_request
from latcomp.service.proto import ComposerStub
target, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
stub = ComposerStub(grpc.insecure_channel(target))
calls = [stub.Inpaint.future(inpaint_request(np.zeros((size, size, 3), np.uint8))) for _ in range(count)]
print("sent", flush=True)
time.sleep(600)
"""


def test_a_client_that_dies_frees_its_slots(engine, tmp_path):
    faulty = FaultyEngine(engine)
    size, count = engine.resolution, 12
    with serve(faulty) as server:
        faulty.arm(block_on={1})
        process = start_process(
            _CLIENT, server.target, str(count), str(size), log_path=tmp_path / "client.log"
        )
        try:
            until(lambda: server.server.admission.edits == count, timeout=60, what="the client's requests")
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            until(lambda: _slots_free(server), what="free slots after the client died")
        finally:
            stop_process(process)
            faulty.release.set()
        until(lambda: server.server.batcher.inflight == 0, what="the released call")
        with Client(server.target) as client:
            assert client.inpaint(image(size, size)).image.shape == (size, size, 3)


def test_fault_injector_is_a_real_engine(engine):
    """The wrapper changes nothing when no fault is armed: same outputs as the engine itself."""
    faulty = FaultyEngine(engine)
    size = engine.resolution
    images = image(size, size)[None]
    masks = np.full((1, size, size, 1), 255, np.uint8)
    ours, theirs = faulty.run(images, masks), engine.run(images, masks)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(engine, Engine) and faulty.resolution == engine.resolution
