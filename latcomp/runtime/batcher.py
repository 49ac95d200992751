"""Batcher: turns concurrent single requests into engine batches (asyncio, no torch).

    batcher = Batcher(engine)                       # in a running event loop
    image, latent, timing = await batcher.run(image, mask, realism=0.0, deadline=None)

Scheduling: a request that arrives while the engine is idle and nothing waits runs at once, alone (no
added latency when lightly loaded). Requests that arrive while the engine is busy accumulate; when it
frees up, the next batch takes up to `max_batch` of them, waiting at most `max_delay_ms` for stragglers
to fill it (clients whose previous answers just came back tend to send their next request together).
A batch holds one kind of call (run, generate or sample) and is one engine call in a thread executor,
so the event loop keeps accepting requests meanwhile. Up to `threads` engine calls run at once (default:
the engine's `concurrency`, its instance count): while one batch computes, the next is gathered and
started on a free instance, and finished ones are answered.

Admission: a full queue raises QueueFull; a request whose deadline has passed, or that the recent
compute time of its kind says cannot finish in time, raises DeadlineExceeded without being run; a
request whose caller is cancelled (or times out) leaves the queue at once, freeing its slot.
Deadlines are `time.monotonic()` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np


class BatcherError(Exception):
    """Base of the errors a caller of the Batcher may see."""


class QueueFull(BatcherError):
    """The queue holds max_queue requests already (the service answers RESOURCE_EXHAUSTED)."""


class DeadlineExceeded(BatcherError):
    """The request's deadline passed or could not be met, so it was not run (DEADLINE_EXCEEDED)."""


class EngineFailed(BatcherError):
    """The engine raised while running the request's batch (INTERNAL); the cause is chained."""


class BatcherClosed(BatcherError):
    """The batcher no longer accepts requests (the service is draining: UNAVAILABLE)."""


@dataclass(frozen=True)
class Timing:
    queue_ms: float  # submitted -> its batch's engine call started
    compute_ms: float  # the batch's engine call
    batch_size: int  # requests in that engine call


@dataclass(eq=False)  # identity: _forget's deque.remove must never compare payloads (numpy arrays)
class _Request:
    kind: str  # "run" | "generate" | "sample"
    payload: tuple
    deadline: float | None
    future: asyncio.Future
    submitted: float


