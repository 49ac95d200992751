"""`latcomp bench engine`: latency and throughput of `Engine.run` for every backend a machine has.

    result = run_engine_bench(EngineBenchConfig(bundle="bundle/", backends=("ort", "torch")))
    print(engine_markdown(result)); engine_plot(result, "engine.png")

Every engine (backend x precision on one device) is opened in this process and, for each batch size,
measured in interleaved blocks of calls with a rotating order, so that the noise of a shared machine falls
on all of them alike and ratios such as ORT / torch eager are taken side by side. Inputs are procedural
faces at the bundle's resolution with the paper's masks, cycled from a small pool.

Achieved FLOP/s = FLOPs per image x images/s, where FLOPs per image = 2 x the multiply-accumulates of the
Conv, ConvTranspose, MatMul and Gemm nodes of the bundle's fp32 composer graph, counted at batch 1 with
shapes from ONNX shape inference (`count_flops`). Element-wise work (bias, activations, normalisation) is
not counted, so the share of the GPU's dense peak is a lower bound on the arithmetic really done.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import report

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# "ort" runs the providers OrtEngine picks itself; ort-cuda / ort-trt pin the list, starting at that provider
# (TensorRT EP: then CUDA and CPU for what TensorRT cannot take; CUDA EP: then CPU).
ORT_PROVIDERS = {
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
ROUNDS = 10  # blocks per engine and batch size: the interleaving granularity
MIN_CALLS = 3  # calls per engine and batch size in --seconds mode, however slow a call is
POOL = 16  # distinct input images, cycled to fill a batch
ORT_OVER_TORCH_REQUIRED = 1.5  # the bar for ORT against torch eager at batch 1
INT8_OVER_FP32_REQUIRED = 1.8  # the INT8 CPU composer's bar against ORT fp32 at batch 1 (issue 14)

# Dense (no sparsity) peak FLOP/s from NVIDIA's datasheets, matched in order against the GPU's name.
# fp16: FP16 tensor cores; fp32: FP32 on CUDA cores (TF32 tensor-core math, which cuDNN may pick for fp32
# convolutions, peaks higher, so an fp32 share above 100% is possible).
PEAK_FLOPS = (
    ("H200 NVL", {"fp16": 835.5e12, "fp32": 60e12}),
    ("H200", {"fp16": 989.5e12, "fp32": 66.9e12}),
    ("H100 NVL", {"fp16": 835.5e12, "fp32": 60e12}),
    ("H100 PCIe", {"fp16": 756.5e12, "fp32": 51.2e12}),
    ("H100", {"fp16": 989.5e12, "fp32": 66.9e12}),  # SXM5, reported as "NVIDIA H100 80GB HBM3"
)


@dataclass
class EngineBenchConfig:
    bundle: str | None = None  # None: the default bundle shipped in the package
    backends: Sequence[str] | None = None  # None: every backend the device may have
    device: str = "cpu"
    precisions: Sequence[str] | None = None  # None: fp32 on cpu, fp32 and fp16 on cuda
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16)
    warmup: int = 3  # unrecorded calls per engine and batch size
    iterations: int | None = None  # recorded calls per engine and batch size ...
    seconds: float | None = 2.0  # ... or measured seconds per engine and batch size
    threads: int | None = None  # CPU threads of onnxruntime (intra-op) and torch; None: their defaults
    realism: float = 0.0
    seed: int = 0


# ---- FLOPs ----------------------------------------------------------------------------------------------


def _shapes(model) -> dict[str, list[int | None]]:
    """name -> dims (None where unknown) of every tensor whose shape the model records."""
    found = {}
    for info in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            found[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    for initializer in model.graph.initializer:
        found[initializer.name] = list(initializer.dims)
    return found


def _numel(shape: list[int | None] | None) -> int | None:
    """Elements of a shape at batch 1: an unknown leading (batch) dim counts 1, any other unknown -> None."""
    if shape is None:
        return None
    dims = [1 if d is None and i == 0 else d for i, d in enumerate(shape)]
    return None if any(d is None for d in dims) else math.prod(dims)


def _node_macs(node, shapes: dict) -> int | None:
    """Multiply-accumulates of one Conv/ConvTranspose/MatMul/Gemm node, None when a shape is unknown."""

    def shape(index: int, outputs: bool = False):
        names = node.output if outputs else node.input
        return shapes.get(names[index]) if index < len(names) else None

    if node.op_type in ("Conv", "ConvTranspose"):
        weight = shape(1)  # Conv [C_out, C_in/g, *k]; ConvTranspose [C_in, C_out/g, *k]
        if weight is None or any(d is None for d in weight):
            return None
        per_element = math.prod(weight[1:])  # MACs per output (Conv) / input (ConvTranspose) element
        elements = _numel(shape(0, outputs=True) if node.op_type == "Conv" else shape(0))
        return None if elements is None else elements * per_element
    a, y = shape(0), _numel(shape(0, outputs=True))
    if a is None or y is None:
        return None
    if node.op_type == "MatMul":
        inner = a[-1]
    else:  # Gemm: A is [M, K], or [K, M] with transA
        transposed = any(att.name == "transA" and att.i for att in node.attribute)
        inner = a[0] if transposed else a[1]
    return None if inner is None else y * inner


def count_flops(path: str | Path) -> dict:
    """FLOPs per sample (2 x MACs of Conv, ConvTranspose, MatMul, Gemm) of an ONNX graph at batch 1.

    Every symbolic input dim (the batch axis N) is set to 1 and shapes come from ONNX shape inference with
    data propagation. Nodes whose shapes stay unknown are listed under "unresolved" and not counted.
    Weights are not read (external data stays on disk).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for value in (*model.graph.input, *model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    del model.graph.value_info[:]  # shapes recorded for a symbolic N would mask the batch-1 ones
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shapes(model)
    by_op = dict.fromkeys(COUNTED_OPS, 0)
    nodes, unresolved = 0, []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in COUNTED_OPS:
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            unresolved.append(node.name or f"{node.op_type}#{index}")
            continue
        nodes += 1
        by_op[node.op_type] += macs
    macs = sum(by_op.values())
    return {
        "graph": Path(path).name,
        "batch": 1,
        "flops": 2 * macs,
        "macs": macs,
        "macs_by_op": by_op,
        "nodes": nodes,
        "unresolved": unresolved,
    }


def peak_flops(gpu_name: str | None) -> dict | None:
    """{"gpu", "fp16", "fp32"} dense peaks for a known GPU name, else None."""
    if not gpu_name:
        return None
    for key, peaks in PEAK_FLOPS:
        if key.lower() in gpu_name.lower():
            return {"gpu": gpu_name, **peaks}
    return None


# ---- engines --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    backend: str  # one of BACKENDS
    precision: str
    device: str

    @property
    def id(self) -> str:
        return f"{self.backend}/{self.precision}/{self.device}"


def default_backends(device: str) -> tuple[str, ...]:
    return ("ort", "torch") if device == "cpu" else ("ort-trt", "ort-cuda", "trt", "torch")


def default_precisions(device: str) -> tuple[str, ...]:
    return ("fp32",) if device == "cpu" else ("fp32", "fp16")


def open_variant(bundle: str | Path | None, variant: Variant, threads: int | None = None):
    """The Engine of one variant (raises whatever the backend raises when it cannot run here)."""
    from ..runtime import open_bundle

    if variant.backend.startswith("ort"):  # a benchmark pins providers and threads to compare like with like
        providers = ORT_PROVIDERS.get(variant.backend)
        # one instance: calls run one after another here, each with every thread (the server's default
        # of two instances is measured by `bench serve`)
        engine = open_bundle(bundle, backend="ort", device=variant.device, precision=variant.precision,
                             providers=providers, threads=threads or None, instances=1)  # 0 like None
        if providers and engine.providers[0] != providers[0]:  # onnxruntime drops a provider that fails
            got = ", ".join(engine.providers)
            engine.close()
            raise RuntimeError(f"onnxruntime could not start {providers[0]} (got {got})")
        return engine
    if variant.backend == "torch":  # its threads are a process-wide setting: see _torch_threads
        return open_bundle(bundle, backend="torch", device=variant.device, precision=variant.precision)
    return open_bundle(bundle, backend="trt", device=variant.device)  # a plan fixes its precision


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` for the benchmark, and restored after it."""
    torch = sys.modules.get("torch")  # imported by a torch engine; otherwise nothing to set
    if not threads or torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _engine_info(variant: Variant, engine) -> dict:
    info = {
        "id": variant.id,
        "backend": variant.backend,
        "precision": variant.precision,
        "device": variant.device,
        "engine": repr(engine),
        "max_batch": engine.max_batch,
        "providers": engine.providers,
    }
    if variant.device == "cpu" and variant.backend == "ort":
        info["threads"] = engine.threads
    elif variant.device == "cpu" and variant.backend == "torch":
        info["threads"] = sys.modules["torch"].get_num_threads()
    return info


def open_engines(config: EngineBenchConfig, progress: report.Progress) -> tuple[list, list[dict]]:
    """([(variant, engine)], skipped) for every requested backend x precision on the device."""
    from ..runtime.engine import parse_device

    device = parse_device(config.device)
    backends = list(config.backends or default_backends(device))
    precisions = list(config.precisions or default_precisions(device))
    opened, skipped, tried_trt = [], [], False
    for backend in backends:
        for precision in precisions:
            if backend == "trt":
                if tried_trt:
                    continue  # one plan, one precision
                tried_trt = True
            variant = Variant(backend, precision, device)
            progress.update(f"opening {variant.id}")
            try:
                engine = open_variant(config.bundle, variant, config.threads)
            except Exception as error:  # any backend failure means: not measurable here, say why
                skipped.append(
                    {
                        "id": variant.id,
                        "backend": backend,
                        "precision": precision,
                        "device": device,
                        "reason": f"{type(error).__name__}: {error}",
                    }
                )
                progress.done(f"skipped {variant.id}: {error}")
                continue
            if backend == "trt":
                variant = Variant(backend, engine.precision, device)
            opened.append((variant, engine))
            progress.done(f"opened {variant.id} ({engine!r})")
    return opened, skipped


# ---- inputs and timing ----------------------------------------------------------------------------------


def realistic_inputs(resolution: int, count: int = POOL, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(faces uint8 [count,R,R,3], paper masks uint8 [count,R,R,1]): procedural faces, the paper's masks."""
    from .. import compose
    from ..data.faces import render
    from ..data.masks import paper_mask

    size = max(resolution, 32)  # the face renderer draws at 32 px and up
    faces = [render(seed + index, size).image for index in range(count)]
    if size != resolution:
        faces = [compose.resize_image(face, resolution, resolution) for face in faces]
    rng = np.random.default_rng(seed)
    masks = [paper_mask(rng, resolution) for _ in range(count)]
    return np.stack(faces), np.stack(masks)[..., None]


def _batch(pool: tuple[np.ndarray, np.ndarray], size: int, realism: float):
    rows = np.arange(size) % len(pool[0])
    return (
        np.ascontiguousarray(pool[0][rows]),
        np.ascontiguousarray(pool[1][rows]),
        np.full(size, realism, np.float32),
    )


def measure(
    engines: list, inputs: tuple, config: EngineBenchConfig, progress: report.Progress, label: str
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Seconds per engine.run call for each engine, measured in interleaved blocks, and the errors of
    engines that failed at this batch size. Block k of round r runs engines in the order rotated by r."""
    times: dict[str, list[float]] = {variant.id: [] for variant, _, _ in engines}
    errors: dict[str, str] = {}
    live = []
    for variant, engine, _ in engines:
        try:
            for _ in range(config.warmup):
                engine.run(*inputs)
            live.append((variant, engine))
        except Exception as error:  # e.g. out of device memory at a large batch
            errors[variant.id] = f"{type(error).__name__}: {error}"
    iterations = config.iterations
    block_calls = max(1, math.ceil(iterations / ROUNDS)) if iterations else None
    block_seconds = None if iterations else config.seconds / ROUNDS

    def finished(key: str) -> bool:
        if iterations:
            return len(times[key]) >= iterations
        return len(times[key]) >= MIN_CALLS and sum(times[key]) >= config.seconds

    round_index = 0
    while live and not all(finished(v.id) for v, _ in live):
        for offset in range(len(live)):
            variant, engine = live[(round_index + offset) % len(live)]
            key = variant.id
            if finished(key) or key in errors:
                continue
            block_start, calls = time.perf_counter(), 0
            try:
                while not finished(key):
                    started = time.perf_counter()
                    engine.run(*inputs)
                    times[key].append(time.perf_counter() - started)
                    calls += 1
                    if block_calls and calls >= block_calls:
                        break
                    if block_seconds and time.perf_counter() - block_start >= block_seconds:
                        break
            except Exception as error:
                errors[key] = f"{type(error).__name__}: {error}"
            progress.update(f"{label}: {key} {len(times[key])} calls")
        live = [(v, e) for v, e in live if v.id not in errors]
        round_index += 1
    return times, errors


# ---- the benchmark --------------------------------------------------------------------------------------


def _row(info: dict, batch: int, seconds: list[float], flops: int, peak: dict | None) -> dict:
    latency = report.percentiles([s * 1000 for s in seconds])
    images_per_s = batch * len(seconds) / sum(seconds)
    achieved = flops * images_per_s
    share = None
    if peak and info["device"].startswith("cuda") and info["precision"] in peak:
        share = achieved / peak[info["precision"]]
    return {
        "engine": info["id"],
        "backend": info["backend"],
        "precision": info["precision"],
        "device": info["device"],
        "batch_size": batch,
        "calls": len(seconds),
        "engine_calls_per_run": math.ceil(batch / info["max_batch"]),
        "latency_ms": latency,
        "images_per_s": images_per_s,
        "achieved_flops": achieved,
        "share_of_peak": share,
    }


def _ratio(kind: str, row: dict, baseline: dict, required: float) -> dict:
    ratio = row["images_per_s"] / baseline["images_per_s"]
    return {
        "kind": kind,
        "batch_size": 1,
        "engine": row["engine"],
        "baseline": baseline["engine"],
        "ratio_images_per_s": ratio,
        "ratio_p50_latency": baseline["latency_ms"]["p50"] / row["latency_ms"]["p50"],
        "required": required,
        "meets_requirement": ratio >= required,
    }


def comparisons(results: list[dict]) -> list[dict]:
    """At batch 1, side by side: ORT / torch eager images/s per device and precision, for every ORT variant;
    and ORT int8 / ORT fp32 (the INT8 CPU composer's bar) per backend and device."""
    found = []
    at_one = {r["engine"]: r for r in results if r["batch_size"] == 1 and "images_per_s" in r}
    for torch_row in (r for r in at_one.values() if r["backend"] == "torch"):
        for row in at_one.values():
            if (
                row["backend"].startswith("ort")
                and row["device"] == torch_row["device"]
                and row["precision"] == torch_row["precision"]
            ):
                found.append(_ratio("ort/torch", row, torch_row, ORT_OVER_TORCH_REQUIRED))
    for int8_row in (r for r in at_one.values() if r["precision"] == "int8"):
        for row in at_one.values():
            if (row["precision"] == "fp32" and row["backend"] == int8_row["backend"]
                    and row["device"] == int8_row["device"]):
                found.append(_ratio("int8/fp32", int8_row, row, INT8_OVER_FP32_REQUIRED))
    return found


def run_engine_bench(config: EngineBenchConfig, progress: report.Progress | None = None) -> dict:
    """Runs the benchmark and returns its result (the JSON document; see engine_markdown for a view)."""
    from ..runtime import read_bundle
    from ..runtime.bundle import DEFAULT_BUNDLE, BundleError

    progress = progress or report.Progress("bench engine")
    if (config.iterations is None) == (config.seconds is None):
        raise ValueError("give exactly one of iterations and seconds")
    if config.bundle is None and not (DEFAULT_BUNDLE / "latcomp.json").is_file():
        raise BundleError(
            f"no default bundle is installed (expected {DEFAULT_BUNDLE}); pass the path of a "
            "bundle made by `latcomp export`"
        )
    bundle = read_bundle(config.bundle or DEFAULT_BUNDLE)
    header = report.run_header("engine")
    flops = count_flops(bundle.graph_path("composer"))
    pool = realistic_inputs(bundle.resolution, min(POOL, max(config.batch_sizes)), config.seed)
    opened, skipped = open_engines(config, progress)
    device = opened[0][0].device if opened else config.device
    gpu_name = None
    if device.startswith("cuda"):
        index = int(device.split(":")[1])
        gpu_name = next((g["name"] for g in header["machine"]["gpus"] if g["index"] == index), None)
    peak = peak_flops(gpu_name)
    results = []
    with contextlib.ExitStack() as cleanup:
        for _, engine in opened:
            cleanup.callback(engine.close)
        cleanup.enter_context(_torch_threads(config.threads))
        engines = [(v, e, _engine_info(v, e)) for v, e in opened]
        for step, batch in enumerate(config.batch_sizes, 1):
            label = f"batch {batch} ({step}/{len(config.batch_sizes)})"
            inputs = _batch(pool, batch, config.realism)
            times, errors = measure(engines, inputs, config, progress, label)
            for _, _, info in engines:
                if info["id"] in errors:
                    results.append({"engine": info["id"], "batch_size": batch, "error": errors[info["id"]]})
                elif times[info["id"]]:
                    results.append(_row(info, batch, times[info["id"]], flops["flops"], peak))
            summary = ", ".join(
                f"{r['engine']} {r['images_per_s']:.1f} img/s"
                for r in results
                if r["batch_size"] == batch and "images_per_s" in r
            )
            progress.done(f"{label}: {summary or 'no engine ran'}")
    settings = asdict(config)
    settings.update(
        device=device,
        interleave=f"{ROUNDS} blocks per engine and batch size, order rotated each round",
    )
    return {
        **header,
        "bundle": {
            "path": str(bundle.path),
            "name": bundle.name,
            "version": bundle.manifest["version"],
            "resolution": bundle.resolution,
            "latent_shape": list(bundle.latent_shape),
            "max_batch": bundle.manifest["max_batch"],
        },
        "settings": settings,
        "flops": flops,
        "peak_flops": peak,
        "engines": [info for _, _, info in engines],
        "skipped": skipped,
        "results": results,
        "comparisons": comparisons(results),
    }


# ---- views ----------------------------------------------------------------------------------------------


def comparison_lines(result: dict) -> list[str]:
    lines = []
    for c in result["comparisons"]:
        verdict = "met" if c["meets_requirement"] else "NOT met"
        title = "ORT / torch eager" if c["kind"] == "ort/torch" else "INT8 / fp32"
        lines.append(
            f"- **{title} at batch 1**: {c['engine']} vs {c['baseline']}: "
            f"{c['ratio_images_per_s']:.2f}x images/s ({c['ratio_p50_latency']:.2f}x p50 latency); "
            f"requirement >= {c['required']}x: {verdict}"
        )
    return lines


def engine_markdown(result: dict) -> str:
    bundle, flops, peak = result["bundle"], result["flops"], result["peak_flops"]
    peak_line = "- Peak: unknown for this device (no share of peak)"
    if peak:
        peak_line = (
            f"- Peak ({peak['gpu']}, dense): fp16 {report.si(peak['fp16'], 'FLOP/s')}, "
            f"fp32 {report.si(peak['fp32'], 'FLOP/s')}"
        )
    lines = [
        f"## Engine benchmark: {bundle['name']} {bundle['version']} ({bundle['resolution']} px)",
        "",
        f"- Machine: {report.machine_line(result['machine'])}",
        f"- Date: {result['date']}; command: `{result['command']}`",
        f"- Work per image: {report.si(flops['flops'], 'FLOP')} ({flops['graph']} at batch 1, 2 x MACs of "
        f"{flops['nodes']} Conv/ConvTranspose/MatMul/Gemm nodes"
        + (f"; {len(flops['unresolved'])} unresolved" if flops["unresolved"] else "")
        + ")",
        peak_line,
        "",
    ]
    rows = []
    for r in result["results"]:
        if "error" in r:
            rows.append([r["engine"], "", "", r["batch_size"], "error", "", "", "", "", r["error"][:60]])
            continue
        latency = r["latency_ms"]
        share = "-" if r["share_of_peak"] is None else f"{100 * r['share_of_peak']:.2f}%"
        rows.append(
            [
                r["backend"],
                r["precision"],
                r["device"],
                r["batch_size"],
                report.fixed(latency["p50"]),
                report.fixed(latency["p95"]),
                report.fixed(latency["p99"]),
                f"{r['images_per_s']:.1f}",
                report.si(r["achieved_flops"], "FLOP/s"),
                share,
            ]
        )
    header = [
        "backend",
        "precision",
        "device",
        "batch",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "images/s",
        "achieved",
        "of peak",
    ]
    lines.append(report.markdown_table(header, rows, "lllrrrrrrr"))
    lines.append("")
    lines += comparison_lines(result)
    if not result["comparisons"]:
        lines.append(
            "- ORT / torch at batch 1: not measured (needs an ort and a torch engine of the same "
            "precision on the same device)"
        )
    lines += [f"- Skipped {s['id']}: {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def engine_plot(result: dict, path: str | Path) -> None:
    """Throughput and p50 latency against batch size, one line per engine."""
    throughput = report.Panel("Throughput", "batch size", "images/s", xlog2=True)
    latency = report.Panel("Latency (p50 per engine.run)", "batch size", "ms", xlog2=True)
    for info in result["engines"]:
        rows = [r for r in result["results"] if r["engine"] == info["id"] and "images_per_s" in r]
        if rows:
            batches = [r["batch_size"] for r in rows]
            throughput.series.append(report.Series(info["id"], batches, [r["images_per_s"] for r in rows]))
            latency.series.append(report.Series(info["id"], batches, [r["latency_ms"]["p50"] for r in rows]))
    report.line_chart([throughput, latency], path)
