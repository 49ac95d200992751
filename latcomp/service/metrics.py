"""Prometheus metrics of one server, on their own registry, exported over HTTP (`/metrics`).

Each ServiceMetrics has its own CollectorRegistry, so several servers in one process (tests, the CLI's
in-process server) never collide in prometheus_client's global registry.

The HTTP endpoint is exposed to the same clients as the gRPC port, so it is bounded like it: at most
MAX_HTTP_CONNECTIONS connections are handled at once (more are closed at once), a connection that sends
its request too slowly is dropped after HTTP_TIMEOUT_S, and with a token every scrape must carry
`Authorization: Bearer <token>` (Prometheus: `authorization: {credentials: ...}` in the scrape config).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .auth import BearerToken

MAX_HTTP_CONNECTIONS = 8
HTTP_TIMEOUT_S = 5.0

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "latcomp_requests", "RPCs handled, by method and status code", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "latcomp_request_seconds",
            "RPC wall time in the server",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "latcomp_queue_seconds",
            "time a request waited for the engine",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "latcomp_compute_seconds",
            "engine call time per batch",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "latcomp_batch_size", "requests per engine call", ["kind"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("latcomp_queue_depth", "requests waiting for the engine", registry=r)
        self.inflight = Gauge("latcomp_inflight_requests", "RPCs being handled", registry=r)
        self.stream_dropped = Counter(
            "latcomp_stream_dropped", "EditStream requests superseded before they were computed", registry=r
        )
        self.serving = Gauge("latcomp_serving", "1 while the server reports SERVING", registry=r)
        self.refused = Counter(
            "latcomp_admission_refused",
            "calls refused by admission, by the limit they hit",
            ["limit"],
            registry=r,
        )
        self.memory_reserved = Gauge(
            "latcomp_memory_reserved_bytes", "estimated working memory of the admitted edits", registry=r
        )
        self.streams = Gauge("latcomp_streams", "long-lived streams open", registry=r)
        self._http: _MetricsHTTPServer | None = None

    def on_batch(self, kind: str, size: int, compute_s: float) -> None:
        """The Batcher's per-engine-call callback."""
        self.batch_size.labels(kind).observe(size)
        self.compute.labels(kind).observe(compute_s)

    def start_http(self, port: int, host: str, token: str | None = None) -> int:
        """Serves /metrics on host:port (0 = a free port), requiring the bearer token if given; returns
        the port."""
        self._http = _MetricsHTTPServer(_host(host), port, self.registry, token)
        threading.Thread(target=self._http.serve_forever, name="latcomp-metrics", daemon=True).start()
        return self._http.server_port

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _host(host: str) -> str:
    """A gRPC-style listen address ("[::]", "[::1]") as the socket module takes it."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class _MetricsHandler(BaseHTTPRequestHandler):
    timeout = HTTP_TIMEOUT_S  # the socket's timeout: a half-sent request cannot hold its thread longer
    server: _MetricsHTTPServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        if not self.server.authorized(self.headers.get("Authorization", "")):
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = generate_latest(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # scrapes are not news
        pass


class _MetricsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, registry: CollectorRegistry, token: str | None):
        self.address_family = _family(host)
        self.registry = registry
        self._token = None if token is None else BearerToken(token)
        self._slots = threading.BoundedSemaphore(MAX_HTTP_CONNECTIONS)
        super().__init__((host, port), _MetricsHandler)

    def authorized(self, header: str) -> bool:
        return self._token is None or self._token.matches(header)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):  # all slots busy: refuse rather than pile up threads
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _family(host: str):
    import socket

    return socket.AF_INET6 if ":" in host else socket.AF_INET
