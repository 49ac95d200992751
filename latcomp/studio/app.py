"""The studio's web server: the page, and one WebSocket per browser tab on the service's engine path.

    studio = Studio(engine, ServerConfig(host="127.0.0.1", port=8765))
    port = await studio.start()      # warm-up, then listening
    ...
    await studio.stop()

Edits run exactly as the gRPC service runs them: the layers are validated against the service's limits
(`codec.Limits` from the same ServerConfig flags), pasted, resized and pasted back by `runtime.edits`, and
computed by the runtime's `Batcher` (same batching, queue bound and errors). The page keeps one edit in
flight and only the newest one pending, so a connection never queues stale work (see static/studio.js).

Admission is the service's own `Admission`: the token check, each tab a long-lived stream (limits in all,
per connection, without a token), and each edit, face and file charged its working memory before any work.

Security: with an auth token set, a socket must say `{"type": "hello", "token": ...}` first or is closed
(4401); WebSockets from another origin are refused (a web page the user visits cannot drive the studio);
on a loopback address only loopback Host headers are served (DNS rebinding). The page itself carries no
secrets and is served to anyone who can reach the port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from ..runtime import edits
from ..runtime.batcher import Batcher, BatcherClosed, DeadlineExceeded, EngineFailed, QueueFull
from ..service import codec
from ..service.admission import Admission, RpcFailure, echo
from ..service.auth import check_token
from ..service.server import (
    BYTES_PER_CANVAS_PIXEL,
    BYTES_PER_EDIT,
    BYTES_PER_INPUT_PIXEL,
    BYTES_PER_OUTPUT_PIXEL,
    ServerConfig,
)
from . import wire
from .session import CANVAS_SIDES, MAX_SOURCE_SIDE, EditError, Session, placed_pixels

log = logging.getLogger("latcomp.studio")

STATIC = Path(__file__).parent / "static"
FACE_SIZE = 256  # procedural faces are drawn at this size (about 0.1 s each)
FACE_BYTES = 8 * (4 * FACE_SIZE) ** 2  # drawing one: label maps at 4x supersampling, colours, the result
UNAUTHENTICATED = 4401  # WebSocket close code (4000-4999: application defined)
HELLO_TIMEOUT_S = 10.0  # with a token: a socket that has not said hello by then is closed
DEFAULT_MAX_SESSIONS = 16  # open sockets (tabs) at once; each may hold ~35 MB of layers (session.py)


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback ("localhost", 127.0.0.0/8, ::1)."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # any other name, e.g. "127.0.0.1.attacker.example"
        return False


class Studio:
    def __init__(self, engine: Any, config: ServerConfig, max_sessions: int = DEFAULT_MAX_SESSIONS):
        self.engine = engine
        self.config = config
        self.max_sessions = max_sessions
        self.limits = codec.Limits(max_pixels=config.max_pixels, max_total_pixels=4 * config.max_pixels)
        self.max_message_bytes = int(config.max_message_mb * 1024 * 1024)
        # the service's admission: token check, stream (tab) limits and the working-memory budget of edits
        token = check_token(config.auth_token) if config.auth_token is not None else None
        self.admission = Admission(config.admission, token)
        self.batcher: Batcher | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._io = ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="latcomp-studio-io")

    # ---- lifecycle ----

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.max_message_bytes, middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._socket)
        app.router.add_static("/static/", STATIC)
        return app

    async def start(self) -> int:
        """Warms the engine up, then listens; returns the bound port."""
        config = self.config
        self.batcher = Batcher(self.engine, max_batch=config.max_batch, max_delay_ms=config.max_delay_ms,
                               max_queue=config.max_queue)
        resolution = self.engine.resolution
        image = np.zeros((1, resolution, resolution, 3), np.uint8)
        mask = np.zeros((1, resolution, resolution, 1), np.uint8)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._io, self.engine.run, image, mask)
                               for _ in range(self.batcher.threads)))
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.host.strip("[]") or None, config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        self.admission.accepting = False
        for socket in list(self._sockets):
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"the studio is stopping")
        if self._runner is not None:
            await self._runner.cleanup()
        if self.batcher is not None:
            await self.batcher.close(timeout=self.config.grace_s)
        self._io.shutdown(wait=False)

    def url(self) -> str:
        host = self.config.host.strip("[]")
        shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.port}/"

    # ---- HTTP ----

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if is_loopback(self.config.host) and not is_loopback(request.url.host or ""):
            raise web.HTTPForbidden(text="the studio listens on loopback; use http://127.0.0.1 or localhost")
        response = await handler(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            f"default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws://{request.host}; "
            "frame-ancestors 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    # ---- the socket ----

    def _token_ok(self, given: Any) -> bool:
        return isinstance(given, str) and self.admission.authenticated([("authorization", f"Bearer {given}")])

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin not in (f"http://{request.host}", f"https://{request.host}"):
            raise web.HTTPForbidden(text=f"WebSocket from origin {origin} refused")
        if len(self._sockets) >= self.max_sessions:
            raise web.HTTPServiceUnavailable(text=f"the studio has {self.max_sessions} tabs open already "
                                             "(--max-sessions); close one and reload")  # fmt: skip
        peer = request.transport.get_extra_info("peername") if request.transport else None
        peer = f"{peer[0]}:{peer[1]}" if peer else str(request.remote)
        authenticated = not self.admission.auth
        try:  # a tab is a long-lived stream to admission: limits in all, per connection, without a token
            self.admission.open_stream(peer, authenticated)
        except RpcFailure as failure:
            raise web.HTTPServiceUnavailable(text=failure.details) from None
        # compress=False: permessage-deflate (which browsers offer) would zlib every frame of raw pixels on
        # the event loop, costing more time than the bytes it saves on a local link
        socket = web.WebSocketResponse(max_msg_size=self.max_message_bytes, heartbeat=30.0, compress=False)
        self._sockets.add(socket)
        session = Session(self.limits, self.engine.resolution)
        try:
            await socket.prepare(request)
            while True:
                try:
                    message = await socket.receive(timeout=None if authenticated else HELLO_TIMEOUT_S)
                except asyncio.TimeoutError:
                    await socket.close(code=UNAUTHENTICATED, message=b"no access token in time")
                    break
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                try:
                    if message.type == WSMsgType.TEXT:
                        header, parts = wire.parse_header(message.data), []
                    else:
                        header, parts = wire.unpack(message.data)
                except wire.WireError as error:
                    await socket.close(code=WSCloseCode.UNSUPPORTED_DATA, message=str(error)[:120].encode())
                    break
                if not authenticated:
                    if header["type"] != "hello" or not self._token_ok(header.get("token")):
                        await socket.close(code=UNAUTHENTICATED, message=b"missing or wrong access token")
                        break
                    self.admission.close_stream(peer, False)  # from here it counts as an authenticated one
                    self.admission.open_stream(peer, True)  # cannot fail: it just freed a slot of its own
                    authenticated = True
                if not await self._answer(socket, session, header, parts):
                    break
        finally:
            self.admission.close_stream(peer, authenticated)
            self._sockets.discard(socket)
        return socket

    async def _answer(self, socket, session: Session, header: dict, parts: list[bytes]) -> bool:
        """Handles one message and sends its reply; False when the socket should close."""
        kind = header["type"]
        handler = getattr(self, f"_on_{kind}", None)
        reply: dict | tuple[dict, list[bytes]]
        try:
            if handler is None:
                raise EditError(f"unknown message type {echo(kind)}")
            reply = await handler(session, header, parts)
        except (EditError, codec.InvalidArgument) as error:
            reply = {"type": "error", "request": kind, "seq": header.get("seq"), "message": str(error)}
        except (QueueFull, DeadlineExceeded) as error:
            reply = {"type": "error", "request": kind, "seq": header.get("seq"), "busy": True,
                     "message": f"the engine is busy: {error}"}
        except EngineFailed as error:
            log.error("engine failure: %s", error, exc_info=error.__cause__)
            reply = {"type": "error", "request": kind, "seq": header.get("seq"),
                     "message": f"the engine failed: {error}"}
        except RpcFailure as failure:  # admission: the memory budget or the edit count is spent, or draining
            if not self.admission.accepting:
                await socket.close(code=WSCloseCode.GOING_AWAY, message=b"the studio is stopping")
                return False
            reply = {"type": "error", "request": kind, "seq": header.get("seq"), "busy": True,
                     "message": failure.details}
        except BatcherClosed:
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"the studio is stopping")
            return False
        if isinstance(reply, tuple):
            await socket.send_bytes(wire.pack(*reply))
        else:
            await socket.send_json(reply)
        return True

    async def _in_pool(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._io, function, *args)

    # ---- messages (each returns the reply: a JSON header, or a header and binary parts) ----

    async def _on_hello(self, session: Session, header: dict, parts: list[bytes]) -> dict:
        engine = self.engine
        return {
            "type": "info",
            "model": {"name": str(engine.name), "version": str(engine.version),
                      "backend": str(engine.backend), "device": str(engine.device),
                      "resolution": int(engine.resolution)},
            "sizes": sorted({*CANVAS_SIDES, int(engine.resolution)}),
            "max_layers": self.limits.max_layers,
            "max_source_side": MAX_SOURCE_SIDE,
        }

    def _layer_reply(self, layer_id: str, session: Session) -> tuple[dict, list[bytes]]:
        layer = session.layers[layer_id]
        height, width = layer.image.shape[:2]
        header = {"type": "layer", "id": layer_id, "width": width, "height": height, "origin": layer.origin}
        return header, [layer.image.tobytes(), layer.mask.tobytes()]

    async def _on_face(self, session: Session, header: dict, parts: list[bytes]):
        from ..data.faces import render

        seed = _seed(header.get("seed"))
        with self.admission.reserve(FACE_BYTES, "a face"):
            face = await self._in_pool(render, seed, FACE_SIZE)
        session.add(header.get("id"), face.image, None, {"face": seed})
        return self._layer_reply(header["id"], session)

    async def _on_sample(self, session: Session, header: dict, parts: list[bytes]):
        seed = _seed(header.get("seed"))
        truncation = header.get("truncation", 0.7)
        if type(truncation) not in (int, float) or not 0 <= truncation <= 1:
            raise EditError(f"truncation: {echo(truncation)} is not a number in [0, 1]")
        image, _, _ = await self.batcher.sample(seed, float(truncation))
        session.add(header.get("id"), image, None, {"sample": seed, "truncation": truncation})
        return self._layer_reply(header["id"], session)

    async def _on_file(self, session: Session, header: dict, parts: list[bytes]):
        if len(parts) != 1:
            raise EditError("file: expected one part, the encoded image")
        message = codec.pb.Image(encoded=parts[0])
        pixels, _ = codec.request_sizes("inpaint", codec.pb.InpaintRequest(image=message), self.limits)
        working = len(parts[0]) + BYTES_PER_INPUT_PIXEL * pixels + BYTES_PER_EDIT
        with self.admission.reserve(working, "this file"):
            image, alpha = await self._in_pool(codec.decode_image, "file", message, self.limits)
        name = str(header.get("name", ""))[:200]
        session.add(header.get("id"), image, alpha, {"file": name})
        return self._layer_reply(header["id"], session)

    async def _on_remove(self, session: Session, header: dict, parts: list[bytes]) -> dict:
        session.remove(header.get("id"))
        return {"type": "removed", "id": header.get("id")}

    async def _on_edit(self, session: Session, header: dict, parts: list[bytes]):
        received = time.monotonic()
        placed, side = placed_pixels(header, self.limits.max_layers)
        # the service's estimate of an edit's peak memory, for the pixels this one places and outputs
        working = (sum(map(len, parts)) + BYTES_PER_INPUT_PIXEL * placed + BYTES_PER_EDIT
                   + (BYTES_PER_CANVAS_PIXEL + BYTES_PER_OUTPUT_PIXEL) * side * side)
        with self.admission.reserve(working, "this edit"):
            options, edit = await self._in_pool(self._prepare, session, header, parts)
            result, _, timing = await self.batcher.run(edit.image, edit.mask, options.realism)
            output = await self._in_pool(edits.finish, edit, result, edits.CANVAS, options.preserve_known)
        session.last_collage = (edit.canvas, edit.canvas_mask)
        reply = {
            "type": "result", "seq": header.get("seq"), "width": output.shape[1], "height": output.shape[0],
            "timing": {"queue_ms": timing.queue_ms, "compute_ms": timing.compute_ms,
                       "batch_size": timing.batch_size, "server_ms": (time.monotonic() - received) * 1000},
        }  # fmt: skip
        return reply, [output.tobytes()]

    def _prepare(self, session: Session, header: dict, parts: list[bytes]):
        """(options, edits.Edit) of an edit message (in the io pool: one hop for validation and collage)."""
        options, layers = session.collage(header, parts)
        return options, edits.prepare(layers, self.engine.resolution)

    async def _on_collage(self, session: Session, header: dict, parts: list[bytes]):
        """The last edit's collage as the model saw it, at canvas size: RGBA with alpha = known."""
        collage = session.last_collage
        if collage is None:
            raise EditError("no collage yet: add a layer first")
        canvas, canvas_mask = collage
        rgba = np.concatenate([canvas, canvas_mask[..., None]], axis=2)
        header = {"type": "collage", "width": canvas.shape[1], "height": canvas.shape[0]}
        return header, [rgba.tobytes()]


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise EditError(f"seed: {echo(value)} is not an integer in [0, 2^32)")
    return value


class StudioThread:
    """A Studio served by `asyncio.run` in a daemon thread, for tests and the benchmark:
    `with StudioThread(engine, config) as thread: ... thread.url ...`."""

    def __init__(self, engine: Any, config: ServerConfig, max_sessions: int = DEFAULT_MAX_SESSIONS,
                 timeout: float = 120.0):
        self.studio = Studio(engine, config, max_sessions)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="latcomp-studio",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the studio did not start within {timeout:g} s")
        if self._failure is not None:
            raise self._failure
        self.port = self.studio.port
        self.url = self.studio.url()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            await self.studio.start()
        except BaseException as error:  # noqa: BLE001 - handed to the constructor's caller
            self._failure = error
            self._ready.set()
            await self.studio.stop()
            return
        self._ready.set()
        await self._stop.wait()
        await self.studio.stop()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def __enter__(self) -> StudioThread:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
