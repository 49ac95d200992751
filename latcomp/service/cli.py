"""`latcomp serve | compose | inpaint | sample`, and `server_info` for `latcomp info --server HOST:PORT`.

Every `serve` flag has a LATCOMP_* environment variable (the flag wins). The client commands talk to
`--server HOST:PORT` (env LATCOMP_SERVER); without one they start an in-process server on `--bundle` (default:
the bundle shipped in the package) for the one request, which is what the demo uses. Handlers import grpc and
the runtime only when they run, so `latcomp --help` stays instant and nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

_LAYER = re.compile(r"^(?P<image>.+?)(?::(?P<mask>[^@]+))?(?:@(?P<x>-?\d+),(?P<y>-?\d+))?$")


def _env(name: str, default: Any = None) -> Any:
    """LATCOMP_<name> if set (a string: argparse converts it with the flag's type and reports bad values)."""
    return os.environ.get(f"LATCOMP_{name}") or default


def _flag(parser, flag: str, env: str, default: Any, kind: type, help: str, **kwargs) -> None:
    """A flag whose default comes from LATCOMP_<env>; the help says so."""
    shown = "none" if default is None else default
    parser.add_argument(
        flag,
        type=kind,
        default=_env(env, default),
        help=f"{help} (env LATCOMP_{env}; default {shown})",
        **kwargs,
    )


def _token(args: argparse.Namespace) -> str | None:
    from .auth import configured_token

    return configured_token(args.auth_token_file)


def _boolean(text: str) -> bool:
    """A flag or environment value: 1/true/yes/on or 0/false/no/off."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# ---- serve ----------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from .admission import AdmissionLimits
    from .server import ServerConfig, serve

    if args.workers > 1:
        from .workers import supervise

        if "serve" not in sys.argv:
            print("latcomp serve: --workers needs the `latcomp serve ...` command line", file=sys.stderr)
            return 2
        argv = sys.argv[sys.argv.index("serve") + 1 :]
        return supervise(argv, args.workers, args.host, args.port, args.metrics_port)

    try:
        token = _token(args)
        limits = AdmissionLimits(
            max_edits=args.max_edits,
            memory_budget_mb=args.memory_budget_mb,
            max_streams=args.max_streams,
            max_streams_per_connection=args.max_streams_per_connection,
            max_anonymous_streams=args.max_anonymous_streams,
            stream_idle_s=args.stream_idle_s,
        )
    except ValueError as error:
        print(f"latcomp serve: {error}", file=sys.stderr)
        return 2
    config = ServerConfig(
        bundle=args.bundle,
        host=args.host,
        port=args.port,
        metrics_port=None if args.metrics_port is None or args.metrics_port < 0 else args.metrics_port,
        metrics_host=args.metrics_host,
        metrics_auth=args.metrics_auth == "token",
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        max_batch=args.max_batch,
        instances=args.instances,
        threads=args.threads,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        max_message_mb=args.max_message_mb,
        max_pixels=args.max_pixels,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        auth_token=token,
        grace_s=args.grace_s,
        drain_delay_s=args.drain_delay_s,
        reuse_port=args.reuse_port,
        io_threads=args.io_threads,
        admission=limits,
        model_repository=args.model_repository,
        default_model=args.default_model,
        max_models=args.max_models,
        poll_s=args.poll_s or None,
    )
    if bool(config.tls_cert) != bool(config.tls_key):
        print("latcomp serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        return serve(config)
    except (OSError, ValueError, RuntimeError) as error:  # no bundle, a bad bundle, a port in use, ...
        print(f"latcomp serve: {error}", file=sys.stderr)
        return 2


def _add_serve(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve a bundle over gRPC (latcomp.v1.ComposerService, health, reflection, metrics)",
        description="Serve a model bundle over gRPC: latcomp.v1.ComposerService (Composite, Inpaint, Sample, "
        "EditStream, GetModelInfo), grpc.health.v1 (NOT_SERVING until warmed up and while draining), server "
        "reflection and Prometheus metrics. Concurrent requests are batched. SIGTERM/SIGINT drain: new RPCs "
        "are refused, accepted ones finish within --grace-s; a second signal stops at once. Every flag can "
        "be set by the environment variable named in its help; the flag wins.",
    )
    serve.add_argument(
        "bundle",
        nargs="?",
        default=_env("BUNDLE"),
        help="bundle directory (env LATCOMP_BUNDLE; default: the bundle shipped in the package)",
    )
    _flag(serve, "--host", "HOST", "[::]", str, "address to listen on")
    _flag(serve, "--port", "PORT", 50051, int, "gRPC port (0: a free port, logged)")
    _flag(
        serve, "--metrics-port", "METRICS_PORT", None, int, "Prometheus /metrics HTTP port (0: a free port)"
    )
    _flag(serve, "--metrics-host", "METRICS_HOST", None, str, "address of the metrics port (none: --host)")
    _flag(serve, "--metrics-auth", "METRICS_AUTH", "token", str, "token: with --auth-token-file, /metrics "
          "requires the same bearer token; none: /metrics is open", choices=["token", "none"])
    _flag(serve, "--backend", "BACKEND", "auto", str, "engine (null: computes nothing, answers at once; "
          "for measuring the server itself)", choices=["auto", "ort", "trt", "torch", "null"])
    _flag(serve, "--device", "DEVICE", "cpu", str, "cpu, cuda or cuda:N")
    _flag(serve, "--precision", "PRECISION", "auto", str, "graph precision (int8: the bundle's INT8 CPU "
          "composer from `latcomp export --int8`, ort only)", choices=["auto", "fp32", "fp16", "int8"])
    _flag(serve, "--max-batch", "MAX_BATCH", None, int, "largest engine batch (none: the bundle's)")
    _flag(serve, "--instances", "INSTANCES", None, int, "ort: engine calls in flight at once, each on its "
          "own sessions, so one batch computes while the next is gathered (none: 2 on CPU, 1 on CUDA)")
    _flag(serve, "--threads", "THREADS", None, int, "ort: intra-op threads per instance (none: the physical "
          "cores over the instances)")
    _flag(serve, "--max-delay-ms", "MAX_DELAY_MS", 2.0, float, "longest wait for a batch to fill when busy")
    _flag(serve, "--max-queue", "MAX_QUEUE", 256, int, "queued requests before RESOURCE_EXHAUSTED")
    _flag(serve, "--max-message-mb", "MAX_MESSAGE_MB", 16.0, float, "largest request/response message")
    _flag(serve, "--max-pixels", "MAX_PIXELS", 4096 * 4096, int, "largest image or mask, in pixels")
    _flag(
        serve, "--tls-cert", "TLS_CERT", None, str, "PEM certificate (chain) file; with --tls-key enables TLS"
    )
    _flag(serve, "--tls-key", "TLS_KEY", None, str, "PEM private key file")
    _flag(
        serve,
        "--auth-token-file",
        "AUTH_TOKEN_FILE",
        None,
        str,
        "file holding a bearer token every RPC but health checks must carry as 'authorization: Bearer "
        "<token>'; or put the token itself in env LATCOMP_AUTH_TOKEN",
    )
    _flag(serve, "--grace-s", "GRACE_S", 30.0, float, "seconds accepted requests get to finish on shutdown")
    _flag(serve, "--drain-delay-s", "DRAIN_DELAY_S", 2.0, float, "on shutdown, seconds health says "
          "NOT_SERVING while calls are still answered, so load balancers move away before refusals start")
    _flag(serve, "--reuse-port", "REUSE_PORT", False, _boolean, "SO_REUSEPORT: let another server bind the "
          "same port (rolling restarts, workers)", nargs="?", const=True)
    limits = serve.add_argument_group("admission (see docs/SERVICE.md)")
    _flag(limits, "--max-edits", "MAX_EDITS", 320, int, "edits admitted at once, decoding to encoding")
    _flag(limits, "--memory-budget-mb", "MEMORY_BUDGET_MB", 1280.0, float, "estimated working memory of all "
          "admitted edits; an edit that does not fit is refused before decoding (the default suits a 2 GiB "
          "container)")
    _flag(limits, "--max-streams", "MAX_STREAMS", 1024, int, "long-lived streams open at once (EditStream, "
          "health Watch, reflection)")
    _flag(limits, "--max-streams-per-connection", "MAX_STREAMS_PER_CONNECTION", 64, int,
          "long-lived streams one client connection may hold")
    _flag(limits, "--max-anonymous-streams", "MAX_ANONYMOUS_STREAMS", 16, int, "with auth on: long-lived "
          "streams (health Watch) held by callers without a valid token, all together")
    _flag(limits, "--stream-idle-s", "STREAM_IDLE_S", 120.0, float, "a stream without a client message for "
          "this long ends (DEADLINE_EXCEEDED); a health Watch ends (OK) after this long")
    _flag(serve, "--io-threads", "IO_THREADS", 4, int, "threads decoding, compositing and encoding")
    _flag(serve, "--workers", "WORKERS", 1, int, "serving processes sharing the port (SO_REUSEPORT), each "
          "with its own engine; worker i's metrics on --metrics-port + i (see docs/SERVICE.md)")
    models = serve.add_argument_group("several models (see docs/DEPLOY.md)")
    _flag(models, "--model-repository", "MODEL_REPOSITORY", None, str, "serve every bundle DIR/<name>/ as "
          "the model <name> instead of one bundle; SIGHUP (or --poll-s) adds, replaces and removes models "
          "without failing a request", metavar="DIR")
    _flag(models, "--default-model", "DEFAULT_MODEL", None, str, "the model of requests that name none "
          "(none: the first by name)")
    _flag(models, "--max-models", "MAX_MODELS", 8, int, "models loaded at once (each holds its engine)")
    _flag(models, "--poll-s", "POLL_S", None, float, "also rescan the repository every this many seconds")
    serve.set_defaults(run=cmd_serve)


# ---- client commands ------------------------------------------------------------------------------------


def parse_layer(spec: str):
    """'a.png[:mask.png][@x,y]' -> compose.Layer-like tuple (image path, mask path or None, (x, y))."""
    match = _LAYER.match(spec)
    if not match:
        raise argparse.ArgumentTypeError(f"bad layer {spec!r}: expected IMAGE[:MASK][@X,Y]")
    x, y = int(match["x"] or 0), int(match["y"] or 0)
    return (match["image"], match["mask"], (x, y))


def _add_client_flags(parser) -> None:
    group = parser.add_argument_group("server")
    _flag(
        group, "--server", "SERVER", None, str, "HOST:PORT of a latcomp server (none: an in-process server)"
    )
    _flag(group, "--tls-ca", "TLS_CA", None, str, "CA certificate to verify the server's TLS certificate")
    _flag(
        group,
        "--auth-token-file",
        "AUTH_TOKEN_FILE",
        None,
        str,
        "bearer token file (or env LATCOMP_AUTH_TOKEN)",
    )
    _flag(group, "--timeout", "TIMEOUT", 60.0, float, "seconds before giving up (DEADLINE_EXCEEDED)")
    _flag(group, "--bundle", "BUNDLE", None, str, "bundle for the in-process server (none: the shipped one)")
    _flag(group, "--backend", "BACKEND", "auto", str, "engine of the in-process server")
    out = parser.add_argument_group("output")
    out.add_argument(
        "-o", "--output", required=True, help="output image (.png, .jpg; format from the suffix)"
    )
    out.add_argument("--json", action="store_true", help="print the output path and the timings as JSON")
    out.add_argument("--latent-out", help="also save the latent as .npy")


def _add_edit_flags(parser) -> None:
    out = parser.add_argument_group("edit")
    out.add_argument("--realism", type=float, default=0.0, help="0 = as predicted .. 1 = the average latent")
    out.add_argument("--preserve-known", action="store_true", help="paste the known pixels back (feathered)")
    out.add_argument("--feather-px", type=int, help="feather width for --preserve-known (default: size/32)")
    out.add_argument(
        "--size",
        choices=["canvas", "model"],
        default="canvas",
        help="canvas: the output has the first layer's / the image's own size (default); model: the "
        "model's R x R resolution",
    )
    out.add_argument("--input-out", help="also save the collage fed to the model")


class _Session:
    """A client for --server, or for an in-process server on --bundle started for this command."""

    def __init__(self, args: argparse.Namespace):
        from .client import Client

        self._thread = None
        target = args.server
        if not target:
            from .server import ServerConfig, ServerThread, open_engine

            config = ServerConfig(bundle=args.bundle, host="127.0.0.1", port=0, backend=args.backend)
            self._engine = open_engine(config)
            try:
                self._thread = ServerThread(self._engine, config)
            except BaseException:
                self._engine.close()
                raise
            target = self._thread.target
            print(f"(in-process server on {target}, bundle {self._engine.name})", file=sys.stderr)
        self.client = Client(target, token=_token(args), tls_ca=args.tls_ca, timeout=args.timeout)

    def close(self) -> None:
        self.client.close()
        if self._thread is not None:
            self._thread.stop(grace=1.0)
            self._engine.close()


def _output_kwargs(args: argparse.Namespace, edit: bool = True) -> dict:
    suffix = Path(args.output).suffix.lower()
    kwargs = {
        "format": "jpeg" if suffix in (".jpg", ".jpeg") else "png",
        "return_latent": bool(args.latent_out),
    }
    if edit:
        kwargs.update(
            realism=args.realism,
            preserve_known=args.preserve_known,
            size=args.size,
            feather_px=args.feather_px,
            return_input=bool(args.input_out),
        )
    return kwargs


def _report(args: argparse.Namespace, result) -> None:
    from PIL import Image

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result.image).save(args.output)
    if getattr(args, "latent_out", None) and result.latent is not None:
        import numpy as np

        np.save(args.latent_out, result.latent)
    if getattr(args, "input_out", None) and result.input is not None:
        Image.fromarray(result.input).save(args.input_out)
    timing = result.timing
    if args.json:
        print(json.dumps({"output": args.output, "timing": timing}))
    else:
        size = f"{result.image.shape[1]}x{result.image.shape[0]}"
        server = f"queue {timing['queue_ms']:.1f} ms, compute {timing['compute_ms']:.1f} ms"
        total = f"total {timing['total_ms']:.1f} ms (server) / {timing['client_ms']:.1f} ms (client)"
        print(f"{args.output}: {size}  {server}, {total}, batch {timing['batch_size']}")


class UsageError(ValueError):
    """A mistake in the command line or its input files, found before any request: exit status 2."""


def check_image_file(path: str, what: str) -> bool:
    """Checks that `path` is an image the server decodes (PNG, JPEG, WebP) before it is sent; returns whether
    it has an alpha channel. Reads the header only."""
    from PIL import Image, UnidentifiedImageError

    from .codec import DECODERS

    supported = "supported formats: " + ", ".join("WebP" if name == "WEBP" else name for name in DECODERS)
    try:
        with Image.open(path) as image:
            kind, mode, info = image.format, image.mode, image.info
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except (UnidentifiedImageError, OSError):
        raise UsageError(f"{what} {path}: not an image file; {supported}") from None
    if kind not in DECODERS:
        raise UsageError(f"{what} {path}: {kind} images are not accepted; {supported} (convert it first, "
                         "e.g. Image.open(path).save('image.png') with Pillow)")
    return mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in info)


def _explain(error) -> str:
    """A ServiceError, with what to do about the limits a user runs into first."""
    import grpc

    text, details = str(error), error.details or ""
    if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger than max" in details:
        text += ("\n  the request or its answer is over the server's message size limit: raise it with "
                 "`latcomp serve --max-message-mb MB` (env LATCOMP_MAX_MESSAGE_MB) and pass --server, or "
                 "send and ask for JPEG (input .jpg, -o out.jpg), several times smaller than PNG")
    elif error.code == grpc.StatusCode.INVALID_ARGUMENT and "exceeds the limit" in details:
        text += ("\n  the image is over the server's pixel limit: raise it with `latcomp serve --max-pixels "
                 "N` (env LATCOMP_MAX_PIXELS) and pass --server, or send a smaller image")
    return text


def _run_client(args: argparse.Namespace, call, check=None) -> int:
    from .client import ServiceError

    try:
        if check is not None:
            check(args)
    except UsageError as error:
        print(f"latcomp {args.command}: {error}", file=sys.stderr)
        return 2
    try:
        session = _Session(args)
    except Exception as error:  # noqa: BLE001 - e.g. no default bundle, unreadable token file
        print(f"latcomp {args.command}: cannot start: {error}", file=sys.stderr)
        return 2
    try:
        _report(args, call(session.client))
        return 0
    except ServiceError as error:
        print(f"latcomp {args.command}: {_explain(error)}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"latcomp {args.command}: {error}", file=sys.stderr)
        return 2
    finally:
        session.close()


def _check_layers(args: argparse.Namespace) -> None:
    for index, (image, mask, _) in enumerate(args.layer):
        check_image_file(image, f"--layer {index + 1} image")
        if mask is not None:
            check_image_file(mask, f"--layer {index + 1} mask")


def _check_inpaint(args: argparse.Namespace) -> None:
    has_alpha = check_image_file(args.image, "image")
    if args.mask is not None:
        check_image_file(args.mask, "--mask")
    elif not has_alpha:
        raise UsageError(f"{args.image} has no alpha channel and no --mask was given: inpaint needs a mask "
                         "(--mask FILE, white = keep, black = fill) or an image whose transparent pixels "
                         "are the ones to fill")


def cmd_compose(args: argparse.Namespace) -> int:
    return _run_client(args, lambda client: client.composite(args.layer, **_output_kwargs(args)),
                       _check_layers)


def cmd_inpaint(args: argparse.Namespace) -> int:
    return _run_client(args, lambda client: client.inpaint(args.image, args.mask, **_output_kwargs(args)),
                       _check_inpaint)


def cmd_sample(args: argparse.Namespace) -> int:
    kwargs = _output_kwargs(args, edit=False)
    return _run_client(args, lambda client: client.sample(args.seed, args.truncation, **kwargs))


def _add_client_commands(commands) -> None:
    compose = commands.add_parser(
        "compose",
        help="compose layers into an image through a latcomp server",
        description="Paste layers onto a canvas the size of the first one and let the model fill and "
        "blend the collage. A layer is IMAGE[:MASK][@X,Y]: its mask (255 = known; default: the image's "
        "alpha, else all known) and the canvas position of its top-left corner (may be negative; clipped).",
    )
    compose.add_argument(
        "--layer",
        action="append",
        required=True,
        type=parse_layer,
        help="IMAGE[:MASK][@X,Y], repeatable, in order",
    )
    _add_client_flags(compose)
    _add_edit_flags(compose)
    compose.set_defaults(run=cmd_compose)

    inpaint = commands.add_parser(
        "inpaint",
        help="fill the unknown pixels of an image through a latcomp server",
        description="Fill the pixels a mask marks unknown (0; 255 = known). Without --mask the image's alpha "
        "channel is the mask (transparent = fill); an image without one needs --mask. The result has the "
        "image's own size (--size model: the model's resolution).",
    )
    inpaint.add_argument("image", help="image file (PNG, JPEG, WebP)")
    inpaint.add_argument("--mask", help="mask file, single channel, 255 = known")
    _add_client_flags(inpaint)
    _add_edit_flags(inpaint)
    inpaint.set_defaults(run=cmd_inpaint)

    sample = commands.add_parser("sample", help="generate an image from a seed through a latcomp server")
    sample.add_argument("--seed", type=int, default=0, help="random seed, 0 <= seed < 2^32")
    sample.add_argument("--truncation", type=float, help="1 = none (default), 0 = the average latent")
    _add_client_flags(sample)
    sample.set_defaults(run=cmd_sample)


def register(commands) -> None:
    _add_serve(commands)
    _add_client_commands(commands)


def server_info(
    target: str, token: str | None = None, tls_ca: str | None = None, timeout: float = 10.0
) -> dict:
    """What `latcomp info --server HOST:PORT` prints: health and the model the server runs.

    token defaults to env LATCOMP_AUTH_TOKEN. Raises latcomp.service.client.ServiceError (with .code) when
    the server cannot be reached or refuses.
    """
    from .client import Client

    token = token if token is not None else os.environ.get("LATCOMP_AUTH_TOKEN") or None
    with Client(target, token=token, tls_ca=tls_ca, timeout=timeout) as client:
        info = {"server": target, "health": client.health(timeout=timeout)}
        info.update(client.model_info())
    return info
