#!/usr/bin/env bash
# GPU check: scripts/gpu_check.sh [--dry-run] OUTDIR
#
# For a machine with an NVIDIA GPU and PyTorch with CUDA, onnx and onnxruntime (maybe a CPU build), with
# or without TensorRT. Runs the GPU-marked tests (`pytest -m gpu`), then times the engines on the GPU
# (torch fp32 and fp16, onnxruntime when it has the CUDA provider, TensorRT when tensorrt and pycuda
# import): p50/p95 per batch size after a warm-up. Then the paper's sizes (synthetic weights):
# StyleGAN2-256 and StyleGAN2-1024 with the ResNet-34 regressor at batch 1, 8 and 64 on torch-CUDA fp16
# (CUDA graphs where capture works) and onnxruntime-CUDA where installed (latcomp.bench.gpu_sizes).
# Writes into OUTDIR: gpu_check.log, env.json, nvidia-smi.txt, pytest-gpu.log, pytest-gpu.xml, bench.log,
# bench.json, sizes.log, sizes.json, sizes.md. Bounded to about 7.5 minutes; exits 2 for bad usage or
# when no CUDA GPU is visible, non-zero when the tests fail or a benchmark could not run at all.
# --dry-run: check the set-up and print the plan, without a GPU.
set -uo pipefail
usage() { echo "usage: scripts/gpu_check.sh [--dry-run] OUTDIR" >&2; exit 2; }
DRY_RUN=0
case "${1:-}" in
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage ;;
esac
[ $# -eq 1 ] || usage
OUT=$1
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
START=$(date +%s)
log() { echo "[gpu_check +$(($(date +%s) - START))s] $*" | tee -a "$OUT/gpu_check.log"; }

log "python: $PY ($($PY --version 2>&1))"
if [ "$DRY_RUN" -eq 1 ]; then
    log "dry run: would run pytest -m gpu (150 s), the engine benchmark (100 s) and the real sizes (200 s)"
    "$PY" -m latcomp.bench.gpu_sizes "$OUT" --dry-run --budget-s 200 | tee -a "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    log "no CUDA GPU is visible to torch here: nothing to check (use --dry-run to check the set-up only)"
    exit 2
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed (see nvidia-smi.txt)"

if ! "$PY" -c "import latcomp" 2>/dev/null; then
    log "installing latcomp (pip install -e . --no-deps)"
    "$PY" -m pip install --quiet --disable-pip-version-check -e . --no-deps >> "$OUT/gpu_check.log" 2>&1 \
        || log "pip install failed"
fi

"$PY" - > "$OUT/env.json" 2>> "$OUT/gpu_check.log" <<'EOF'
import importlib, json, platform
info = {"python": platform.python_version()}
for name in ("latcomp", "numpy", "torch", "onnx", "onnxruntime", "tensorrt", "pycuda", "cuda.bindings"):
    try:
        module = importlib.import_module(name)
        info[name] = getattr(module, "__version__", "present")
    except Exception as error:  # absent or broken: record why
        info[name] = f"unavailable: {type(error).__name__}: {error}"
try:
    import torch
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
except Exception as error:
    info["torch_error"] = repr(error)
try:
    import onnxruntime
    info["ort_providers"] = onnxruntime.get_available_providers()
except Exception:
    pass
print(json.dumps(info, indent=2))
EOF
log "environment: $(tr -d '\n ' < "$OUT/env.json" | cut -c1-400)"

log "pytest -m gpu (limit 150 s)"
timeout 150 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests \
    --junitxml="$OUT/pytest-gpu.xml" > "$OUT/pytest-gpu.log" 2>&1
TESTS_RC=$?
[ "$TESTS_RC" -eq 5 ] && TESTS_RC=0  # no GPU-marked test collected is not a failure
log "pytest rc=$TESTS_RC: $(tail -n 1 "$OUT/pytest-gpu.log")"

log "engine benchmark (limit 100 s)"
timeout 100 "$PY" - "$OUT" > "$OUT/bench.log" 2>&1 <<'EOF'
"""Times open_bundle(backend, device='cuda') engines: p50/p95 per batch size, written to OUT/bench.json.
(Stands in for `latcomp bench engine` until that command exists.)"""
import importlib.util, json, os, shutil, sys, tempfile, time, traceback
from pathlib import Path

import numpy as np

out = Path(sys.argv[1])
BATCHES = (1, 2, 4, 8, 16)
BUDGET_S = 20.0  # per engine, all batch sizes together
results = {"batches": list(BATCHES), "engines": {}}

def save():
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")

def bundle_copy(workdir: Path) -> Path:
    """A copy of the default bundle, or a small freshly exported one (a plan build writes into it)."""
    target = workdir / "bundle"
    source = os.environ.get("LATCOMP_BUNDLE")
    if not source:
        import latcomp
        default = Path(latcomp.__file__).parent / "default_bundle"
        source = str(default) if (default / "latcomp.json").is_file() else None
    if source:
        shutil.copytree(source, target)
        return target
    sys.path.insert(0, str(Path.cwd() / "tests"))
    from bundle_fixtures import make_small_bundle
    return Path(make_small_bundle(target))

def time_engine(engine, deadline):
    rng = np.random.default_rng(0)
    r = engine.resolution
    rows = {}
    for batch in BATCHES:
        if batch > engine.max_batch or time.perf_counter() > deadline:
            break
        images = rng.integers(0, 256, (batch, r, r, 3), dtype=np.uint8)
        masks = np.where(rng.random((batch, r, r, 1)) < 0.5, 255, 0).astype(np.uint8)
        for _ in range(3):
            engine.run(images, masks)
        times = []
        while len(times) < 30 and (len(times) < 5 or time.perf_counter() < deadline):
            start = time.perf_counter()
            engine.run(images, masks)
            times.append((time.perf_counter() - start) * 1000.0)
        p50 = float(np.percentile(times, 50))
        rows[str(batch)] = {"p50_ms": round(p50, 3), "p95_ms": round(float(np.percentile(times, 95)), 3),
                            "images_per_s": round(batch * 1000.0 / p50, 1), "iterations": len(times)}
        print(f"  batch {batch:>2}: p50 {p50:8.3f} ms  p95 {rows[str(batch)]['p95_ms']:8.3f} ms", flush=True)
    return rows

with tempfile.TemporaryDirectory() as scratch:
    try:
        bundle = bundle_copy(Path(scratch))
        results["bundle"] = json.loads((bundle / "latcomp.json").read_text()).get("name")
    except Exception:
        results["error"] = traceback.format_exc()
        save()
        raise SystemExit(1)
    from latcomp.runtime import open_bundle

    plans = [("torch", "fp32"), ("torch", "fp16")]
    try:
        import onnxruntime
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            plans.append(("ort", "fp16"))
    except ImportError:
        pass
    if importlib.util.find_spec("tensorrt") and importlib.util.find_spec("pycuda"):
        try:
            from latcomp.export.tensorrt_build import build_plan
            built = build_plan(bundle, max_batch=max(BATCHES), time_batches=False, log=print)
            results["tensorrt_build"] = {"plan": built["entry"]["file"], "build_s": round(built["build_s"], 1),
                                         "typing": built["entry"]["typing"]}
            plans.append(("trt", "fp16"))
        except Exception:
            results["tensorrt_build"] = {"error": traceback.format_exc()}
    else:
        results["tensorrt_build"] = {"skipped": "tensorrt or pycuda not importable"}
    for backend, precision in plans:
        key = f"{backend}-{precision}"
        print(f"{key}:", flush=True)
        try:
            with open_bundle(bundle, backend=backend, device="cuda", precision=precision,
                             max_batch=max(BATCHES)) as engine:
                results["engines"][key] = time_engine(engine, time.perf_counter() + BUDGET_S)
        except Exception:
            results["engines"][key] = {"error": traceback.format_exc()}
            print(results["engines"][key]["error"], flush=True)
        save()
save()
if not any("error" not in rows for rows in results["engines"].values()):
    raise SystemExit("no engine could be timed on the GPU (see the errors in bench.json)")
EOF
BENCH_RC=$?
log "benchmark rc=$BENCH_RC (bench.json, bench.log)"

log "real sizes: StyleGAN2-256 and -1024 + ResNet-34, batch 1, 8, 64 (budget 200 s, limit 230 s)"
timeout 230 "$PY" -m latcomp.bench.gpu_sizes "$OUT" --budget-s 200 > "$OUT/sizes.log" 2>&1
SIZES_RC=$?
log "real sizes rc=$SIZES_RC (sizes.json, sizes.md, sizes.log)"
log "done in $(($(date +%s) - START)) s"
[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ] && [ "$SIZES_RC" -eq 0 ]
