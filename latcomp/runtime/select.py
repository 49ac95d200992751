"""`open_bundle`: read and check a bundle, pick a backend, and say which and why in one log line.

backend="auto" takes, in order:
  - trt: on a CUDA device, when TensorRT is installed and the bundle has a plan for this GPU and release;
  - ort: onnxruntime with the best providers it has for the device (TensorRT EP, CUDA EP; CPU on "cpu");
  - torch: when onnxruntime cannot serve the device (not installed, or no CUDA provider for a GPU).
`providers`, `threads` and `instances` are onnxruntime settings: with any set, "auto" means ort.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from .bundle import DEFAULT_BUNDLE, Bundle, BundleError, read_bundle
from .engine import Engine, device_index, parse_device

log = logging.getLogger("latcomp.runtime")
# null: a NullEngine, no compute, for benchmarking the serving path (never chosen by auto)
BACKENDS = ("auto", "ort", "trt", "torch", "null")
PRECISIONS = ("auto", "fp32", "fp16", "int8")  # int8: the CPU composer of `latcomp export --int8` (ort)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # e.g. a None placed in sys.modules to block the module
        return False


def _trt_plan(bundle: Bundle, device: str) -> tuple[dict | None, str]:
    """(the plan entry to run, why) or (None, why not)."""
    try:
        from . import trt_engine
    except ImportError as error:
        return None, f"the TensorRT backend cannot load ({error})"
    if not trt_engine.tensorrt_available(device_index(device)):
        return None, "TensorRT is not installed"
    plan = trt_engine.find_plan(bundle.manifest, bundle.path, device_index=device_index(device))
    if plan is None:
        return None, "the bundle has no TensorRT plan for this GPU and TensorRT release"
    return plan, f"TensorRT plan {plan['file']} matches this GPU"


def _ort_gpu_providers() -> list[str]:
    if not _installed("onnxruntime"):
        return []
    import onnxruntime as ort

    gpu = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    return [name for name in ort.get_available_providers() if name in gpu]


def _torch_cuda() -> bool:
    if not _installed("torch"):
        return False
    import torch

    return torch.cuda.is_available()


def choose_backend(bundle: Bundle, device: str) -> tuple[str, str]:
    """(backend, reason) for backend="auto"."""
    if device == "cpu":
        if _installed("onnxruntime"):
            return "ort", "device is cpu; TensorRT plans need CUDA"
        if _installed("torch"):
            return "torch", "device is cpu and onnxruntime is not installed"
        raise RuntimeError("neither onnxruntime nor torch is installed: pip install 'latcomp[cpu]'")
    plan, why = _trt_plan(bundle, device)
    if plan is not None:
        return "trt", why
    providers = _ort_gpu_providers()
    if providers:
        return "ort", f"{why}; onnxruntime has {', '.join(providers)}"
    if _torch_cuda():
        return "torch", f"{why}; onnxruntime has no CUDA provider"
    raise RuntimeError(f"device {device}: {why}, onnxruntime has no CUDA provider and torch has no CUDA; "
                       "install 'latcomp[gpu]'")


def _make(backend: str, bundle: Bundle, device: str, precision: str, max_batch: int | None,
          providers: list[str] | None, threads: int | None, instances: int | None) -> Engine:
    if backend == "ort":
        from .ort_engine import OrtEngine

        return OrtEngine(bundle, device, precision, max_batch, providers=providers, threads=threads,
                         instances=instances)
    if backend == "null":
        from .null_engine import NullEngine

        return NullEngine(bundle, device, max_batch)
    if backend == "torch":
        from .torch_engine import TorchEngine

        return TorchEngine(bundle, device, precision, max_batch)
    from .trt_engine import TensorRTEngine  # a plan fixes its own precision

    return TensorRTEngine(bundle, device, max_batch)


def open_bundle(path: str | Path | None = None, backend: str = "auto", device: str = "cpu",
                precision: str = "auto", max_batch: int | None = None, providers: list[str] | None = None,
                threads: int | None = None, instances: int | None = None) -> Engine:
    """An Engine for the bundle at `path` (None: the default bundle shipped in the package).

    providers: onnxruntime execution providers in order of preference (e.g. ["CUDAExecutionProvider",
        "CPUExecutionProvider"]), used instead of the automatic choice; each must be in
        onnxruntime.get_available_providers(), and a CUDA device needs the TensorRT or CUDA EP among them
        while "cpu" takes neither. None: the automatic choice (see the module docstring).
    instances: onnxruntime calls that may run at once, each on its own sessions (engine.concurrency).
        None: two on CPU (one with a single core), one on CUDA.
    threads: intra-op threads of each onnxruntime session. None: the physical cores over the instances.
    These configure the ort backend: backend="auto" with any set opens ort; "trt" or "torch" refuse them.
    precision: "auto" (fp16 on CUDA where the bundle has it, else fp32), "fp32", "fp16", or "int8" (the
        bundle's INT8 composer for CPUs, from `latcomp export --int8`; onnxruntime only, like the settings
        above).

    Raises BundleError when the bundle is missing, of another format version, or a file does not match
    its checksum; ValueError for an unknown backend, device or precision, for providers that onnxruntime
    lacks or that do not fit the device, for threads or instances < 1, and for any of these on another
    backend.
    """
    if path is None:
        if not (DEFAULT_BUNDLE / "latcomp.json").is_file():
            raise BundleError(f"no default bundle is installed (expected {DEFAULT_BUNDLE}); pass the path of "
                              "a bundle made by `latcomp export`")
        path = DEFAULT_BUNDLE
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    settings = {"providers": providers, "threads": threads, "instances": instances,
                "precision int8": True if precision == "int8" else None}  # an onnxruntime graph only
    ort_settings = [name for name, value in settings.items() if value is not None]
    if ort_settings and backend not in ("auto", "ort"):
        raise ValueError(f"{' and '.join(ort_settings)} configure the ort backend, not {backend}")
    device = parse_device(device)
    bundle = read_bundle(path)
    if backend != "auto":
        chosen, reason = backend, "requested"
    elif ort_settings:
        chosen, reason = "ort", f"{' and '.join(ort_settings)} given"
    else:
        chosen, reason = choose_backend(bundle, device)
    engine = _make(chosen, bundle, device, precision, max_batch, providers, threads, instances)
    shown = f" providers={','.join(engine.providers)}" if engine.providers else ""
    if chosen == "ort":
        shown += f" instances={engine.instances} threads={engine.threads}"
    log.info("bundle %s %s: backend=%s device=%s precision=%s max_batch=%d%s (%s%s)", engine.name,
             engine.version, engine.backend, engine.device, engine.precision, engine.max_batch, shown,
             "auto: " if backend == "auto" else "", reason)
    return engine
