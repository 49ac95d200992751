"""Build a bundle's TensorRT plan: `latcomp build-engine BUNDLE [--max-batch N] [--opt-batch N] ...`.

Precision policy (TensorRT 11 removed the weak-typing builder flags such as BuilderFlag.FP16, and 10.12
deprecated them):
- TensorRT >= 10.12 (and 11.x): a strongly typed network (NetworkDefinitionCreationFlag.STRONGLY_TYPED,
  always on and the flag ignored in 11) parsed from the bundle's FP16 composer graph. Every tensor keeps
  the type the graph gives it, so the ops our FP16 conversion kept in FP32 (mapping network, style
  affines, demodulation, reductions, normalisations) stay in FP32 exactly as under onnxruntime.
- TensorRT 10.0 - 10.11: the fp32 composer graph with BuilderFlag.FP16, letting TensorRT choose FP16
  kernels where it finds them faster (weak typing, the mature path of those releases). `--typing strong`
  selects the strongly typed FP16 graph there too; a plan whose smoke test gives non-finite latents is
  refused with that advice.

The plan gets one optimisation profile covering batch 1..max_batch (opt_batch, default max_batch // 2,
is the size its kernels are tuned for), a persistent timing cache (loaded when the file exists, saved
after the build) makes rebuilds fast, and it is written to plans/composer_sm<CC>_trt<X.Y.Z>.plan,
recorded in latcomp.json (`plans`, with its sha256 under `files`; the manifest is rewritten atomically).
Then every batch size 1, 2, 4, ..., max_batch is timed.

TensorRT and pycuda are imported only when a build runs, so registering the command costs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..runtime import trt_engine as trt_rt
from ..runtime.bundle import MANIFEST, read_manifest, sha256_file  # read_manifest verifies every checksum

STRONG_TYPING_FROM = (10, 12, 0)


class BuildError(RuntimeError):
    """TensorRT could not parse the graph or build the plan."""


# ---------------------------------------------------------------------------------------------------
# Small pure helpers (tested without TensorRT)


def choose_typing(version: str, typing: str = "auto") -> str:
    """'strong' or 'weak' for this TensorRT version (see the module docstring)."""
    if typing not in ("auto", "strong", "weak"):
        raise ValueError(f"typing must be 'auto', 'strong' or 'weak', not {typing!r}")
    strong_only = trt_rt.version_tuple(version) >= (11, 0, 0)
    if typing == "weak" and strong_only:
        raise ValueError(f"TensorRT {version} has no weak typing (BuilderFlag.FP16 was removed in 11)")
    if typing != "auto":
        return typing
    return "strong" if trt_rt.version_tuple(version) >= STRONG_TYPING_FROM else "weak"


def default_opt_batch(max_batch: int) -> int:
    return max(1, max_batch // 2)


def profile_shapes(shape, opt_batch: int, max_batch: int):
    """(min, opt, max) shapes of an input whose first axis is the dynamic batch."""
    shape = tuple(int(size) for size in shape)
    rest = shape[1:]
    if any(size < 0 for size in rest):
        raise BuildError(f"input shape {shape}: only the batch axis may be dynamic")
    return (1, *rest), (opt_batch, *rest), (max_batch, *rest)


def default_timing_cache(compute_capability, version: str) -> Path:
    """~/.cache/latcomp/tensorrt/timing_sm90_trt10.13.0.cache: one cache per GPU architecture and release
    (kept outside the bundle, whose every file is checksummed)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "latcomp" / "tensorrt"
    return root / f"timing_{trt_rt.sm_name(compute_capability)}_trt{trt_rt.short_version(version)}.cache"


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_plan(manifest: dict, bundle_dir: Path, entry: dict) -> dict:
    """The manifest with `entry` in `plans` (replacing one for the same file) and the plan file's sha256
    and size under `files`."""
    manifest = dict(manifest)
    plans = [plan for plan in manifest.get("plans") or [] if plan.get("file") != entry["file"]]
    manifest["plans"] = plans + [entry]
    files = dict(manifest.get("files") or {})
    path = bundle_dir / entry["file"]
    files[entry["file"]] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest["files"] = files
    return manifest


