"""`latcomp bench serve`: end-to-end load on a latcomp gRPC server (no torch in this process).

    result = run_serve_bench(ServeBenchConfig(bundle="bundle/", concurrency=(1, 4, 16)))
    print(serve_markdown(result)); serve_plot(result, "serve.png")

Either the user's own server (`target`, with `metrics_url` for its Prometheus endpoint) or one this
benchmark starts on 127.0.0.1 in a subprocess (so that the client's event loop and the server do not
share an interpreter), whose metrics port it then knows. Nothing else is contacted.

For each RPC (Composite, Inpaint) and payload (raw pixels, or PNG both ways), after a few unrecorded
warm-up calls:
  - closed loop: for each concurrency level, that many asyncio workers send back-to-back until
    `requests` answers or `duration` seconds, whichever comes first;
  - open loop (with `rate`): Poisson arrivals at `rate` requests/s for `requests` arrivals or `duration`
    seconds; latency counts from the scheduled arrival, so a slow server cannot hide its queue.
Recorded per run: client latency percentiles, throughput, errors by gRPC status, the server's own
timing (queue, compute, total, batch size of each answer) and the engine-call batch-size histogram
read from the server's metrics before and after the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import report
from . import PAYLOADS, RPCS

POOL = 8  # distinct requests per RPC and payload, cycled
MAX_OUTSTANDING = 1024  # open loop: arrivals beyond this many unanswered requests are dropped, and counted
TOKEN_ENV = "LATCOMP_BENCH_SERVER_TOKEN"  # hands the token to our own server without a command line


@dataclass(frozen=True)
class ServerOptions:
    """The server a benchmark starts on 127.0.0.1 when it has no target: its engine and batching settings
    (None: the server's default) and how long it may take to load and warm up."""

    backend: str = "auto"
    device: str = "cpu"
    precision: str = "auto"
    max_batch: int | None = None
    max_delay_ms: float | None = None
    instances: int | None = None
    threads: int | None = None
    start_timeout: float = 300.0  # seconds

    def server_config(self) -> dict:
        """The ServerConfig keyword arguments that were set."""
        given = {key: value for key, value in asdict(self).items() if value is not None}
        given.pop("start_timeout")
        return given


@dataclass
class ServeBenchConfig:
    target: str | None = None  # HOST:PORT of a running server; None: start one on `bundle`
    bundle: str | None = None  # None: the default bundle shipped in the package
    metrics_url: str | None = None  # the target's Prometheus endpoint (known for our own server)
    concurrency: Sequence[int] = (1, 4, 16)
    requests: int = 200  # answers per closed-loop level / arrivals per open-loop run
    duration: float = 30.0  # seconds at most per level or open-loop run
    rate: float | None = None  # open-loop arrivals per second; None: closed loop only
    payloads: Sequence[str] = PAYLOADS
    image_size: int | None = None  # side of the sent images in pixels; None: the model's resolution
    rpcs: Sequence[str] = ("composite",)
    warmup: int = 5  # unrecorded calls per RPC and payload
    timeout: float = 30.0  # deadline of each RPC, seconds
    token: str | None = None
    tls_ca: str | None = None
    seed: int = 0
    server: ServerOptions = field(default_factory=ServerOptions)  # used when there is no target


# ---- our own server -------------------------------------------------------------------------------------


def _child_main(spec: dict) -> None:
    """Runs in the server subprocess: serve until the parent closes stdin (or dies)."""
    from ..service.server import ServerConfig, ServerThread, open_engine

    config = ServerConfig(
        bundle=spec["bundle"],
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        metrics_host="127.0.0.1",
        auth_token=os.environ.pop(TOKEN_ENV, None) or None,
        **spec["options"],
    )
    engine = open_engine(config)
    try:
        with ServerThread(engine, config) as thread:
            print(json.dumps({"port": thread.port, "metrics_port": thread.server.metrics_port}), flush=True)
            sys.stdin.read()
    finally:
        engine.close()


_CHILD = (  # the server subprocess's program; its argument is the JSON spec
    "import json, sys\nfrom latcomp.bench.serve_bench import _child_main\n"
    "_child_main(json.loads(sys.argv[1]))"
)


class ServerProcess:
    """A latcomp server on 127.0.0.1 (free ports) in a subprocess; `stop()` drains it."""

    def __init__(self, bundle: str | None, options: ServerOptions, token: str | None = None):
        spec = {"bundle": bundle, "options": options.server_config()}
        root = str(Path(__file__).resolve().parents[2])  # so the child imports this very latcomp
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        }
        if token:
            env[TOKEN_ENV] = token
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
        )
        ready = self._wait_ready(options.start_timeout)
        if ready is None:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"the benchmark's server did not start:\n{tail}")
        self.port, self.metrics_port = ready["port"], ready["metrics_port"]
        self.target = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _wait_ready(self, timeout: float) -> dict | None:
        """The child's {"port", "metrics_port", ...} line, or None when it exits or times out first."""
        lines: queue.Queue = queue.Queue()

        def read() -> None:
            with contextlib.suppress(OSError, ValueError):  # ValueError: stop() closed the pipe
                for line in self.process.stdout:
                    lines.put(line)
            lines.put(b"")  # end of output: the child exited

        threading.Thread(target=read, daemon=True).start()
        end = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return None
            if not line:
                return None
            try:
                ready = json.loads(line)
            except json.JSONDecodeError:
                continue  # something else the child printed
            if isinstance(ready, dict) and "port" in ready:
                return ready

    def log_tail(self, lines: int = 15) -> str:
        self.log.seek(0)
        return "\n".join(self.log.read().decode(errors="replace").strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self.log.close()


# ---- metrics --------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    """Prometheus text exposition -> [(sample name, labels, value)], e.g. ("latcomp_batch_size_bucket",
    {"kind": "run", "le": "4.0"}, 12.0), parsed by prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return [(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples]


def scrape(url: str | None, token: str | None = None,
           timeout: float = 5.0) -> list[tuple[str, dict, float]] | None:
    """The samples at a Prometheus endpoint (with the bearer `token`, which the server's metrics port needs
    when auth is on), or None when it cannot be reached: the benchmark then reports no server figures."""
    if not url:
        return None
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise ValueError(f"metrics URL must be http(s)://, got {url!r}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as page:  # noqa: S310 - scheme checked above
            return parse_metrics(page.read().decode())
    except OSError:
        return None


def batch_histogram(before: list | None, after: list | None, kind: str = "run") -> dict | None:
    """The server's engine-call batch sizes between two scrapes: {"engine_calls", "mean",
    "buckets": {"1": n, "2": n, "3": n, "4": n, "5-6": n, ...}} (Prometheus buckets, non-cumulative)."""
    if before is None or after is None:
        return None

    def values(samples, suffix):
        return {
            s[1].get("le", ""): s[2]
            for s in samples
            if s[0] == f"latcomp_batch_size_{suffix}" and s[1].get("kind") == kind
        }

    bucket_after, bucket_before = values(after, "bucket"), values(before, "bucket")
    if not bucket_after:
        return None
    cumulative = sorted(((float(le), n - bucket_before.get(le, 0.0)) for le, n in bucket_after.items()))
    buckets, previous_edge, previous_count = {}, 0.0, 0.0
    for edge, count in cumulative:
        if count - previous_count > 0:
            low = int(previous_edge) + 1
            name = (
                "inf" if edge == float("inf") else (str(int(edge)) if low >= edge else f"{low}-{int(edge)}")
            )
            buckets[name] = int(round(count - previous_count))
        previous_edge, previous_count = edge, count
    calls = sum(values(after, "count").values()) - sum(values(before, "count").values())
    total = sum(values(after, "sum").values()) - sum(values(before, "sum").values())
    return {"engine_calls": int(round(calls)), "mean": total / calls if calls else None, "buckets": buckets}


def status_counts(before: list | None, after: list | None, method: str) -> dict | None:
    """Server-side RPC counts by status code between two scrapes."""
    if before is None or after is None:
        return None

    def counts(samples):
        return {
            s[1].get("code"): s[2]
            for s in samples
            if s[0] == "latcomp_requests_total" and s[1].get("method") == method
        }

    start = counts(before)
    return {code: int(n - start.get(code, 0)) for code, n in counts(after).items() if n - start.get(code, 0)}


# ---- requests -------------------------------------------------------------------------------------------


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def build_requests(rpc: str, payload: str, resolution: int, count: int = POOL, seed: int = 0) -> list:
    """Realistic requests of `resolution` x `resolution` pixels (the model's resolution, or larger images that
    the server resizes and answers at their own size): inpaint a procedural face with a paper mask, or
    composite a face with the middle of another face pasted over it."""
    from ..service.client import composite_request, inpaint_request
    from .engine_bench import realistic_inputs

    faces, masks = realistic_inputs(resolution, count + 1, seed)
    masks = masks[..., 0]
    encode = _png if payload == "png" else (lambda array: array)
    quarter = resolution // 4
    built = []
    for index in range(count):
        face, mask = encode(faces[index]), encode(masks[index])
        if rpc == "inpaint":
            built.append(inpaint_request(face, mask, format=payload))
        else:
            middle = faces[index + 1][quarter : resolution - quarter, quarter : resolution - quarter]
            layers = [(face, mask), (encode(np.ascontiguousarray(middle)), None, (quarter, quarter))]
            built.append(composite_request(layers, format=payload))
    return built


# ---- load -----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    latency_s: float
    code: str  # gRPC status name
    timing: tuple[float, float, float, int] | None = None  # server queue, compute, total ms; batch size


@dataclass
class Load:
    """What the client needs to send one RPC."""

    call: object  # the stub's multi-callable
    requests: list
    timeout: float
    metadata: tuple = ()
    outcomes: list[Outcome] = field(default_factory=list)

    async def send(self, index: int, since: float | None = None) -> None:
        """One RPC; latency from `since` (a perf_counter time, default: now)."""
        import grpc

        started = time.perf_counter() if since is None else since
        try:
            response = await self.call(
                self.requests[index % len(self.requests)], timeout=self.timeout, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as error:
            self.outcomes.append(Outcome(time.perf_counter() - started, error.code().name))
            return
        timing = response.timing
        self.outcomes.append(
            Outcome(
                time.perf_counter() - started,
                "OK",
                (timing.queue_ms, timing.compute_ms, timing.total_ms, timing.batch_size),
            )
        )


async def closed_loop(load: Load, concurrency: int, requests: int, duration: float) -> float:
    """`concurrency` workers send back-to-back until `requests` are sent or `duration` passed; returns the
    elapsed seconds."""
    sent = 0
    end = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < end:
            sent += 1
            await load.send(sent)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def open_loop(
    load: Load, rate: float, requests: int, duration: float, seed: int = 0
) -> tuple[float, int]:
    """Poisson arrivals at `rate`/s; returns (elapsed seconds, arrivals dropped for MAX_OUTSTANDING)."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, requests)
    started = time.perf_counter()
    tasks: set[asyncio.Task] = set()
    dropped, arrival = 0, started
    for index, gap in enumerate(gaps):
        arrival += gap
        if arrival - started > duration:
            break
        await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
        if len(tasks) >= MAX_OUTSTANDING:
            dropped += 1
            continue
        task = asyncio.ensure_future(load.send(index, since=arrival))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return time.perf_counter() - started, dropped


def summarize(outcomes: list[Outcome], elapsed: float) -> dict:
    ok = [o for o in outcomes if o.code == "OK"]
    timings = np.array([o.timing for o in ok], np.float64).reshape(-1, 4)
    points = (50, 90, 99)
    latencies = [o.latency_s * 1000 for o in ok]
    return {
        "sent": len(outcomes),
        "ok": len(ok),
        "errors": dict(Counter(o.code for o in outcomes if o.code != "OK")),
        "elapsed_s": elapsed,
        "throughput_rps": len(ok) / elapsed if elapsed > 0 else None,
        "latency_ms": report.percentiles(latencies, points),
        "server_ms": {
            name: report.percentiles(timings[:, column], points)
            for column, name in enumerate(("queue", "compute", "total"))
        },
        "batch_size_per_answer": {
            str(int(size)): count for size, count in sorted(Counter(timings[:, 3].tolist()).items())
        },
        "latency_cdf_ms": report.thinned(latencies),
    }


# ---- the benchmark --------------------------------------------------------------------------------------


def _check_config(config: ServeBenchConfig) -> None:
    if config.target and config.bundle:
        raise ValueError("give either a target server or a bundle to serve, not both")
    if unknown := [p for p in config.payloads if p not in PAYLOADS]:
        raise ValueError(f"payloads must be among {', '.join(PAYLOADS)}, got {unknown}")
    if unknown := [r for r in config.rpcs if r not in RPCS]:
        raise ValueError(f"rpcs must be among {', '.join(RPCS)}, got {unknown}")
    if not config.concurrency or min(config.concurrency) < 1 or config.requests < 1 or config.duration <= 0:
        raise ValueError("concurrency levels and requests must be >= 1 and duration > 0")
    if config.rate is not None and config.rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {config.rate}")


def open_channel(target: str, tls_ca: str | None):
    """An asyncio channel to `target` (TLS when a CA file is given) that carries large raw images."""
    import grpc

    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    if tls_ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
        return grpc.aio.secure_channel(target, credentials, options=options)
    return grpc.aio.insecure_channel(target, options=options)


async def fetch_model_info(stub, target: str, timeout: float, metadata) -> dict:
    """GetModelInfo as a dict; a RuntimeError naming the target and status when the server refuses."""
    import grpc

    from ..service.client import model_info_dict
    from ..service.proto import pb

    try:
        reply = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        raise RuntimeError(f"{target}: GetModelInfo failed: {error.code().name}: {error.details()}") from None
    return model_info_dict(reply)


async def _run(config: ServeBenchConfig, target: str, metrics_url: str | None, progress) -> dict:
    from ..service.proto import ComposerStub

    channel = open_channel(target, config.tls_ca)
    metadata = (("authorization", f"Bearer {config.token}"),) if config.token else ()
    runs = []
    async with channel:
        stub = ComposerStub(channel)
        info = await fetch_model_info(stub, target, config.timeout, metadata)
        loads = {}
        for rpc in config.rpcs:
            for payload in config.payloads:
                size = config.image_size or info["resolution"]
                requests = build_requests(rpc, payload, size, seed=config.seed)
                method = getattr(stub, rpc.capitalize())
                loads[rpc, payload] = Load(method, requests, config.timeout, metadata)
                warm = Load(method, requests, config.timeout, metadata)
                for index in range(config.warmup):
                    await warm.send(index)

        async def measured(mode: str, level: float, rpc: str, payload: str, body) -> None:
            load = loads[rpc, payload]
            load.outcomes = []
            label = f"{rpc}/{payload} " + (f"c={level}" if mode == "closed" else f"rate={level}/s")
            progress.update(f"{label} ...")
            before = scrape(metrics_url, config.token)
            elapsed, dropped = await body(load)
            after = scrape(metrics_url, config.token)
            run = {
                "mode": mode,
                "rpc": rpc,
                "payload": payload,
                ("concurrency" if mode == "closed" else "rate"): level,
                **summarize(load.outcomes, elapsed),
                "batch_sizes_from_metrics": batch_histogram(before, after),
                "server_status_counts": status_counts(before, after, rpc.capitalize()),
            }
            if mode == "open":
                run["dropped_by_client"] = dropped
            runs.append(run)
            errors = ", ".join(f"{code} {n}" for code, n in run["errors"].items()) or "no errors"
            p50, p99 = run["latency_ms"]["p50"], run["latency_ms"]["p99"]
            progress.done(
                f"{label}: {run['ok']}/{run['sent']} OK ({errors}), "
                f"{report.fixed(run['throughput_rps'], 1)} req/s, p50 {report.fixed(p50)} ms, "
                f"p99 {report.fixed(p99)} ms"
            )

        for level in config.concurrency:
            for rpc, payload in loads:

                async def body(load, level=level):
                    return await closed_loop(load, level, config.requests, config.duration), 0

                await measured("closed", level, rpc, payload, body)
        if config.rate:
            for rpc, payload in loads:

                async def body(load):
                    return await open_loop(load, config.rate, config.requests, config.duration, config.seed)

                await measured("open", config.rate, rpc, payload, body)
    return {"model": info, "runs": runs}


def headline(runs: list[dict]) -> dict:
    """The numbers the issue asks for: throughput at the highest / lowest concurrency (16 / 1 by default),
    and p50 / p99 at concurrency 1, per RPC and payload."""
    closed = [r for r in runs if r["mode"] == "closed"]
    levels = sorted({r["concurrency"] for r in closed})
    found = {"scaling": [], "latency_at_lowest_concurrency": []}
    if not levels:
        return found
    low, high = levels[0], levels[-1]
    for key in dict.fromkeys((r["rpc"], r["payload"]) for r in closed):
        at = {r["concurrency"]: r for r in closed if (r["rpc"], r["payload"]) == key}
        name = f"{key[0]}/{key[1]}"
        if high != low and at[low]["throughput_rps"] and at[high]["throughput_rps"] is not None:
            found["scaling"].append(
                {
                    "rpc": key[0],
                    "payload": key[1],
                    "low": low,
                    "high": high,
                    "ratio": at[high]["throughput_rps"] / at[low]["throughput_rps"],
                    "name": name,
                }
            )
        latency = at[low]["latency_ms"]
        found["latency_at_lowest_concurrency"].append(
            {
                "rpc": key[0],
                "payload": key[1],
                "concurrency": low,
                "p50_ms": latency["p50"],
                "p99_ms": latency["p99"],
                "name": name,
            }
        )
    return found


def run_serve_bench(config: ServeBenchConfig, progress: report.Progress | None = None) -> dict:
    """Runs the benchmark (starting and stopping a server on 127.0.0.1 unless `target` is given)."""
    from ..runtime.bundle import DEFAULT_BUNDLE, BundleError, read_bundle

    progress = progress or report.Progress("bench serve")
    _check_config(config)
    header = report.run_header("serve")
    server, target, metrics_url = None, config.target, config.metrics_url
    if target is None:
        if config.bundle is None and not (DEFAULT_BUNDLE / "latcomp.json").is_file():
            raise BundleError(
                f"no default bundle is installed (expected {DEFAULT_BUNDLE}); pass the path of "
                "a bundle made by `latcomp export`, or --target HOST:PORT"
            )
        read_bundle(config.bundle or DEFAULT_BUNDLE, verify=False)  # a clear error before the subprocess
        progress.update("starting a server ...")
        server = ServerProcess(config.bundle, config.server, config.token)
        target, metrics_url = server.target, server.metrics_url
        progress.done(f"server on {target} (metrics {metrics_url})")
    try:
        measured = asyncio.run(_run(config, target, metrics_url, progress))
    finally:
        if server is not None:
            server.stop()
    return {
        **result_head(header, config, target, metrics_url, server is not None, measured["model"]),
        "runs": measured["runs"],
        "headline": headline(measured["runs"]),
    }


def result_head(header: dict, config, target: str, metrics_url: str | None, started: bool,
                model_info: dict) -> dict:
    """The fields `bench serve` and `bench soak` results start with: the run header, what was loaded and
    how (the settings, less the bearer token: a secret)."""
    settings = asdict(config)
    settings.pop("token")
    return {
        **header,
        "target": target,
        "server": {"started_by_benchmark": started, "metrics_url": metrics_url, "model_info": model_info},
        "settings": settings,
    }


# ---- views ----------------------------------------------------------------------------------------------


def _mean_batch(run: dict) -> str:
    histogram = run["batch_sizes_from_metrics"]
    if histogram and histogram["mean"] is not None:
        return f"{histogram['mean']:.2f}"
    sizes = run["batch_size_per_answer"]
    return f"{sum(int(k) * v for k, v in sizes.items()) / max(1, sum(sizes.values())):.2f}*" if sizes else "-"


def serve_markdown(result: dict) -> str:
    info = result["server"]["model_info"]
    own = " (started by the benchmark)" if result["server"]["started_by_benchmark"] else ""
    lines = [
        f"## Serving benchmark: {info['name']} {info['version']} ({info['resolution']} px) on "
        f"{result['target']}{own}",
        "",
        f"- Server: backend {info['backend']}, device {info['device']}, precision {info['precision']}, "
        f"max batch {info['max_batch']}, engine instances {info.get('instances') or '-'}",
        f"- Images sent: {result['settings'].get('image_size') or info['resolution']} px square",
        f"- Machine (client{', and server' if own else ''}): {report.machine_line(result['machine'])}",
        f"- Date: {result['date']}; command: `{result['command']}`",
        "",
    ]
    rows = []
    for r in result["runs"]:
        load = f"c={r['concurrency']}" if r["mode"] == "closed" else f"{r['rate']:g}/s open"
        errors = ", ".join(f"{code} {n}" for code, n in r["errors"].items()) or "-"
        latency, server = r["latency_ms"], r["server_ms"]
        rows.append(
            [
                r["rpc"],
                r["payload"],
                load,
                r["ok"],
                errors,
                report.fixed(r["throughput_rps"], 1),
                report.fixed(latency["p50"]),
                report.fixed(latency["p90"]),
                report.fixed(latency["p99"]),
                report.fixed(server["queue"]["p50"]),
                report.fixed(server["compute"]["p50"]),
                _mean_batch(r),
            ]
        )
    header = [
        "rpc",
        "payload",
        "load",
        "OK",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "queue p50 ms",
        "compute p50 ms",
        "mean batch",
    ]
    lines.append(report.markdown_table(header, rows, "lllrlrrrrrrr"))
    lines.append("")
    head = result["headline"]
    for s in head["scaling"]:
        lines.append(f"- **Throughput c={s['high']} / c={s['low']}** ({s['name']}): {s['ratio']:.2f}x")
    for s in head["latency_at_lowest_concurrency"]:
        lines.append(
            f"- **Latency at c={s['concurrency']}** ({s['name']}): p50 {report.fixed(s['p50_ms'])} ms, "
            f"p99 {report.fixed(s['p99_ms'])} ms"
        )
    histograms = [(r, r["batch_sizes_from_metrics"]) for r in result["runs"] if r["batch_sizes_from_metrics"]]
    for r, histogram in histograms:
        load = f"c={r['concurrency']}" if r["mode"] == "closed" else f"rate {r['rate']:g}/s"
        shown = ", ".join(f"{size}: {n}" for size, n in histogram["buckets"].items())
        lines.append(
            f"- Engine batch sizes, {r['rpc']}/{r['payload']} {load}: {shown} "
            f"({histogram['engine_calls']} engine calls)"
        )
    if not histograms:
        lines.append(
            "- Engine batch sizes: no metrics endpoint (pass --metrics-url); 'mean batch' marked * "
            "is the mean over answers of the batch each was computed in"
        )
    return "\n".join(lines) + "\n"


def serve_plot(result: dict, path: str | Path) -> None:
    """Latency CDF of every run, and throughput against concurrency per RPC and payload."""
    several_rpcs = len({r["rpc"] for r in result["runs"]}) > 1
    cdf = report.Panel("Latency CDF", "latency (ms)", "fraction of requests", ymax=1.0)
    scaling = report.Panel("Throughput (closed loop)", "concurrency", "requests/s", xlog2=True)
    for r in result["runs"]:
        values = r["latency_cdf_ms"]
        if not values:
            continue
        load = f"c={r['concurrency']}" if r["mode"] == "closed" else f"{r['rate']:g}/s"
        label = f"{r['rpc'] + ' ' if several_rpcs else ''}{r['payload']} {load}"
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        cdf.series.append(report.Series(label, values, fractions, markers=False))
    closed = [r for r in result["runs"] if r["mode"] == "closed"]
    for key in dict.fromkeys((r["rpc"], r["payload"]) for r in closed):
        rows = sorted((r for r in closed if (r["rpc"], r["payload"]) == key), key=lambda r: r["concurrency"])
        label = f"{key[0]} {key[1]}" if several_rpcs else key[1]
        scaling.series.append(
            report.Series(label, [r["concurrency"] for r in rows], [r["throughput_rps"] or 0.0 for r in rows])
        )
    report.line_chart([cdf, scaling], path)
