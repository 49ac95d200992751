"""Prometheus metrics of one server, on their own registry, exported over HTTP (`/metrics`).

Each ServiceMetrics has its own CollectorRegistry, so several servers in one process (tests, the CLI's
in-process server) never collide in prometheus_client's global registry.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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
        self._http = None
        self._thread: threading.Thread | None = None

    def on_batch(self, kind: str, size: int, compute_s: float) -> None:
        """The Batcher's per-engine-call callback."""
        self.batch_size.labels(kind).observe(size)
        self.compute.labels(kind).observe(compute_s)

    def start_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Serves /metrics on host:port (0 = a free port); returns the port."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
