"""The onnxruntime backend: the bundle's graphs on the best execution providers present.

Sessions run with every graph optimisation (which also folds the parameter arithmetic the graphs keep),
sequential execution and memory patterns. Providers are chosen per device (`providers_for`) unless the
caller names them. On CUDA, inputs go through IO binding into device buffers kept per shape and instance,
so a steady stream of batches allocates nothing.

Instances (like Triton's instance groups): the engine holds `instances` independent sets of sessions, each
with `threads` intra-op threads, and up to `instances` calls run at once, each on a free set (a further
call waits for one). On CPU the default is two instances sharing the physical cores: one call then gets
half the cores (on 2 cores, ~1.1 instead of ~0.8 ms for one 64 px image), but two calls in flight keep
every core busy while one batch is gathered and answered and the other computes, which serves more
requests under load (BENCHMARKS.md: +10 % at concurrency 16); `instances=1` gives the lowest latency to a
single stream. On CUDA one instance owns the device.
The composer sessions open with the engine (errors show at once); generator and sampler on first use.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import numpy as np

from .bundle import Bundle, BundleError
from .engine import Engine, device_index

CACHE_DIR = Path(os.environ.get("LATCOMP_CACHE_DIR", Path.home() / ".cache" / "latcomp"))
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # the automatic choice's order
# composer graphs: fp32 ("composer"), fp16 (GPUs) and int8 (QDQ, for CPUs: export.quantize) as
# "composer_<precision>"
PRECISIONS = ("fp32", "fp16", "int8")


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


def session_options(threads: int | None = None):
    """Session options of every graph: `threads` intra-op threads (None: one per physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_mem_pattern = True
    options.intra_op_num_threads = physical_cores() if threads is None else threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; the engine checks which providers it really got
    return options


def check_threads(threads: int | None, what: str = "threads") -> int | None:
    """`threads` if None or a positive int (0 would silently mean onnxruntime's default), else ValueError."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"{what} must be a positive int or None, got {threads!r}")
    return threads


def default_layout(device: str, instances: int | None, threads: int | None) -> tuple[int, int]:
    """(instances, intra-op threads per instance) with the defaults of the module docstring filled in."""
    cores = physical_cores()
    if instances is None:
        instances = 1 if device != "cpu" else min(2, cores)
    if threads is None:
        threads = max(1, cores // instances)
    return instances, threads


def check_providers(providers: list[str] | None, device: str) -> list[str] | None:
    """`providers` as a list when onnxruntime has each of them and they fit `device`, else ValueError.

    A GPU provider (TensorRT or CUDA EP) on "cpu" and a list without one on a CUDA device are refused, as
    either would run the graphs somewhere other than the device asked for.
    """
    if providers is None:
        return None
    if isinstance(providers, str) or not all(isinstance(name, str) for name in providers):
        raise ValueError(f"providers must be a list of provider names, got {providers!r}")
    providers = list(providers)
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [name for name in providers if name not in available]
    if missing:
        raise ValueError(f"providers={providers!r}: this onnxruntime has no {', '.join(missing)} (it has "
                         f"{', '.join(available)})")
    if not providers or len(set(providers)) != len(providers):
        raise ValueError(f"providers={providers!r}: name each provider once, at least one")
    on_gpu = [name for name in providers if name in GPU_PROVIDERS]
    if device == "cpu" and on_gpu:
        raise ValueError(f"providers={providers!r}: {', '.join(on_gpu)} cannot serve device cpu")
    if device != "cpu" and not on_gpu:
        raise ValueError(f"providers={providers!r}: device {device} needs {' or '.join(GPU_PROVIDERS)}")
    return providers


def _with_options(name: str, bundle: Bundle, graph: str, device: str, fp16: bool, max_batch: int):
    """A provider entry for InferenceSession: (name, options) for the GPU providers, else the name."""
    index = device_index(device)
    if name == "TensorrtExecutionProvider":
        # one optimisation profile covering batch 1..max_batch, and engines cached across runs
        inputs = bundle.manifest["graphs"][graph]["inputs"]

        def profile(batch: int) -> str:
            return ",".join(f"{tensor}:" + "x".join(str(batch if d == "N" else d) for d in spec["shape"])
                            for tensor, spec in inputs.items())

        return (name, {
            "device_id": index, "trt_fp16_enable": fp16, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(CACHE_DIR / "ort-tensorrt"), "trt_timing_cache_enable": True,
            "trt_profile_min_shapes": profile(1), "trt_profile_opt_shapes": profile(max_batch),
            "trt_profile_max_shapes": profile(max_batch),
        })
    if name == "CUDAExecutionProvider":
        return (name, {"device_id": index})
    return name


def providers_for(bundle: Bundle, graph: str, device: str, fp16: bool, max_batch: int,
                  providers: list[str] | None = None) -> list:
    """Providers (with options) for one graph: `providers` in their order when given (see check_providers),
    else TensorRT EP, CUDA EP, then CPU on CUDA and CPU alone on "cpu"."""
    if providers is None:
        if device == "cpu":
            return ["CPUExecutionProvider"]
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = [name for name in GPU_PROVIDERS if name in available]
        if not providers:
            raise RuntimeError(f"device {device}: this onnxruntime has no CUDA or TensorRT provider "
                               f"(it has {', '.join(available)}); install onnxruntime-gpu")
        providers.append("CPUExecutionProvider")
    return [_with_options(name, bundle, graph, device, fp16, max_batch) for name in providers]


def check_variant(bundle: Bundle, precision: str) -> None:
    """BundleError unless the bundle holds a composer at `precision` that passed its parity check."""
    graph = f"composer_{precision}"
    if not bundle.has_graph(graph):
        hint = " (export it with `latcomp export --int8`)" if precision == "int8" else ""
        raise BundleError(f"{bundle.path}: no {graph} graph in this bundle{hint}; use precision='fp32'")
    parity = bundle.manifest.get("parity", {}).get(graph, {})
    if parity.get("passed") is False:  # the export refuses such a graph; a hand-made manifest may not
        raise BundleError(f"{bundle.path}: {graph} failed its parity check ({parity.get('psnr_db')} dB)")


class OrtEngine(Engine):
    backend = "ort"

    def __init__(self, bundle: Bundle, device: str = "cpu", precision: str = "auto",
                 max_batch: int | None = None, providers: list[str] | None = None,
                 threads: int | None = None, instances: int | None = None):
        """`providers`: onnxruntime's providers in order of preference, replacing the automatic choice
        (ValueError when onnxruntime lacks one or they do not fit the device); `instances`: calls that may
        run at once, each on its own sessions; `threads`: intra-op threads per session (defaults: see the
        module docstring)."""
        self._providers = check_providers(providers, device)
        self.instances, self.threads = default_layout(device, check_threads(instances, "instances"),
                                                      check_threads(threads))
        if precision == "auto":
            precision = "fp16" if device != "cpu" and bundle.has_graph("composer_fp16") else "fp32"
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be 'auto' or one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision != "fp32":
            check_variant(bundle, precision)
        super().__init__(bundle, device, precision, max_batch)
        self._sessions: dict = {}  # (graph, instance) -> InferenceSession
        self._buffers: dict = {}
        self._lock = threading.Lock()
        # instances no call is using; last in, first out, so a light load keeps reusing one instance whose
        # weights and buffers are still in the CPU's caches (alternating cost ~25 % per call on 2 cores)
        self._free = queue.LifoQueue()
        for instance in range(self.instances):
            self._session("composer", instance)
            self._free.put(instance)
        self.providers = self._session("composer", 0).get_providers()
        if device != "cpu" and self.providers == ["CPUExecutionProvider"]:
            raise RuntimeError(f"device {device}: onnxruntime could not start a CUDA provider (are the CUDA "
                               "and cuDNN libraries installed?)")

    @property
    def concurrency(self) -> int:
        return self.instances

    def _session(self, graph: str, instance: int):
        """Instance `instance`'s session of `graph` (the composer at this engine's precision), created on
        first use."""
        import onnxruntime as ort

        with self._lock:
            if (graph, instance) not in self._sessions:
                variant = graph == "composer" and self.precision != "fp32"
                name = f"composer_{self.precision}" if variant else graph
                providers = providers_for(self.bundle, name, self.device, self.precision == "fp16",
                                          self.max_batch, self._providers)
                self._sessions[graph, instance] = ort.InferenceSession(
                    str(self.bundle.graph_path(name)), session_options(self.threads), providers=providers)
            return self._sessions[graph, instance]

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        instance = self._free.get()  # blocks while every instance is busy
        try:
            return self._run_on(graph, instance, feeds)
        finally:
            self._free.put(instance)

    def _run_on(self, graph: str, instance: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._session(graph, instance)
        if self.device == "cpu":
            return session.run(None, feeds)  # onnxruntime reads contiguous numpy arrays without a copy
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, self._device_buffer(graph, instance, name, array))
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda", device_index(self.device))
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def _device_buffer(self, graph: str, instance: int, name: str, array: np.ndarray):
        """A device OrtValue of the array's shape (one per graph, instance, input, shape), filled with it."""
        import onnxruntime as ort

        key = (graph, instance, name, array.shape)
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
