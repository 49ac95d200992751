"""Lossless shutdown for well-behaved clients (the latcomp clients: they retry UNAVAILABLE with backoff).

`latcomp serve` under load gets SIGTERM: health turns NOT_SERVING at once while calls are still answered
for the drain delay; then new calls get UNAVAILABLE from the application, the accepted ones finish, and the
port closes: every call ends OK or UNAVAILABLE, none CANCELLED. A rolling restart (a new server on the same
port with --reuse-port, then SIGTERM to the old one) loses no request of a client under load.
Short form: one SIGTERM, one restart; long form: five restarts in a row.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest

from latcomp.service.client import AsyncClient, Client, ServiceError

from .support import image, start_process, stop_process, until, wait_for_port

SERVE = "import sys\nfrom latcomp.cli import main\nsys.exit(main(sys.argv[1:]))"


def _serve(bundle, tmp_path, name: str, port: int = 0, *extra: str):
    log_path = tmp_path / f"{name}.log"
    args = ["serve", str(bundle), "--backend", "ort", "--host", "127.0.0.1", "--port", str(port), *extra]
    return start_process(SERVE, *args, log_path=log_path), log_path


def _serving(log_path) -> bool:
    return "SERVING" in log_path.read_text()


async def _load(target: str, size: int, workers: int, outcomes: list, stop: asyncio.Event,
                pause: float = 0.0) -> None:  # fmt: skip
    async def worker(client: AsyncClient, index: int) -> None:
        picture = image(2 * size, 2 * size, index)
        while not stop.is_set():
            sent = time.monotonic()
            try:
                await client.inpaint(picture, preserve_known=True)
                outcomes.append((sent, time.monotonic(), "OK", ""))
            except ServiceError as error:
                outcomes.append((sent, time.monotonic(), error.code.name, error.details))
                await asyncio.sleep(0.05)
            await asyncio.sleep(pause)

    async with AsyncClient(target, timeout=60) as client:
        await asyncio.gather(*(worker(client, index) for index in range(workers)))


def test_sigterm_under_load_answers_every_call_ok_or_unavailable(small_bundle, tmp_path):
    delay = 1.0
    process, log_path = _serve(small_bundle, tmp_path, "serve", 0, "--grace-s", "20", "--drain-delay-s",
                               str(delay))  # fmt: skip
    try:
        target = f"127.0.0.1:{wait_for_port(log_path, process)}"
        with Client(target) as probe:
            probe.wait_ready(60)
            size = probe.model_info()["resolution"]
        outcomes: list = []
        health: list = []

        async def run() -> float:
            stop = asyncio.Event()
            load = asyncio.ensure_future(_load(target, size, 16, outcomes, stop))
            await asyncio.sleep(1.0)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            async with AsyncClient(target) as probe:  # health says NOT_SERVING before anything is refused
                while time.monotonic() < signalled + delay:
                    try:
                        health.append((time.monotonic(), await probe.health(timeout=1)))
                    except ServiceError as error:
                        health.append((time.monotonic(), error.code.name))
                    await asyncio.sleep(0.05)
            await asyncio.sleep(3.0)
            stop.set()
            await load
            return signalled

        signalled = asyncio.run(run())
        status = process.wait(30)
    finally:
        stop_process(process)
    log = log_path.read_text()
    assert status == 0, log
    codes = {code for _, _, code, _ in outcomes}
    others = [outcome for outcome in outcomes if outcome[2] not in ("OK", "UNAVAILABLE")]
    assert codes <= {"OK", "UNAVAILABLE"}, (sorted(codes), others[:5])
    # still answered while load balancers react: every call sent and answered within the delay is OK
    window = (signalled + 0.2, signalled + delay - 0.2)
    during_delay = [code for sent, done, code, _ in outcomes if window[0] < sent and done < window[1]]
    assert during_delay and set(during_delay) == {"OK"}, during_delay
    assert {status for when, status in health if when > signalled + 0.3} == {"NOT_SERVING"}, health
    late_ok = [1 for sent, _, code, _ in outcomes if code == "OK" and sent > signalled + delay + 1.0]
    refused = [1 for sent, _, code, _ in outcomes if code == "UNAVAILABLE" and sent > signalled + delay]
    assert refused and not late_ok, (len(refused), len(late_ok))
    print(f"SIGTERM: {len(during_delay)} calls answered OK during the {delay} s drain delay, {len(refused)} "
          f"refused UNAVAILABLE after it, none CANCELLED")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rolling_restarts(bundle, tmp_path, restarts: int) -> None:
    port = _free_port()
    shared = ("--reuse-port", "--drain-delay-s", "0.5", "--grace-s", "20")
    process, log_path = _serve(bundle, tmp_path, "server-0", port, *shared)
    processes = [process]
    try:
        until(lambda: _serving(log_path), 60, "the first server SERVING")
        target = f"127.0.0.1:{port}"
        with Client(target) as probe:
            size = probe.model_info()["resolution"]
        outcomes: list = []

        async def run() -> None:
            stop = asyncio.Event()
            load = asyncio.ensure_future(_load(target, size, 8, outcomes, stop, pause=0.005))
            await asyncio.sleep(1.0)
            for index in range(1, restarts + 1):
                new, new_log = _serve(bundle, tmp_path, f"server-{index}", port, *shared)
                processes.append(new)
                while not _serving(new_log):  # the new server is up before the old one goes
                    assert new.poll() is None, new_log.read_text()
                    await asyncio.sleep(0.1)
                old = processes[-2]
                old.send_signal(signal.SIGTERM)
                while old.poll() is None:
                    await asyncio.sleep(0.1)
                assert old.returncode == 0
                await asyncio.sleep(1.0)
            stop.set()
            await load

        asyncio.run(run())
    finally:
        for process in processes:
            stop_process(process)
    failed = [(code, details) for _, _, code, details in outcomes if code != "OK"]
    print(f"{restarts} rolling restart(s) under 8 clients: {len(outcomes)} calls, {len(failed)} failed")
    assert outcomes and not failed, failed[:5]


def test_a_rolling_restart_loses_no_request(small_bundle, tmp_path):
    _rolling_restarts(small_bundle, tmp_path, 1)


@pytest.mark.long
def test_rolling_restarts_lose_no_request(small_bundle, tmp_path):
    _rolling_restarts(small_bundle, tmp_path, 5)