def write_manifest(bundle_dir: Path, manifest: dict) -> None:
    write_atomic(bundle_dir / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def composer_graph(manifest: dict, precision: str) -> dict:
    for name, graph in (manifest.get("graphs") or {}).items():
        if name.startswith(trt_rt.GRAPH) and graph.get("precision", "fp32") == precision:
            return graph
    raise BuildError(f"the bundle's manifest lists no {precision} composer graph")


# ---------------------------------------------------------------------------------------------------
# Building


def _parse(trt, network, logger, onnx_path: Path):
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data files (weights.bin) relative to the model's folder
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    return parser


def _build(
    trt, onnx_path: Path, typing: str, max_batch: int, opt_batch: int, workspace_gb: float, cache_path: Path
) -> tuple[bytes, dict[str, tuple]]:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if typing == "strong":
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # ignored, always on, in 11
        flags = 1 << int(flag) if flag is not None else 0
    network = builder.create_network(flags)
    parser = _parse(trt, network, logger, onnx_path)  # keep the parser alive until the build is done
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if typing == "weak":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shapes = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shapes[tensor.name] = profile_shapes(tensor.shape, opt_batch, max_batch)
        profile.set_shape(tensor.name, *shapes[tensor.name])
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    if not config.set_timing_cache(cache, False):  # a cache from another release/GPU: start afresh
        config.set_timing_cache(config.create_timing_cache(b""), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError("TensorRT failed to build the plan (see the TensorRT log above)")
    write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    del parser
    return bytes(serialized), shapes


def _sample_feeds(runner: trt_rt.PlanRunner, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible inputs: random pixels, a mask keeping about half of them, realism 0.5."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in runner.inputs:
        shape, dtype = (batch, *runner.shapes[name]), runner.dtypes[name]
        if dtype == np.uint8:
            data = rng.integers(0, 256, shape, dtype=np.uint8)
            feeds[name] = np.where(data >= 128, 255, 0).astype(np.uint8) if name == "mask" else data
        else:
            feeds[name] = np.full(shape, 0.5, dtype=dtype)
    return feeds


def time_plan(runner: trt_rt.PlanRunner, batches=None, iterations: int = 30, warmup: int = 5) -> dict:
    """Per-batch latency of runner.infer (host copies included): {batch: {p50_ms, p95_ms, mean_ms,
    images_per_s}}."""
    results = {}
    for batch in batches or trt_rt.batch_buckets(runner.max_batch):
        feeds = _sample_feeds(runner, batch)
        for _ in range(warmup):
            runner.infer(feeds)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            runner.infer(feeds)
            times.append((time.perf_counter() - start) * 1000.0)
        p50 = float(np.percentile(times, 50))
        results[batch] = {
            "p50_ms": round(p50, 4),
            "p95_ms": round(float(np.percentile(times, 95)), 4),
            "mean_ms": round(float(np.mean(times)), 4),
            "images_per_s": round(batch * 1000.0 / p50, 1),
        }
    return results


def _smoke_test(runner: trt_rt.PlanRunner, typing: str) -> None:
    outputs = runner.infer(_sample_feeds(runner, min(2, runner.max_batch), seed=1))
    for name, value in outputs.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            advice = " Rebuild with --typing strong." if typing == "weak" else ""
            raise BuildError(f"the plan's output {name} has non-finite values (FP16 overflow?).{advice}")


def build_plan(
    bundle_dir,
    max_batch: int = 16,
    opt_batch: int | None = None,
    workspace_gb: float = 2.0,
    timing_cache=None,
    typing: str = "auto",
    device: str = "cuda",
    time_batches: bool = True,
    iterations: int = 30,
    log=print,
) -> dict:
    """Builds, records and times the bundle's TensorRT plan on this GPU (see the module docstring).
    Returns {plan, entry, latency_ms: {batch: {...}}, build_s, timing_cache}."""
    bundle_dir = Path(bundle_dir)
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    opt_batch = default_opt_batch(max_batch) if opt_batch is None else int(opt_batch)
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"opt_batch {opt_batch} must lie in 1..max_batch ({max_batch})")
    missing = trt_rt.missing_packages()
    if missing:
        raise trt_rt.TensorRTUnavailable(
            f"{' and '.join(missing)} not installed; install the GPU extras: {trt_rt.INSTALL_HINT}"
        )
    trt = trt_rt.import_tensorrt()
    driver = trt_rt.import_pycuda()
    index = trt_rt.cuda_device_index(device)
    cc = trt_rt.gpu_compute_capability(index)
    if cc is None:
        raise trt_rt.TensorRTUnavailable(
            f"no CUDA GPU {device} found; TensorRT plans are built on the GPU they will run on"
        )
    version = str(trt.__version__)
    typing = choose_typing(version, typing)
    manifest = read_manifest(bundle_dir)
    graph = composer_graph(manifest, "fp16" if typing == "strong" else "fp32")
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(cc, version)
    log(
        f"building {trt_rt.plan_filename(cc, version)} from {graph['file']} ({typing}ly typed, "
        f"TensorRT {version}, sm_{trt_rt.sm_name(cc)[2:]}, batch 1..{max_batch}, opt {opt_batch})"
    )

    start = time.perf_counter()
    context = driver.Device(index).retain_primary_context()
    context.push()  # the builder times kernels in the same (primary) context the runtime will use
    try:
        plan, shapes = _build(
            trt, bundle_dir / graph["file"], typing, max_batch, opt_batch, workspace_gb, cache_path
        )
        gpu_name = driver.Device(index).name()
    finally:
        driver.Context.pop()
        context.detach()
    build_s = time.perf_counter() - start
    log(f"built in {build_s:.1f} s ({len(plan) / 2**20:.1f} MiB); timing cache {cache_path}")

    runner = trt_rt.PlanRunner(plan, device=device, max_batch=max_batch)
    try:
        _smoke_test(runner, typing)
        latency = time_plan(runner, iterations=iterations) if time_batches else {}
    finally:
        runner.close()

    relative = trt_rt.plan_filename(cc, version)
    write_atomic(bundle_dir / relative, plan)
    entry = {
        "file": relative,
        "graph": trt_rt.GRAPH,
        "source": graph["file"],
        "precision": "fp16",
        "typing": typing,
        "compute_capability": trt_rt.format_compute_capability(cc),
        "tensorrt_version": version,
        "max_batch": max_batch,
        "opt_batch": opt_batch,
        "gpu": gpu_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "latency_ms_p50": {str(batch): row["p50_ms"] for batch, row in latency.items()},
    }
    write_manifest(bundle_dir, record_plan(manifest, bundle_dir, entry))
    return {
        "plan": str(bundle_dir / relative),
        "entry": entry,
        "latency_ms": latency,
        "build_s": build_s,
        "timing_cache": str(cache_path),
        "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
    }


# ---------------------------------------------------------------------------------------------------
# Command line


def _latency_table(latency: dict) -> str:
    rows = ["batch   p50 ms   p95 ms   images/s"]
    for batch, row in latency.items():
        rows.append(f"{batch:>5} {row['p50_ms']:>8.3f} {row['p95_ms']:>8.3f} {row['images_per_s']:>10.1f}")
    return "\n".join(rows)


def cmd_build_engine(args: argparse.Namespace) -> int:
    missing = trt_rt.missing_packages()
    if missing:
        print(
            f"latcomp build-engine: {' and '.join(missing)} not installed. TensorRT plans need an NVIDIA GPU "
            f"and the GPU extras: {trt_rt.INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    try:
        index = trt_rt.cuda_device_index(args.device)
    except ValueError as error:
        print(f"latcomp build-engine: {error}", file=sys.stderr)
        return 2
    if trt_rt.gpu_compute_capability(index) is None:
        print(
            f"latcomp build-engine: no CUDA GPU found ({args.device}); TensorRT plans are built on the GPU "
            f"they will run on (needs the NVIDIA driver and {trt_rt.INSTALL_HINT})",
            file=sys.stderr,
        )
        return 2
    bundle_dir = Path(args.bundle)
    max_batch = args.max_batch
    try:
        if max_batch is None:
            max_batch = int(read_manifest(bundle_dir).get("max_batch") or 16)
        result = build_plan(
            bundle_dir,
            max_batch=max_batch,
            opt_batch=args.opt_batch,
            workspace_gb=args.workspace_gb,
            timing_cache=args.timing_cache,
            typing=args.typing,
            device=args.device,
            time_batches=not args.no_timing,
            log=(lambda *a: None) if args.json else print,
        )
    except trt_rt.TensorRTUnavailable as error:
        print(f"latcomp build-engine: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:  # a bad bundle or argument
        print(f"latcomp build-engine: {bundle_dir}: {error}", file=sys.stderr)
        return 2
    except (BuildError, trt_rt.PlanMismatch, RuntimeError) as error:
        print(f"latcomp build-engine: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"plan {result['plan']} recorded in {bundle_dir / 'latcomp.json'}")
        if result["latency_ms"]:
            print(_latency_table(result["latency_ms"]))
    return 0


def register(commands) -> None:
    """Adds `build-engine` to the CLI's subparsers; imports nothing heavy."""
    parser = commands.add_parser(
        "build-engine",
        help="build a TensorRT plan of a bundle's composer for this GPU and time it",
        description="Build the bundle's FP16 composer into a TensorRT plan for this GPU and TensorRT release "
        "(strongly typed FP16 graph on TensorRT >= 10.12; FP16 builder flag on the fp32 graph before), "
        "record it in latcomp.json and print its latency per batch size. Needs an NVIDIA GPU and "
        f"{trt_rt.INSTALL_HINT}.",
    )
    parser.add_argument("bundle", help="bundle directory (with latcomp.json)")
    parser.add_argument(
        "--max-batch", type=int, help="largest batch of the plan (default: the bundle's max_batch)"
    )
    parser.add_argument("--opt-batch", type=int, help="batch size the kernels are tuned for (default max/2)")
    parser.add_argument(
        "--timing-cache",
        type=Path,
        help="timing cache file, loaded if present and saved after (default under ~/.cache/latcomp)",
    )
    parser.add_argument("--workspace-gb", type=float, default=2.0, help="builder workspace limit (default 2)")
    parser.add_argument(
        "--typing",
        choices=["auto", "strong", "weak"],
        default="auto",
        help="strongly typed FP16 graph or FP16 builder flag (default: by TensorRT version)",
    )
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda)")
    parser.add_argument("--no-timing", action="store_true", help="skip the per-batch timing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=cmd_build_engine)