class Batcher:
    KINDS = ("run", "generate", "sample")

    def __init__(
        self,
        engine: Any,
        max_batch: int | None = None,
        max_delay_ms: float = 2.0,
        max_queue: int = 256,
        threads: int | None = None,
        on_batch: Callable[[str, int, float], None] | None = None,
    ):
        self.engine = engine
        self.max_batch = int(max_batch or engine.max_batch)
        self.max_delay = max(0.0, max_delay_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.threads = int(getattr(engine, "concurrency", 1) if threads is None else threads)
        if self.max_batch < 1 or self.max_queue < 1 or self.threads < 1:
            raise ValueError("max_batch, max_queue and threads must be >= 1")
        self.on_batch = on_batch  # called with (kind, batch size, compute seconds) after every engine call
        self.batch_sizes: Counter[int] = Counter()  # batch size -> number of engine calls of that size
        self._queue: deque[_Request] = deque()
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="latcomp-engine")
        self._compute_s: dict[str, float] = {}  # recent engine-call seconds per kind (moving average)
        self._inflight = 0  # engine calls running
        self._backlog = False  # a request arrived while the engine was busy
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    # ---- public calls -------------------------------------------------------------------------------

    async def run(
        self, image: np.ndarray, mask: np.ndarray, realism: float = 0.0, deadline: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, Timing]:
        """One composer call: image uint8 [R,R,3], mask uint8 [R,R,1] or [R,R] -> (image, latent, timing)."""
        image, latent, timing = await self._submit("run", (image, mask, float(realism)), deadline)
        return image, latent, timing

    async def generate(self, latent: np.ndarray, deadline: float | None = None) -> tuple[np.ndarray, Timing]:
        """latent float32 [*latent_shape] -> (image uint8 [R,R,3], timing)."""
        image, _, timing = await self._submit("generate", (np.asarray(latent, np.float32),), deadline)
        return image, timing

    async def sample(
        self, seed: int, truncation: float = 1.0, deadline: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, Timing]:
        """engine.sample for one seed -> (image uint8 [R,R,3], latent, timing)."""
        return await self._submit("sample", (int(seed), float(truncation)), deadline)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return self._inflight

    def stats(self) -> dict:
        calls = sum(self.batch_sizes.values())
        requests = sum(size * count for size, count in self.batch_sizes.items())
        return {
            "batches": calls,
            "requests": requests,
            "mean_batch": requests / calls if calls else 0.0,
            "max_batch_seen": max(self.batch_sizes, default=0),
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "queue_depth": self.queue_depth,
        }

    async def close(self, timeout: float | None = None) -> None:
        """Refuses new requests, finishes the queued and running ones, then stops the worker.

        With a timeout (seconds), a hung engine cannot hold the caller (a draining server) past it: the
        requests still queued then fail with BatcherClosed and a running engine call is abandoned.
        """
        self._closed = True
        end = None if timeout is None else time.monotonic() + timeout
        while (self._queue or self._inflight) and (end is None or time.monotonic() < end):
            self._kick()
            await asyncio.sleep(0.005)
        for request in self._queue:
            if not request.future.done():
                request.future.set_exception(BatcherClosed("the batcher closed before the request ran"))
        self._queue.clear()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=not self._inflight)

    # ---- admission ----------------------------------------------------------------------------------

    def _kick(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _too_late(self, request_deadline: float | None, kind: str, now: float) -> bool:
        return request_deadline is not None and now + self._compute_s.get(kind, 0.0) > request_deadline

    async def _submit(self, kind: str, payload: tuple, deadline: float | None):
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        now = time.monotonic()
        if self._too_late(deadline, kind, now):
            raise DeadlineExceeded(self._late_message(deadline, kind, now))
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"the queue is full ({self.max_queue} requests waiting)")
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._work(), name="latcomp-batcher")
        request = _Request(kind, payload, deadline, loop.create_future(), now)
        if self._queue or self._inflight >= self.threads:
            self._backlog = True
        self._queue.append(request)
        self._kick()
        try:
            if deadline is None:
                return await request.future
            return await asyncio.wait_for(request.future, max(0.0, deadline - now))
        except asyncio.TimeoutError:
            self._forget(request)
            raise DeadlineExceeded("the deadline passed while the request waited") from None
        except asyncio.CancelledError:
            self._forget(request)
            raise

    def _forget(self, request: _Request) -> None:
        """Drops a request its caller gave up on (one already in a running batch has its result ignored)."""
        try:
            self._queue.remove(request)
        except ValueError:
            pass

    def _late_message(self, deadline: float, kind: str, now: float) -> str:
        left_ms = (deadline - now) * 1000
        if left_ms <= 0:
            return f"the deadline passed {-left_ms:.1f} ms ago"
        return f"{left_ms:.1f} ms left, a {kind} call recently took {self._compute_s[kind] * 1000:.1f} ms"

    # ---- the worker ---------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            while not self._queue or self._inflight >= self.threads:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._backlog and self.max_delay > 0:
                await self._fill(self._queue[0].kind)
            self._backlog = False
            batch = self._take_batch()
            if batch:
                self._inflight += 1
                task = asyncio.get_running_loop().create_task(self._execute(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _fill(self, kind: str) -> None:
        """Waits up to max_delay for the queue to hold max_batch requests of `kind`."""
        end = time.monotonic() + self.max_delay
        while sum(r.kind == kind for r in self._queue) < self.max_batch:
            left = end - time.monotonic()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[_Request]:
        """Up to max_batch live requests of the oldest request's kind, in arrival order."""
        kind = self._queue[0].kind
        now = time.monotonic()
        batch: list[_Request] = []
        kept: deque[_Request] = deque()
        while self._queue:
            request = self._queue.popleft()
            if request.future.done():
                continue  # cancelled by its caller
            if request.kind != kind or len(batch) == self.max_batch:
                kept.append(request)
            elif self._too_late(request.deadline, kind, now):
                late = self._late_message(request.deadline, kind, now)
                request.future.set_exception(DeadlineExceeded(late))
            else:
                batch.append(request)
        self._queue = kept
        return batch

    async def _execute(self, batch: list[_Request]) -> None:
        kind = batch[0].kind
        try:
            outputs, started, finished = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._call_engine, kind, [r.payload for r in batch]
            )
        except Exception as error:  # noqa: BLE001 - any engine failure fails the whole batch
            for request in batch:
                if not request.future.done():
                    failure = EngineFailed(f"{type(error).__name__}: {error}")
                    failure.__cause__ = error
                    request.future.set_exception(failure)
        else:
            compute = finished - started
            previous = self._compute_s.get(kind)
            self._compute_s[kind] = compute if previous is None else 0.8 * previous + 0.2 * compute
            self.batch_sizes[len(batch)] += 1
            for index, request in enumerate(batch):
                if not request.future.done():
                    timing = Timing((started - request.submitted) * 1000, compute * 1000, len(batch))
                    request.future.set_result((*(output[index] for output in outputs), timing))
            if self.on_batch is not None:
                self.on_batch(kind, len(batch), compute)
        finally:
            self._inflight -= 1
            self._kick()

    def _call_engine(self, kind: str, payloads: list[tuple]) -> tuple[tuple, float, float]:
        """Runs in the executor thread: one engine call for the whole batch -> (outputs, start, end)."""
        started = time.monotonic()
        if kind == "run":
            images = np.stack([p[0] for p in payloads])
            masks = np.stack([p[1] for p in payloads])
            realism = np.array([p[2] for p in payloads], np.float32)
            outputs = self.engine.run(images, masks, realism)
        elif kind == "generate":
            images = self.engine.generate(np.stack([p[0] for p in payloads]))
            outputs = (images, images)  # second slot unused: generate returns no latent
        else:
            seeds = [p[0] for p in payloads]
            truncation = np.array([p[1] for p in payloads], np.float32)
            outputs = self.engine.sample(seeds, truncation)
        sizes = [len(output) for output in outputs]
        if any(size != len(payloads) for size in sizes):  # else some requests would wait forever
            raise RuntimeError(f"the engine returned {sizes} results for a batch of {len(payloads)}")
        return outputs, started, time.monotonic()
