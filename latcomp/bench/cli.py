"""`latcomp bench engine | serve | soak`: the benchmarks' command line (handlers import what they need when
run)."""

from __future__ import annotations

import argparse
import sys

from ..export.synthetic import NAMES as SYNTHETIC_NAMES
from . import BACKENDS, PAYLOADS, RPCS


def _list(kind: type = str, choices: tuple | None = None):
    """An argparse type for comma-separated values ("1,4,16")."""

    def parse(text: str) -> list:
        try:
            values = [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            message = f"expected comma-separated {kind.__name__} values, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        if choices and (bad := [v for v in values if v not in choices]):
            raise argparse.ArgumentTypeError(f"{', '.join(map(str, bad))}: choose from {', '.join(choices)}")
        if kind is int and min(values) < 1:
            raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
        return values

    return parse


def _write_outputs(args: argparse.Namespace, result: dict, markdown: str, plot) -> None:
    from .. import report

    if args.json:
        report.write_json(args.json, result)
    if args.markdown:
        report.write_text(args.markdown, markdown)
    if args.plot:
        plot(result, args.plot)
    written = [path for path in (args.json, args.markdown, args.plot) if path]
    if written:
        print(f"wrote {', '.join(written)}", file=sys.stderr)


def _add_outputs(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("output (the Markdown summary always goes to stdout)")
    out.add_argument(
        "--json", metavar="PATH", help="write the full result (machine, settings, numbers) as JSON"
    )
    out.add_argument("--markdown", metavar="PATH", help="write the Markdown summary to a file too")
    out.add_argument("--plot", metavar="PATH", help="write a PNG plot")
    out.add_argument("--quiet", action="store_true", help="no progress on stderr")


# ---- engine ---------------------------------------------------------------------------------------------


def cmd_engine(args: argparse.Namespace) -> int:
    from .. import report
    from ..runtime import BundleError
    from .engine_bench import EngineBenchConfig, engine_markdown, engine_plot, run_engine_bench

    if args.synthetic and args.bundle:
        print("latcomp bench engine: give either BUNDLE or --synthetic NAME, not both", file=sys.stderr)
        return 2
    progress = report.Progress("bench engine", enabled=not args.quiet)
    if args.synthetic:  # exported once (minutes at the larger sizes) into the cache, then reused
        from ..export import ParityError
        from ..export.synthetic import synthetic_bundle

        try:
            args.bundle = str(synthetic_bundle(args.synthetic, int8="int8" in (args.precision or ()),
                                               log=progress.done))
        except (ParityError, OSError) as error:
            print(f"latcomp bench engine: exporting {args.synthetic}: {error}", file=sys.stderr)
            return 2
    config = EngineBenchConfig(
        bundle=args.bundle,
        backends=args.backends,
        device=args.device,
        precisions=args.precision,
        batch_sizes=args.batch_sizes,
        warmup=args.warmup,
        iterations=args.iterations,
        seconds=None if args.iterations else (args.seconds or 2.0),
        threads=args.threads,
        realism=args.realism,
    )
    try:
        result = run_engine_bench(config, progress)
    except (BundleError, ValueError, OSError) as error:
        print(f"latcomp bench engine: {error}", file=sys.stderr)
        return 2
    markdown = engine_markdown(result)
    print(markdown, end="")
    _write_outputs(args, result, markdown, engine_plot)
    if not result["engines"]:
        print("latcomp bench engine: no engine could be opened (see 'Skipped')", file=sys.stderr)
        return 1
    return 0


def _add_engine(bench) -> None:
    engine = bench.add_parser(
        "engine",
        help="latency and throughput of Engine.run per backend, precision and batch size",
        description="Measure engine.run (the fused composer graph: uint8 face + mask in, uint8 image + "
        "latent out) for every backend x precision on one device and each batch size: p50/p95/p99 latency, "
        "images/s, achieved FLOP/s (from the graph's counted Conv/ConvTranspose/MatMul/Gemm FLOPs) and, on "
        "GPUs with a known peak, its share. Engines are measured side by side in one process, in "
        "interleaved blocks, so ratios such as ORT / torch eager at batch 1 are fair on a noisy machine.",
    )
    engine.add_argument(
        "bundle", nargs="?", help="bundle directory (default: the bundle shipped in the package)"
    )
    engine.add_argument(
        "--synthetic",
        choices=SYNTHETIC_NAMES,
        metavar="NAME",
        help="instead of BUNDLE: one of the paper's model sizes with random weights "
        f"({', '.join(SYNTHETIC_NAMES)}), exported on first use into ~/.cache/latcomp/synthetic "
        "(or $LATCOMP_CACHE_DIR; minutes for the larger sizes, needs torch and onnx) and reused after",
    )
    engine.add_argument(
        "--backends",
        type=_list(str, BACKENDS),
        metavar="LIST",
        help=f"comma-separated, from {', '.join(BACKENDS)} (ort: onnxruntime's own provider "
        "choice; ort-cuda: CUDA EP, ort-trt: TensorRT EP (CUDA EP behind it)); default: ort,torch on cpu, "
        "ort-trt,ort-cuda,trt,torch on cuda; those that cannot run here are listed as skipped",
    )
    engine.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    engine.add_argument(
        "--precision",
        type=_list(str, ("fp32", "fp16", "int8")),
        metavar="LIST",
        help="from fp32,fp16,int8 (default: fp32 on cpu, fp32,fp16 on cuda; a TensorRT plan has its own; "
        "int8: the bundle's INT8 CPU composer, ort only)",
    )
    engine.add_argument(
        "--batch-sizes",
        type=_list(int),
        default=[1, 2, 4, 8, 16],
        metavar="LIST",
        help="default 1,2,4,8,16 (batches above the engine's max_batch run in chunks)",
    )
    engine.add_argument(
        "--warmup", type=int, default=3, help="unrecorded calls per engine and batch (default 3)"
    )
    amount = engine.add_mutually_exclusive_group()
    amount.add_argument("--iterations", type=int, help="recorded calls per engine and batch size")
    amount.add_argument(
        "--seconds",
        type=float,
        help="measured seconds per engine and batch size (default 2; at least 3 calls)",
    )
    engine.add_argument(
        "--threads", type=int, help="CPU threads of onnxruntime (intra-op) and torch (default: their own)"
    )
    engine.add_argument(
        "--realism", type=float, default=0.0, help="realism input of every sample (default 0)"
    )
    _add_outputs(engine)
    engine.set_defaults(run=cmd_engine)


# ---- serve ----------------------------------------------------------------------------------------------


def _token(args: argparse.Namespace) -> str | None:
    """--token, else the one `latcomp serve` reads (--auth-token-file, env LATCOMP_AUTH_TOKEN)."""
    from ..service.auth import configured_token

    if args.token and not args.auth_token_file:
        return args.token
    return configured_token(args.auth_token_file)


def _add_instances(group) -> None:
    group.add_argument("--instances", type=int, help="ort: engine calls in flight at once (default: the "
                       "server's)")
    group.add_argument("--threads", type=int, help="ort: intra-op threads per instance (default: the "
                       "server's)")


def _connection(args: argparse.Namespace) -> dict:
    """The settings `bench serve` and `bench soak` share: which server (a target, or a bundle to start one
    on), how to reach it, and the started server's engine options."""
    from .serve_bench import ServerOptions

    return {
        "target": args.target, "bundle": args.bundle, "metrics_url": args.metrics_url,
        "timeout": args.timeout, "token": _token(args), "tls_ca": args.tls_ca,
        "server": ServerOptions(backend=args.backend, device=args.device, precision=args.precision,
                                max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                                instances=args.instances, threads=args.threads),
    }


def _load_server(command: str, args: argparse.Namespace, run):
    """Runs `run()` (a benchmark against a server) for `latcomp bench COMMAND`: its result, or None after
    printing why it could not run (a target and a bundle both given, a bad bundle, an unreachable target)."""
    from ..runtime import BundleError

    if args.target and args.bundle:
        print(f"latcomp bench {command}: give either BUNDLE (to start a server) or --target, not both",
              file=sys.stderr)
        return None
    try:
        return run()
    except (BundleError, ValueError, OSError, RuntimeError) as error:
        print(f"latcomp bench {command}: {error}", file=sys.stderr)
    except Exception as error:  # e.g. grpc's AioRpcError when the target cannot be reached
        print(f"latcomp bench {command}: {type(error).__name__}: {error}", file=sys.stderr)
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from .. import report
    from .serve_bench import ServeBenchConfig, run_serve_bench, serve_markdown, serve_plot

    def run() -> dict:
        config = ServeBenchConfig(
            concurrency=args.concurrency,
            requests=args.requests,
            duration=args.duration,
            rate=args.rate,
            payloads=args.payload,
            image_size=args.image_size,
            rpcs=args.rpc,
            warmup=args.warmup,
            **_connection(args),
        )
        return run_serve_bench(config, report.Progress("bench serve", enabled=not args.quiet))

    result = _load_server("serve", args, run)
    if result is None:
        return 2
    markdown = serve_markdown(result)
    print(markdown, end="")
    _write_outputs(args, result, markdown, serve_plot)
    return 0 if any(run["ok"] for run in result["runs"]) else 1


def _add_serve(bench) -> None:
    serve = bench.add_parser(
        "serve",
        help="end-to-end gRPC load: latency, throughput, errors, server timing and batch sizes",
        description="Load a latcomp server: a closed-loop sweep over concurrency levels (N workers sending "
        "back-to-back) and, with --rate, an open-loop run with Poisson arrivals; raw and PNG payloads. "
        "Reports p50/p90/p99 latency, throughput, errors by gRPC status, the server's queue and compute "
        "time per answer, and the engine batch sizes from the server's Prometheus metrics. Without "
        "--target it serves BUNDLE itself on 127.0.0.1 in a subprocess; it contacts nothing but the "
        "target and its metrics URL. Every level is bounded by --requests and --duration.",
    )
    serve.add_argument(
        "bundle",
        nargs="?",
        help="bundle to serve on 127.0.0.1 (default: the shipped bundle; not with --target)",
    )
    serve.add_argument("--target", metavar="HOST:PORT", help="a running latcomp server to load instead")
    serve.add_argument(
        "--metrics-url",
        metavar="URL",
        help="the target's Prometheus endpoint, e.g. http://HOST:9090/metrics (batch sizes)",
    )
    serve.add_argument(
        "--concurrency",
        type=_list(int),
        default=[1, 4, 16],
        metavar="LIST",
        help="closed-loop levels (default 1,4,16)",
    )
    serve.add_argument(
        "--requests",
        type=int,
        default=200,
        help="answers per level / arrivals per open-loop run (default 200)",
    )
    serve.add_argument(
        "--duration", type=float, default=30.0, help="seconds at most per level or open-loop run (default 30)"
    )
    serve.add_argument("--rate", type=float, help="also run open loop at this many requests/s (Poisson)")
    serve.add_argument(
        "--payload",
        type=_list(str, PAYLOADS),
        default=list(PAYLOADS),
        metavar="LIST",
        help="raw (pixels both ways) and/or png (PNG both ways) (default raw,png)",
    )
    serve.add_argument(
        "--image-size",
        type=int,
        metavar="PIXELS",
        help="side of the images sent, e.g. 256 for photos larger than the model (the server resizes them "
        "and answers at their size) (default: the model's resolution)",
    )
    serve.add_argument(
        "--rpc",
        type=_list(str, RPCS),
        default=["composite"],
        metavar="LIST",
        help="composite and/or inpaint (default composite)",
    )
    serve.add_argument(
        "--warmup", type=int, default=5, help="unrecorded calls per rpc and payload (default 5)"
    )
    serve.add_argument("--timeout", type=float, default=30.0, help="deadline per RPC in seconds (default 30)")
    auth = serve.add_argument_group("authentication and TLS")
    auth.add_argument(
        "--token",
        help="bearer token (default: env LATCOMP_AUTH_TOKEN); also required of the "
        "benchmark's own server when given",
    )
    auth.add_argument(
        "--auth-token-file", help="file holding the bearer token (keeps it off the command line)"
    )
    auth.add_argument("--tls-ca", help="CA certificate to reach a TLS target")
    own = serve.add_argument_group("the benchmark's own server (without --target)")
    own.add_argument("--backend", "--engine", default="auto", choices=["auto", "ort", "trt", "torch", "null"],
                     help="engine of the server (null: answers at once, computes nothing: the server's own "
                     "ceiling; a benchmarking tool) (default auto)")
    own.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    own.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"],
                     help="composer graph of the server's engine (auto: the backend's best)")
    own.add_argument("--max-batch", type=int, help="largest engine batch (default: the bundle's)")
    own.add_argument(
        "--max-delay-ms", type=float, help="longest wait for a batch to fill (default: the server's)"
    )
    _add_instances(own)
    _add_outputs(serve)
    serve.set_defaults(run=cmd_serve)


# ---- soak -----------------------------------------------------------------------------------------------


def cmd_soak(args: argparse.Namespace) -> int:
    from .. import report
    from .soak import SoakConfig, run_soak, soak_markdown

    def run() -> dict:
        config = SoakConfig(
            pid=args.pid,
            duration=args.duration,
            load_fraction=args.load_fraction,
            peak_seconds=args.peak_seconds,
            peak_concurrency=args.peak_concurrency,
            rpc=args.rpc,
            payload=args.payload,
            **_connection(args),
        )
        return run_soak(config, report.Progress("bench soak", enabled=not args.quiet))

    result = _load_server("soak", args, run)
    if result is None:
        return 2
    markdown = soak_markdown(result)
    print(markdown, end="")
    if args.json:
        report.write_json(args.json, result)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if not result["soak"]["errors"] else 1


def _add_soak(bench) -> None:
    soak = bench.add_parser(
        "soak",
        help="steady open-loop load at a fraction of the measured peak: errors, latency, server memory",
        description="Measure the peak (closed loop, --peak-concurrency workers for --peak-seconds), then "
        "hold --load-fraction of it with Poisson arrivals for --duration seconds. Reports requests sent, "
        "errors by gRPC status, p50/p99 latency and the server process's resident memory (VmRSS from "
        "/proc/PID/status) before and after, with its trend. Without --target it serves BUNDLE itself on "
        "127.0.0.1 in a subprocess. Exit status 0 when the soak had no errors, 1 otherwise.",
    )
    soak.add_argument("bundle", nargs="?", help="bundle to serve on 127.0.0.1 (default: the shipped bundle)")
    soak.add_argument("--target", metavar="HOST:PORT", help="a running latcomp server to load instead")
    soak.add_argument("--metrics-url", metavar="URL", help="the target's Prometheus endpoint (server counts)")
    soak.add_argument("--pid", type=int, help="the target's process id on this machine (its memory)")
    soak.add_argument("--duration", type=float, default=60.0, help="seconds of steady load (default 60)")
    soak.add_argument(
        "--load-fraction", type=float, default=0.8, help="steady rate as a fraction of the peak (default 0.8)"
    )
    soak.add_argument(
        "--peak-seconds", type=float, default=10.0, help="seconds measuring the peak (default 10)"
    )
    soak.add_argument(
        "--peak-concurrency", type=int, default=16, help="closed-loop workers measuring the peak (default 16)"
    )
    soak.add_argument("--rpc", choices=RPCS, default="inpaint", help="default inpaint")
    soak.add_argument("--payload", choices=PAYLOADS, default="raw", help="default raw")
    soak.add_argument("--timeout", type=float, default=10.0, help="deadline per RPC in seconds (default 10)")
    auth = soak.add_argument_group("authentication and TLS")
    auth.add_argument("--token", help="bearer token (default: env LATCOMP_AUTH_TOKEN)")
    auth.add_argument("--auth-token-file", help="file holding the bearer token")
    auth.add_argument("--tls-ca", help="CA certificate to reach a TLS target")
    own = soak.add_argument_group("the benchmark's own server (without --target)")
    own.add_argument("--backend", default="auto", choices=["auto", "ort", "trt", "torch"],
                     help="engine of the server")
    own.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    own.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"],
                     help="composer graph of the server's engine (auto: the backend's best)")
    own.add_argument("--max-batch", type=int, help="largest engine batch (default: the bundle's)")
    own.add_argument("--max-delay-ms", type=float, help="longest wait for a batch to fill")
    _add_instances(own)
    soak.add_argument(
        "--json", metavar="PATH", help="write the full result (with the memory timeline) as JSON"
    )
    soak.add_argument("--quiet", action="store_true", help="no progress on stderr")
    soak.set_defaults(run=cmd_soak)


def register(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="benchmarks: engine (per backend and batch size), serve (end-to-end gRPC load) and soak",
        description="Benchmarks with JSON, Markdown and PNG reports: `latcomp bench engine` measures the "
        "engines side by side, `latcomp bench serve` loads a gRPC server, `latcomp bench soak` holds a "
        "steady load on one for a long time.",
    )
    subcommands = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    _add_engine(subcommands)
    _add_serve(subcommands)
    _add_soak(subcommands)

    def show_help(_args: argparse.Namespace) -> int:
        bench.print_help()
        return 1

    bench.set_defaults(run=show_help)
