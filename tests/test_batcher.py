"""latcomp.runtime.batcher.Batcher with a real engine on the small exported bundle (no mocks).

Where a test needs the engine to be busy at a known moment, it occupies the batcher's single engine thread
with a gate (conftest's GatedEngine: `engine.hold()`), so the order of events is fixed rather than left to
timing: the module's engine has one instance (concurrency 1); the test of two instances opens its own.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from latcomp.runtime.batcher import Batcher, BatcherClosed, DeadlineExceeded, EngineFailed, QueueFull


@pytest.fixture(scope="module")
def engine(gated_engine):
    return gated_engine(instances=1)


def _inputs(engine, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = engine.resolution
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    masks = np.zeros((count, size, size, 1), np.uint8)
    for index in range(count):  # a different known region per request
        masks[index, : 1 + index % (size - 1)] = 255
    return images, masks


class _Recorder:
    def __init__(self):
        self.batches: list[tuple[str, int]] = []

    def __call__(self, kind: str, size: int, compute_s: float) -> None:
        self.batches.append((kind, size))


async def _until(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.001)


def test_single_request_runs_at_once_and_matches_the_engine(engine):
    images, masks = _inputs(engine, 1)
    expected_image, expected_latent = engine.run(images, masks, np.float32([0.25]))

    async def main():
        batcher = Batcher(engine, max_delay_ms=200.0)  # a delay applied here would show in queue_ms
        try:
            return await batcher.run(images[0], masks[0], realism=0.25)
        finally:
            await batcher.close()

    image, latent, timing = asyncio.run(main())
    np.testing.assert_array_equal(image, expected_image[0])
    np.testing.assert_allclose(latent, expected_latent[0], rtol=1e-5, atol=1e-6)
    assert timing.batch_size == 1
    assert timing.queue_ms < 100.0 and timing.compute_ms > 0


def test_concurrent_requests_are_batched_and_answered_in_place(engine):
    count = 24
    images, masks = _inputs(engine, count, seed=1)
    realism = np.linspace(0, 1, count, dtype=np.float32)
    expected_images, expected_latents = engine.run(images, masks, realism)
    recorder = _Recorder()

    async def main():
        batcher = Batcher(engine, max_batch=8, on_batch=recorder)
        try:
            calls = [batcher.run(images[i], masks[i], realism=realism[i]) for i in range(count)]
            return await asyncio.gather(*calls), batcher.stats()
        finally:
            await batcher.close()

    results, stats = asyncio.run(main())
    sizes = [size for _, size in recorder.batches]
    assert max(sizes) > 1 and max(sizes) <= 8 and sum(sizes) == count
    assert stats["requests"] == count and stats["max_batch_seen"] == max(sizes)
    for index, (image, latent, timing) in enumerate(results):
        # Each caller gets its own row back (batch composition may move a pixel by one level).
        assert np.abs(image.astype(int) - expected_images[index]).max() <= 1
        np.testing.assert_allclose(latent, expected_latents[index], rtol=1e-4, atol=1e-4)
        assert 1 <= timing.batch_size <= 8


def test_batches_hold_one_kind_oldest_first(engine):
    images, masks = _inputs(engine, 6, seed=2)
    latent = engine.sample([5])[1][0]
    recorder = _Recorder()

    async def main():
        batcher = Batcher(engine, max_batch=4, on_batch=recorder)
        gate = engine.hold()
        first = asyncio.ensure_future(batcher.run(images[0], masks[0]))
        await _until(lambda: batcher.inflight == 1)  # taken alone, waiting for the held thread
        calls = [
            batcher.run(images[1], masks[1]),
            batcher.sample(3, truncation=0.5),
            batcher.run(images[2], masks[2]),
            batcher.generate(latent),
            batcher.sample(4),
            batcher.run(images[3], masks[3]),
            batcher.run(images[4], masks[4]),
            batcher.run(images[5], masks[5]),
        ]
        tasks = [asyncio.ensure_future(call) for call in calls]
        await _until(lambda: batcher.queue_depth == len(calls))
        gate.set()
        done = await asyncio.gather(first, *tasks)
        await batcher.close()
        return done

    results = asyncio.run(main())
    assert recorder.batches == [("run", 1), ("run", 4), ("sample", 2), ("generate", 1), ("run", 1)]
    sample_image, sample_latent, _ = results[2]
    expected_images, expected_latents = engine.sample([3], 0.5)
    assert np.abs(sample_image.astype(int) - expected_images[0]).max() <= 1
    np.testing.assert_allclose(sample_latent, expected_latents[0], rtol=1e-4, atol=1e-4)
    generated, timing = results[4]
    assert generated.shape == (engine.resolution, engine.resolution, 3) and timing.batch_size == 1


def test_two_instances_run_two_batches_at_once(small_bundle):
    """On an engine of two instances the batcher keeps two engine calls in flight: a second batch starts
    while the first is still running (held here at a gate inside the engine call), and each caller still
    gets its own answer."""
    from latcomp.runtime import open_bundle

    with open_bundle(small_bundle, backend="ort", instances=2, threads=1) as engine:
        images, masks = _inputs(engine, 3, seed=7)
        expected, _ = engine.run(images, masks)
        entered, gate = threading.Semaphore(0), threading.Event()
        compose = engine._compose

        def held_compose(*arrays):
            entered.release()
            gate.wait(30)
            return compose(*arrays)

        engine._compose = held_compose

        async def main():
            batcher = Batcher(engine, max_batch=1)
            assert batcher.threads == engine.concurrency == 2
            calls = [asyncio.ensure_future(batcher.run(images[i], masks[i])) for i in range(3)]
            await _until(lambda: batcher.inflight == 2)
            both_inside = await asyncio.to_thread(lambda: all(entered.acquire(timeout=10) for _ in range(2)))
            queued = batcher.queue_depth  # the third waits for a free instance
            gate.set()
            done = await asyncio.gather(*calls)
            await batcher.close()
            return both_inside, queued, done

        both_inside, queued, results = asyncio.run(main())
    assert both_inside and queued == 1
    for index, (image, _, timing) in enumerate(results):
        assert np.abs(image.astype(int) - expected[index]).max() <= 1 and timing.batch_size == 1


def test_full_queue_raises_queue_full(engine):
    images, masks = _inputs(engine, 1)

    async def main():
        batcher = Batcher(engine, max_batch=2, max_queue=3)
        # All ten submit before the worker first runs: three fit, seven are refused at once.
        results = await asyncio.gather(
            *(batcher.run(images[0], masks[0]) for _ in range(10)), return_exceptions=True
        )
        await batcher.close()
        return results

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, QueueFull)]
    assert len(refused) == 7 and "queue is full" in str(refused[0])
    assert sum(isinstance(r, tuple) for r in results) == 3


def test_deadlines(engine):
    images, masks = _inputs(engine, 1)
    recorder = _Recorder()

    async def main():
        batcher = Batcher(engine, on_batch=recorder)
        await batcher.run(images[0], masks[0])  # teaches the batcher how long a run takes
        runs = len(recorder.batches)
        with pytest.raises(DeadlineExceeded, match="passed"):
            await batcher.run(images[0], masks[0], deadline=time.monotonic() - 0.001)
        recent = batcher._compute_s["run"]
        with pytest.raises(DeadlineExceeded, match="recently took"):
            await batcher.run(images[0], masks[0], deadline=time.monotonic() + recent / 10)
        # Admitted, but stuck behind a busy engine until its deadline: it leaves the queue unrun.
        gate = engine.hold()
        blocker = asyncio.ensure_future(batcher.run(images[0], masks[0]))
        await _until(lambda: batcher.inflight == 1)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="waited"):
            await batcher.run(images[0], masks[0], deadline=started + max(0.2, 3 * recent))
        assert batcher.queue_depth == 0
        gate.set()
        await blocker
        await batcher.close()
        return runs

    runs = asyncio.run(main())
    assert len(recorder.batches) == runs + 1  # only the blocker ran after the first call


def test_cancelled_request_frees_its_slot(engine):
    images, masks = _inputs(engine, 1)
    recorder = _Recorder()

    async def main():
        batcher = Batcher(engine, max_batch=1, max_queue=1, on_batch=recorder)
        gate = engine.hold()
        running = asyncio.ensure_future(batcher.run(images[0], masks[0]))
        await _until(lambda: batcher.inflight == 1)
        waiting = asyncio.ensure_future(batcher.run(images[0], masks[0]))
        await _until(lambda: batcher.queue_depth == 1)
        with pytest.raises(QueueFull):
            await batcher.run(images[0], masks[0])
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert batcher.queue_depth == 0
        admitted = asyncio.ensure_future(batcher.run(images[0], masks[0]))
        await _until(lambda: batcher.queue_depth == 1)
        running.cancel()  # already in the engine: its result is dropped, nothing breaks
        gate.set()
        image, _, _ = await admitted
        await batcher.close()
        return image

    image = asyncio.run(main())
    assert image.shape == (engine.resolution, engine.resolution, 3)
    assert recorder.batches == [("run", 1), ("run", 1)]


def test_engine_errors_and_close(engine):
    async def main():
        batcher = Batcher(engine)
        wrong = np.zeros((engine.resolution + 1, engine.resolution + 1, 3), np.uint8)
        with pytest.raises(EngineFailed, match="ValueError"):
            await batcher.run(wrong, np.zeros(wrong.shape[:2] + (1,), np.uint8))
        images, masks = _inputs(engine, 1)
        await batcher.run(images[0], masks[0])  # still works after a failed batch
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.run(images[0], masks[0])

    asyncio.run(main())
