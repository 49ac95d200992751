"""`latcomp bench soak`: steady open-loop load at a fraction of the measured peak, for a long time.

    result = run_soak(SoakConfig(bundle="bundle/", duration=300, load_fraction=0.8))
    print(soak_markdown(result))

Two phases on one server (the user's `target`, or one started on 127.0.0.1 in a subprocess by
serve_bench's ServerProcess), with serve_bench's load generator:
  1. peak: a closed loop (`peak_concurrency` workers back-to-back) for `peak_seconds`; its throughput of
     OK answers is the peak;
  2. soak: Poisson arrivals at `load_fraction` x peak for `duration` seconds (open loop: a server that
     falls behind shows as latency and errors, not as a slower client).
Recorded: requests sent, answers by status (client side, and the server's own counts when its metrics
are known), p50/p99 latency, and the server process's resident memory (VmRSS from /proc/PID/status,
sampled every second: at the start, when the soak starts, at the end, and its growth and trend). The
server's PID is known for our own server; for a `target` on this machine pass `pid`.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import report
from . import PAYLOADS, RPCS
from .serve_bench import (
    Load,
    ServerOptions,
    ServerProcess,
    batch_histogram,
    build_requests,
    closed_loop,
    fetch_model_info,
    open_channel,
    open_loop,
    result_head,
    scrape,
    status_counts,
    summarize,
)


@dataclass
class SoakConfig:
    target: str | None = None  # HOST:PORT of a running server; None: start one on `bundle`
    bundle: str | None = None  # None: the default bundle shipped in the package
    metrics_url: str | None = None  # the target's Prometheus endpoint (known for our own server)
    pid: int | None = None  # the target's process id, for its memory (known for our own server)
    duration: float = 60.0  # seconds of steady load
    load_fraction: float = 0.8  # of the measured peak
    peak_seconds: float = 10.0  # closed-loop seconds measuring the peak
    peak_concurrency: int = 16
    rpc: str = "inpaint"
    payload: str = "raw"
    warmup: int = 5  # unrecorded calls before the peak
    timeout: float = 10.0  # deadline of each RPC, seconds
    sample_s: float = 1.0  # memory sampling period
    token: str | None = None
    tls_ca: str | None = None
    seed: int = 0
    server: ServerOptions = field(default_factory=ServerOptions)  # used when there is no target


def rss_mb(pid: int | None) -> tuple[float | None, float | None]:
    """(VmRSS, VmHWM) of a process in MiB from /proc/PID/status; (None, None) when unreadable."""
    if pid is None:
        return None, None
    found = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None, None
    return found.get("VmRSS"), found.get("VmHWM")


def _check_config(config: SoakConfig) -> None:
    if config.target and config.bundle:
        raise ValueError("give either a target server or a bundle to serve, not both")
    if config.rpc not in RPCS:
        raise ValueError(f"rpc must be one of {', '.join(RPCS)}, got {config.rpc!r}")
    if config.payload not in PAYLOADS:
        raise ValueError(f"payload must be one of {', '.join(PAYLOADS)}, got {config.payload!r}")
    if config.duration <= 0 or config.peak_seconds <= 0 or config.sample_s <= 0:
        raise ValueError("duration, peak seconds and the sampling period must be > 0")
    if not 0 < config.load_fraction <= 1.5:
        raise ValueError(f"load fraction must lie in (0, 1.5], got {config.load_fraction}")
    if config.peak_concurrency < 1:
        raise ValueError("peak concurrency must be >= 1")


def _trend(samples: list[list]) -> float | None:
    """MiB per minute of the RSS samples' least-squares line over the second half of the soak (the first
    half includes allocator and cache warm-up)."""
    points = [(t, mb) for t, mb, *_ in samples if mb is not None]
    points = points[len(points) // 2 :]
    if len(points) < 3:
        return None
    t, mb = np.array(points, np.float64).T
    if np.ptp(t) <= 0:
        return None
    return float(np.polyfit(t, mb, 1)[0] * 60)


async def _soak(config: SoakConfig, target: str, metrics_url: str | None, pid: int | None, progress) -> dict:
    from ..service.proto import ComposerStub

    channel = open_channel(target, config.tls_ca)
    metadata = (("authorization", f"Bearer {config.token}"),) if config.token else ()
    async with channel:
        stub = ComposerStub(channel)
        info = await fetch_model_info(stub, target, config.timeout, metadata)
        requests = build_requests(config.rpc, config.payload, info["resolution"], seed=config.seed)
        method = getattr(stub, config.rpc.capitalize())
        warm = Load(method, requests, config.timeout, metadata)
        for index in range(config.warmup):
            await warm.send(index)
        start_mb, _ = rss_mb(pid)

        progress.update(f"peak: closed loop, c={config.peak_concurrency}, {config.peak_seconds:g} s ...")
        peak_load = Load(method, requests, config.timeout, metadata)
        elapsed = await closed_loop(peak_load, config.peak_concurrency, 1 << 62, config.peak_seconds)
        peak = {"concurrency": config.peak_concurrency, **summarize(peak_load.outcomes, elapsed)}
        peak_rps = peak["throughput_rps"] or 0.0
        progress.done(f"peak: {peak_rps:.1f} req/s at c={config.peak_concurrency} ({peak['ok']} OK)")
        if peak_rps <= 0:
            raise RuntimeError(f"{target}: no request succeeded while measuring the peak: {peak['errors']}")

        rate = config.load_fraction * peak_rps
        progress.update(f"soak: {rate:.1f} req/s for {config.duration:g} s ...")
        load = Load(method, requests, config.timeout, metadata)
        soak_start_mb, _ = rss_mb(pid)
        samples: list[list] = []  # [seconds since the soak started, RSS MiB, answered, errors]
        before = scrape(metrics_url, config.token)
        started = time.perf_counter()

        async def sample() -> None:
            while True:
                mb, _ = rss_mb(pid)
                errors = sum(outcome.code != "OK" for outcome in load.outcomes)
                samples.append([round(time.perf_counter() - started, 3), mb, len(load.outcomes), errors])
                await asyncio.sleep(config.sample_s)

        sampler = asyncio.ensure_future(sample())
        arrivals = math.ceil(rate * config.duration * 1.5) + 16  # Poisson gaps: more than enough
        try:
            elapsed, dropped = await open_loop(load, rate, arrivals, config.duration, config.seed)
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        after = scrape(metrics_url, config.token)
        end_mb, hwm_mb = rss_mb(pid)
        samples.append(
            [
                round(time.perf_counter() - started, 3),
                end_mb,
                len(load.outcomes),
                sum(outcome.code != "OK" for outcome in load.outcomes),
            ]
        )
        soak = {
            "rate": rate,
            **summarize(load.outcomes, elapsed),
            "dropped_by_client": dropped,
            "server_status_counts": status_counts(before, after, config.rpc.capitalize()),
            "batch_sizes_from_metrics": batch_histogram(before, after),
        }
        soak.pop("latency_cdf_ms")

    def difference(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    memory = {
        "pid": pid,
        "rss_start_mb": start_mb,  # after the warm-up calls
        "rss_soak_start_mb": soak_start_mb,  # after the peak phase
        "rss_end_mb": end_mb,
        "rss_peak_mb": hwm_mb,  # VmHWM: the process's high-water mark
        "growth_mb": difference(end_mb, start_mb),
        "growth_during_soak_mb": difference(end_mb, soak_start_mb),
        "trend_mb_per_min": _trend(samples),
        "timeline": samples,
    }
    peak.pop("latency_cdf_ms")
    return {"model": info, "peak": peak, "soak": soak, "memory": memory}


def run_soak(config: SoakConfig, progress: report.Progress | None = None) -> dict:
    """Runs the soak (starting and stopping a server on 127.0.0.1 unless `target` is given)."""
    from ..runtime.bundle import DEFAULT_BUNDLE, BundleError, read_bundle

    progress = progress or report.Progress("bench soak")
    _check_config(config)
    header = report.run_header("soak")
    server, target, metrics_url, pid = None, config.target, config.metrics_url, config.pid
    if target is None:
        if config.bundle is None and not (DEFAULT_BUNDLE / "latcomp.json").is_file():
            raise BundleError(
                f"no default bundle is installed (expected {DEFAULT_BUNDLE}); pass the path of "
                "a bundle made by `latcomp export`, or --target HOST:PORT"
            )
        read_bundle(config.bundle or DEFAULT_BUNDLE, verify=False)  # a clear error before the subprocess
        progress.update("starting a server ...")
        server = ServerProcess(config.bundle, config.server, config.token)
        target, metrics_url, pid = server.target, server.metrics_url, server.process.pid
        progress.done(f"server on {target} (pid {pid}, metrics {metrics_url})")
    try:
        measured = asyncio.run(_soak(config, target, metrics_url, pid, progress))
    finally:
        if server is not None:
            server.stop()
    soak, memory = measured["soak"], measured["memory"]
    errors = ", ".join(f"{code} {n}" for code, n in soak["errors"].items()) or "no errors"
    growth = memory["growth_during_soak_mb"]
    progress.done(
        f"soak: {soak['ok']}/{soak['sent']} OK ({errors}) at {soak['rate']:.1f} req/s, p99 "
        f"{report.fixed(soak['latency_ms']['p99'])} ms, RSS growth "
        f"{'unknown' if growth is None else f'{growth:+.1f} MiB'}"
    )
    return {
        **result_head(header, config, target, metrics_url, server is not None, measured["model"]),
        "peak": measured["peak"],
        "soak": soak,
        "memory": memory,
    }


def soak_markdown(result: dict) -> str:
    info, peak, soak, memory = (
        result["server"]["model_info"],
        result["peak"],
        result["soak"],
        result["memory"],
    )
    own = " (started by the benchmark)" if result["server"]["started_by_benchmark"] else ""
    settings = result["settings"]

    def mib(value: float | None, sign: bool = False) -> str:
        return "-" if value is None else (f"{value:+.1f}" if sign else f"{value:.1f}")

    errors = ", ".join(f"{code} {n}" for code, n in soak["errors"].items()) or "none"
    server_counts = soak["server_status_counts"]
    shown_server = (
        ", ".join(f"{code} {n}" for code, n in sorted(server_counts.items())) if server_counts else "-"
    )
    lines = [
        f"## Soak: {info['name']} {info['version']} ({info['resolution']} px) on {result['target']}{own}",
        "",
        f"- Server: backend {info['backend']}, device {info['device']}, max batch {info['max_batch']}; "
        f"{settings['rpc']}/{settings['payload']}",
        f"- Machine: {report.machine_line(result['machine'])}",
        f"- Date: {result['date']}; command: `{result['command']}`",
        "",
        report.markdown_table(
            ["phase", "load", "sent", "OK", "errors", "req/s", "p50 ms", "p99 ms"],
            [
                [
                    "peak",
                    f"closed c={peak['concurrency']}",
                    peak["sent"],
                    peak["ok"],
                    ", ".join(f"{c} {n}" for c, n in peak["errors"].items()) or "-",
                    report.fixed(peak["throughput_rps"], 1),
                    report.fixed(peak["latency_ms"]["p50"]),
                    report.fixed(peak["latency_ms"]["p99"]),
                ],
                [
                    "soak",
                    f"open {soak['rate']:.1f}/s ({settings['load_fraction']:g} x peak)",
                    soak["sent"],
                    soak["ok"],
                    errors if soak["errors"] else "-",
                    report.fixed(soak["throughput_rps"], 1),
                    report.fixed(soak["latency_ms"]["p50"]),
                    report.fixed(soak["latency_ms"]["p99"]),
                ],
            ],
            "llrrlrrr",
        ),  # fmt: skip
        "",
        f"- Soak: {soak['elapsed_s']:.0f} s, {soak['sent']} requests, errors: {errors}; server-side status "
        f"counts: {shown_server}; arrivals dropped by the client: {soak['dropped_by_client']}",
        f"- Server RSS (MiB, pid {memory['pid'] if memory['pid'] is not None else 'unknown'}): "
        f"{mib(memory['rss_start_mb'])} after warm-up, {mib(memory['rss_soak_start_mb'])} at the soak's "
        f"start, {mib(memory['rss_end_mb'])} at its end (growth {mib(memory['growth_during_soak_mb'], True)} "
        f"during the soak, {mib(memory['growth_mb'], True)} in all; peak {mib(memory['rss_peak_mb'])}; trend "
        f"over the second half {mib(memory['trend_mb_per_min'], True)} MiB/min)",
    ]
    return "\n".join(lines) + "\n"
