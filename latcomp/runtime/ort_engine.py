"""The onnxruntime backend: the bundle's graphs on the best execution providers present.

Sessions run with every graph optimisation (which also folds the parameter arithmetic the graphs keep),
sequential execution, memory patterns and one intra-op thread per physical core. On CUDA, inputs go through
IO binding into device buffers kept per shape and thread, so a steady stream of batches allocates nothing.
The composer session opens with the engine (errors show at once); generator and sampler on first use.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .bundle import Bundle, BundleError
from .engine import Engine, device_index

CACHE_DIR = Path(os.environ.get("LATCOMP_CACHE_DIR", Path.home() / ".cache" / "latcomp"))


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (a hyper-thread adds little to a conv)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        blocks = Path("/proc/cpuinfo").read_text().strip().split("\n\n")
    except OSError:
        return allowed
    cores = set()
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        cores.add((fields.get("physical id"), fields.get("core id")))
    threads_per_core = max(1, len(blocks) // max(1, len(cores)))
    return max(1, allowed // threads_per_core)


def session_options():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_mem_pattern = True
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; the engine checks which providers it really got
    return options


def providers_for(bundle: Bundle, graph: str, device: str, fp16: bool, max_batch: int) -> list:
    """Providers (with options) for one graph: TensorRT EP, CUDA EP, then CPU on CUDA; CPU on "cpu"."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    index = device_index(device)
    chosen: list = []
    if "TensorrtExecutionProvider" in available:
        # one optimisation profile covering batch 1..max_batch, and engines cached across runs
        inputs = bundle.manifest["graphs"][graph]["inputs"]

        def profile(batch: int) -> str:
            return ",".join(f"{name}:" + "x".join(str(batch if d == "N" else d) for d in spec["shape"])
                            for name, spec in inputs.items())

        chosen.append(("TensorrtExecutionProvider", {
            "device_id": index, "trt_fp16_enable": fp16, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(CACHE_DIR / "ort-tensorrt"), "trt_timing_cache_enable": True,
            "trt_profile_min_shapes": profile(1), "trt_profile_opt_shapes": profile(max_batch),
            "trt_profile_max_shapes": profile(max_batch),
        }))
    if "CUDAExecutionProvider" in available:
        chosen.append(("CUDAExecutionProvider", {"device_id": index}))
    if not chosen:
        raise RuntimeError(f"device {device}: this onnxruntime has no CUDA or TensorRT provider "
                           f"(it has {', '.join(available)}); install onnxruntime-gpu")
    return [*chosen, "CPUExecutionProvider"]


class OrtEngine(Engine):
    backend = "ort"

    def __init__(self, bundle: Bundle, device: str = "cpu", precision: str = "auto",
                 max_batch: int | None = None):
        if precision == "auto":
            precision = "fp16" if device != "cpu" and bundle.has_graph("composer_fp16") else "fp32"
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'fp16', got {precision!r}")
        if precision == "fp16" and not bundle.has_graph("composer_fp16"):
            raise BundleError(f"{bundle.path}: no composer_fp16 graph in this bundle; use precision='fp32'")
        super().__init__(bundle, device, precision, max_batch)
        self._sessions: dict = {}
        self._buffers: dict = {}
        self._lock = threading.Lock()
        self.providers = self._session("composer").get_providers()
        if device != "cpu" and self.providers == ["CPUExecutionProvider"]:
            raise RuntimeError(f"device {device}: onnxruntime could not start a CUDA provider (are the CUDA "
                               "and cuDNN libraries installed?)")

    def _session(self, graph: str):
        """The session of `graph` (the composer at this engine's precision), created on first use."""
        import onnxruntime as ort

        with self._lock:
            if graph not in self._sessions:
                name = "composer_fp16" if graph == "composer" and self.precision == "fp16" else graph
                providers = providers_for(self.bundle, name, self.device, self.precision == "fp16",
                                          self.max_batch)
                self._sessions[graph] = ort.InferenceSession(str(self.bundle.graph_path(name)),
                                                             session_options(), providers=providers)
            return self._sessions[graph]

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._session(graph)
        if self.device == "cpu":
            return session.run(None, feeds)  # onnxruntime reads contiguous numpy arrays without a copy
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, self._device_buffer(graph, name, array))
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda", device_index(self.device))
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def _device_buffer(self, graph: str, name: str, array: np.ndarray):
        """A device OrtValue of the array's shape (one per graph, input, shape, thread), filled with it."""
        import onnxruntime as ort

        key = (graph, name, array.shape, threading.get_ident())
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = ort.OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype, "cuda",
                                                               device_index(self.device))
            self._buffers[key] = buffer
        buffer.update_inplace(array)
        return buffer

    def _compose(self, images, masks, realism):
        result, latent = self._run("composer", {"image": images, "mask": masks, "realism": realism})
        return result, latent

    def _generate(self, latents):
        return self._run("generator", {"latent": latents})[0]

    def _sample_latents(self, z, truncation):
        return self._run("sampler", {"z": z, "truncation": truncation})[0]

    def _release(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._buffers.clear()
