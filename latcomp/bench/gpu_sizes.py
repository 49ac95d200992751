"""The paper's model sizes on a GPU: `python -m latcomp.bench.gpu_sizes OUTDIR` (run by scripts/gpu_check.sh).

For each synthetic configuration (export.synthetic: random weights in the published layouts, default
StyleGAN2-256 and StyleGAN2-1024 with the ResNet-34 regressor) and batch size (default 1, 8, 64), times the
fused composer (uint8 image + mask -> uint8 image + latent) on the GPU:
  - torch-fp16: the torch modules under autocast fp16 (reductions and normalisations stay fp32), replayed
    as one CUDA graph per batch size when capture works, eagerly otherwise (the row says which);
  - ort-cuda-fp32: onnxruntime's CUDA provider on the exported fp32 composer graph (only the composer is
    exported, without the bundle's parity check, to fit the time budget), when onnxruntime has it.
Inputs stay on the device (the timing is the GPU's work, not the host copies). Everything is bounded by
--budget-s: what does not fit is listed as skipped. Writes OUTDIR/sizes.json and OUTDIR/sizes.md.
--dry-run prints the plan and exits without touching a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

import numpy as np

NAMES = ("stylegan2-256", "stylegan2-1024")
BATCHES = (1, 8, 64)
WARMUP = 3
MIN_CALLS, MAX_CALLS, SECONDS_PER_ROW = 5, 50, 3.0


def _inputs(torch, resolution: int, batch: int, device: str):
    generator = torch.Generator().manual_seed(batch)
    image = torch.randint(0, 256, (batch, resolution, resolution, 3), dtype=torch.uint8, generator=generator)
    mask = (torch.rand(batch, resolution, resolution, 1, generator=generator) < 0.5).to(torch.uint8) * 255
    return image.to(device), mask.to(device), torch.zeros(batch, device=device)


def _time(call, synchronize, deadline: float) -> dict:
    for _ in range(WARMUP):
        call()
    synchronize()
    times: list[float] = []
    started = time.perf_counter()
    def more() -> bool:
        if len(times) < MIN_CALLS:
            return True
        now = time.perf_counter()
        return len(times) < MAX_CALLS and now - started < SECONDS_PER_ROW and now < deadline

    while more():
        begin = time.perf_counter()
        call()
        synchronize()
        times.append(time.perf_counter() - begin)
    p50 = float(np.percentile(times, 50)) * 1000
    return {"calls": len(times), "p50_ms": round(p50, 3),
            "p95_ms": round(float(np.percentile(times, 95)) * 1000, 3)}


def torch_fp16(composer, resolution: int, batch: int, deadline: float) -> dict:
    """One row: the composer under autocast fp16, as a CUDA graph when capture works."""
    import torch

    image, mask, realism = _inputs(torch, resolution, batch, "cuda")

    def eager():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
            return composer(image, mask, realism)

    mode, call = "eager", eager
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                eager()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            eager()
        mode, call = "cuda-graph", graph.replay
    except Exception as error:  # capture unsupported for some op here: time eagerly and say why
        mode = f"eager (CUDA graph capture failed: {type(error).__name__}: {str(error)[:120]})"
    row = _time(call, torch.cuda.synchronize, deadline)
    return {"mode": mode, **row}


def export_composer(composer, resolution: int, directory: Path) -> Path:
    """The fp32 composer graph alone (weights in composer.onnx.data beside it)."""
    import onnx
    import torch

    from ..export.onnx_graphs import export

    image = torch.zeros(2, resolution, resolution, 3, dtype=torch.uint8)
    mask = torch.full((2, resolution, resolution, 1), 255, dtype=torch.uint8)
    model = export(composer, (image, mask, torch.zeros(2)), ["image", "mask", "realism"],
                   ["result", "latent"])
    path = directory / "composer.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="composer.onnx.data")
    return path


def ort_cuda(path: Path, resolution: int, batch: int, deadline: float) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"onnxruntime could not start the CUDA provider (got {session.get_providers()})")
    rng = np.random.default_rng(batch)
    feeds = {"image": rng.integers(0, 256, (batch, resolution, resolution, 3), dtype=np.uint8),
             "mask": np.where(rng.random((batch, resolution, resolution, 1)) < 0.5, 255, 0).astype(np.uint8),
             "realism": np.zeros(batch, np.float32)}
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda", 0)
    row = _time(lambda: session.run_with_iobinding(binding), binding.synchronize_outputs, deadline)
    return {"mode": "io-binding", **row}


def plan(names, batches, ort_cuda_available: bool) -> list[str]:
    engines = ["torch-fp16"] + (["ort-cuda-fp32"] if ort_cuda_available else [])
    return [f"{name} batch {batch}: {engine}" for name in names for engine in engines for batch in batches]


def markdown(result: dict) -> str:
    lines = ["## Real-size models on the GPU (synthetic weights)", "",
             f"- GPU: {result.get('gpu')}; torch {result.get('torch')}, "
             f"onnxruntime {result.get('onnxruntime')}",
             f"- Date: {result['date']}; budget {result['budget_s']} s, used {result['elapsed_s']} s", "",
             "| model | engine | batch | mode | p50 ms | p95 ms | images/s |",
             "| :--- | :--- | ---: | :--- | ---: | ---: | ---: |"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['engine']} | {row['batch']} | error: {row['error'][:80]} "
                         "| | | |")
            continue
        rate = row["batch"] * 1000 / row["p50_ms"]
        lines.append(f"| {row['model']} | {row['engine']} | {row['batch']} | {row['mode']} | {row['p50_ms']} "
                     f"| {row['p95_ms']} | {rate:.1f} |")
    lines += [f"- Skipped: {entry}" for entry in result["skipped"]]
    return "\n".join(lines) + "\n"


def run(out: Path, names, batches, budget_s: float) -> dict:
    import torch

    from ..export.synthetic import synthetic_pair
    from ..nets.fused import Composer

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to torch")
    try:
        import onnxruntime as ort

        has_ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        ort_version = ort.__version__
    except ImportError:
        has_ort_cuda, ort_version = False, None
    started = time.perf_counter()
    deadline = started + budget_s
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "onnxruntime": ort_version,
              "budget_s": budget_s,
              "plan": plan(names, batches, has_ort_cuda), "rows": [], "skipped": []}

    def save() -> None:
        result["elapsed_s"] = round(time.perf_counter() - started, 1)
        (out / "sizes.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "sizes.md").write_text(markdown(result))

    def measure(name: str, engine: str, batch: int, row_of) -> None:
        if time.perf_counter() > deadline:
            result["skipped"].append(f"{name} {engine} batch {batch}: out of time")
            return
        row = {"model": name, "engine": engine, "batch": batch}
        try:
            row.update(row_of(batch))
        except Exception as error:  # e.g. out of memory at batch 64: record it, go on
            row["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        torch.cuda.empty_cache()
        result["rows"].append(row)
        print(f"{name} {engine} batch {batch}: {row.get('p50_ms', row.get('error'))}", flush=True)
        save()

    for name in names:
        generator, regressor = synthetic_pair(name)
        composer = Composer(generator, regressor).eval()
        resolution = generator.resolution
        composer.cuda()
        for batch in batches:
            measure(name, "torch-fp16", batch, partial(torch_fp16, composer, resolution, deadline=deadline))
        composer.cpu()
        torch.cuda.empty_cache()
        if has_ort_cuda and time.perf_counter() < deadline:
            with tempfile.TemporaryDirectory(prefix="latcomp-gpu-sizes-") as scratch:
                try:
                    path = export_composer(composer, resolution, Path(scratch))
                except Exception as error:
                    result["skipped"].append(f"{name} ort-cuda-fp32: export failed: {error}")
                    path = None
                for batch in batches if path else ():
                    measure(name, "ort-cuda-fp32", batch,
                            partial(ort_cuda, path, resolution, deadline=deadline))
        del composer, generator, regressor
    save()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latcomp.bench.gpu_sizes",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("out", help="output folder (sizes.json, sizes.md)")
    parser.add_argument("--models", default=",".join(NAMES),
                        help=f"comma-separated (default {','.join(NAMES)})")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="default 1,8,64")
    parser.add_argument("--budget-s", type=float, default=240.0, help="seconds for everything (default 240)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (no GPU needed)")
    args = parser.parse_args(argv)
    from ..export.synthetic import NAMES as KNOWN

    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in KNOWN]
    try:
        batches = [int(batch) for batch in args.batches.split(",")]
    except ValueError:
        batches = []
    if unknown or not names or not batches or min(batches) < 1 or args.budget_s <= 0:
        print(f"gpu_sizes: models from {', '.join(KNOWN)}, batches positive integers, budget > 0 "
              f"(got models={args.models!r} batches={args.batches!r} budget={args.budget_s})",
              file=sys.stderr)
        return 2
    if args.dry_run:
        print("gpu_sizes: dry run; would time (ort-cuda rows only where onnxruntime has the CUDA provider):")
        print("\n".join(f"  {line}" for line in plan(names, batches, True)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = run(out, names, batches, args.budget_s)
    except RuntimeError as error:
        print(f"gpu_sizes: {error}", file=sys.stderr)
        return 2
    print(markdown(result), end="")
    return 0 if any("p50_ms" in row for row in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
