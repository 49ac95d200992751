"""Benchmarks: `latcomp bench engine` (Engine.run per backend, precision and batch size, side by side) and
`latcomp bench serve` (end-to-end gRPC load on a server), each writing JSON, Markdown and a PNG plot.

    from latcomp.bench import EngineBenchConfig, run_engine_bench, ServeBenchConfig, run_serve_bench

Importing this package is cheap (the CLI registers its commands from it); the benchmark modules load
numpy, onnx, grpc and the engines when used, and nothing here imports torch unless a torch engine is
benchmarked.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

# Names the command line offers, kept here so that registering the commands imports nothing heavy.
BACKENDS = (
    "ort",
    "ort-cuda",
    "ort-trt",
    "trt",
    "torch",
)  # ort-cuda / ort-trt: that onnxruntime provider first
PAYLOADS = ("raw", "png")
RPCS = ("composite", "inpaint")

_EXPORTS = {
    "EngineBenchConfig": "engine_bench",
    "run_engine_bench": "engine_bench",
    "count_flops": "engine_bench",
    "engine_markdown": "engine_bench",
    "engine_plot": "engine_bench",
    "ServeBenchConfig": "serve_bench",
    "ServerOptions": "serve_bench",
    "run_serve_bench": "serve_bench",
    "serve_markdown": "serve_bench",
    "serve_plot": "serve_bench",
}
__getattr__ = lazy_getattr(__name__, _EXPORTS)
__all__ = sorted([*_EXPORTS, "BACKENDS", "PAYLOADS", "RPCS"])
