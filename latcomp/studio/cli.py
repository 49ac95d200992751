"""`latcomp studio [BUNDLE]`: compose in the browser, live, on the same engine path as `latcomp serve`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

DEFAULT_PORT = 8765


async def _serve(engine, config, max_sessions: int) -> int:
    from .app import Studio

    studio = Studio(engine, config, max_sessions)
    try:
        await studio.start()
    except OSError as error:  # the port is taken, the address does not exist
        print(f"latcomp studio: cannot listen on {config.host}:{config.port}: {error}", file=sys.stderr)
        await studio.stop()
        return 2
    print(f"latcomp studio: {engine.name} {engine.version} ({engine.backend} on {engine.device}) at "
          f"{studio.url()}", flush=True)
    if config.auth_token:
        print("latcomp studio: the page asks for the access token (or open the URL with #token=TOKEN)",
              flush=True)
    print("latcomp studio: Ctrl-C stops it", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    await stop.wait()
    await studio.stop()
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    from ..service.admission import AdmissionLimits
    from ..service.auth import configured_token
    from ..service.server import ServerConfig, open_engine
    from .app import is_loopback

    try:
        token = configured_token(args.auth_token_file)
    except (OSError, ValueError) as error:  # unreadable, empty or unusable: never "no auth" by accident
        print(f"latcomp studio: --auth-token-file / LATCOMP_AUTH_TOKEN: {error}", file=sys.stderr)
        return 2
    if args.max_sessions < 1 or args.max_queue < 1 or not args.memory_budget_mb > 0:
        print("latcomp studio: --max-sessions and --max-queue must be >= 1, --memory-budget-mb > 0",
              file=sys.stderr)  # fmt: skip
        return 2
    if not is_loopback(args.host) and not token:
        print(f"latcomp studio: listening on {args.host} (not loopback) needs an access token: "
              "--auth-token-file FILE or env LATCOMP_AUTH_TOKEN", file=sys.stderr)
        return 2
    config = ServerConfig(
        bundle=args.bundle, host=args.host, port=args.port, backend=args.backend, device=args.device,
        instances=args.instances, threads=args.threads, max_queue=args.max_queue, max_pixels=args.max_pixels,
        auth_token=token, grace_s=5.0, admission=AdmissionLimits(memory_budget_mb=args.memory_budget_mb),
    )  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s latcomp studio: %(message)s")
    try:
        engine = open_engine(config)
    except (OSError, ValueError, RuntimeError) as error:  # no bundle, a bad bundle, a missing backend
        print(f"latcomp studio: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(engine, config, args.max_sessions))
    finally:
        engine.close()


def register(commands) -> None:
    studio = commands.add_parser(
        "studio",
        help="compose images in the browser, live (a web page on the serving engine)",
        description="Serve the studio: a web page where you open or drop images (or add procedural faces "
        "and samples of the model), move and scale them as layers, paint each layer's mask with a brush and "
        "an eraser, and see the model's composite update while you drag and paint. Edits run through the "
        "same batcher and limits as `latcomp serve`. Everything is served from the package: no network "
        "needed. Loopback only unless --host is given, which then requires an access token.",
    )
    studio.add_argument("bundle", nargs="?",
                        help="bundle directory (default: the bundle shipped in the package)")
    studio.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                        "another address requires --auth-token-file or env LATCOMP_AUTH_TOKEN)")
    studio.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT}; "
                        "0: a free port, printed)")
    studio.add_argument("--auth-token-file", help="file holding the access token the page must give (as for "
                        "`latcomp serve`; or put the token itself in env LATCOMP_AUTH_TOKEN; default: none)")
    studio.add_argument("--backend", default="auto", choices=["auto", "ort", "trt", "torch"],
                        help="engine (default auto)")
    studio.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    studio.add_argument("--instances", type=int,
                        help="ort: engine calls in flight at once (default: 2 on CPU, 1 on CUDA)")
    studio.add_argument("--threads", type=int, help="ort: intra-op threads per instance (default: the "
                        "physical cores over the instances)")
    studio.add_argument("--max-queue", type=int, default=256, help="queued edits before the page is told the "
                        "engine is busy (default 256)")
    studio.add_argument("--max-sessions", type=int, default=16, help="browser tabs connected at once "
                        "(default 16; each may hold up to ~35 MB of layers)")
    studio.add_argument("--memory-budget-mb", type=float, default=1280.0, help="estimated working memory "
                        "of all edits at once, as for `latcomp serve`; an edit that does not fit is refused "
                        "(default 1280)")
    studio.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest image opened, in pixels "
                        "(default 4096*4096)")
    studio.set_defaults(run=cmd_studio)
