"""Native TensorRT engine for the fused composer graph (no torch; tensorrt and pycuda imported lazily).

A bundle may carry TensorRT plans (`plans` in latcomp.json), one per GPU architecture and TensorRT
version, built by `latcomp build-engine BUNDLE` from the FP16 composer graph. A plan is only valid for
the compute capability and the TensorRT release (major.minor.patch) that built it, so `find_plan` picks
the one matching this machine, and `TensorRTEngine` refuses any other with a message that says how to
rebuild it.

Execution (`PlanRunner`): pinned host buffers (pycuda page-locked) and device buffers sized once for
max_batch, one CUDA stream per TensorRT execution context, `set_input_shape` per call, then
`execute_async_v3` between asynchronous copies. Optional CUDA graphs (cuda_graphs=True, or the
environment variable LATCOMP_TRT_CUDA_GRAPHS=1) take stream capture and graph launch from NVIDIA's
`cuda-bindings` (CUDA runtime API; in the `gpu` extra next to pycuda, which wraps no capture API), acting on
pycuda's streams, so pycuda stays the one owner of contexts, buffers and streams (docs/ARCHITECTURE.md):
a batch is then padded to the next bucket (1, 2, 4, ..., max_batch), and each bucket gets its own
execution context, run normally once and then captured into a graph that later calls replay, because a
captured graph fixes the input shapes and addresses it was recorded with.

All CUDA work runs in the device's primary context, pushed around each call, so the engine can be used
from any thread (one call at a time; calls are serialised by a lock) and shares the context with
onnxruntime, which serves generate() and sample().
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from .bundle import Bundle, BundleError, read_bundle
from .engine import Engine, parse_device

GRAPH = "composer"
INSTALL_HINT = "pip install 'latcomp[gpu]'"
REBUILD_HINT = "latcomp build-engine {bundle}"
GRAPHS_ENV = "LATCOMP_TRT_CUDA_GRAPHS"
log = logging.getLogger("latcomp.runtime")

# TensorRT DataType names -> numpy; by name so that no tensorrt import is needed to read the table and
# so a DataType that trt.nptype does not know (older releases lacked UINT8 there) still maps.
_NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


class TensorRTUnavailable(RuntimeError):
    """TensorRT, pycuda or a CUDA GPU is missing; the message says what to install."""


class PlanMismatch(RuntimeError):
    """The bundle has no plan for this GPU and TensorRT version (or the plan would not load)."""


# ---------------------------------------------------------------------------------------------------
# What this machine has


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that fails to import, or a None in sys.modules
        return False


def missing_packages() -> list[str]:
    """The Python packages the TensorRT backend needs that are not installed (tensorrt, pycuda)."""
    return [name for name in ("tensorrt", "pycuda") if not _importable(name)]


def import_tensorrt():
    """`import tensorrt`, or TensorRTUnavailable saying what to install."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as error:
        raise TensorRTUnavailable(
            f"TensorRT is not installed ({error}); install the GPU extras: {INSTALL_HINT}"
        ) from error


def import_pycuda():
    """`import pycuda.driver`, initialised, or TensorRTUnavailable saying what to install."""
    try:
        driver = importlib.import_module("pycuda.driver")
    except ImportError as error:
        raise TensorRTUnavailable(
            f"pycuda is not installed or cannot load the CUDA driver ({error}); install the GPU extras: "
            f"{INSTALL_HINT} (pycuda compiles against the CUDA toolkit headers)"
        ) from error
    try:
        driver.init()
    except Exception as error:  # pycuda.driver.Error subclasses: no driver, no device
        raise TensorRTUnavailable(f"CUDA is not usable here: {error}") from error
    return driver


def cuda_runtime():
    """`cuda.bindings.runtime` (package cuda-bindings), or None: only CUDA-graph capture needs it."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return None


def tensorrt_version() -> str:
    """The installed TensorRT version string, e.g. '10.13.0.35' (imports tensorrt)."""
    return str(import_tensorrt().__version__)


def short_version(version: str) -> str:
    """major.minor.patch of a TensorRT version: a plan loads only under the release that built it."""
    parts = str(version).strip().split(".")
    if len(parts) < 2 or not all(part.isdigit() for part in parts[:3]):
        raise ValueError(f"not a TensorRT version: {version!r}")
    return ".".join((parts + ["0"])[:3])


def version_tuple(version: str) -> tuple[int, int, int]:
    return tuple(int(part) for part in short_version(version).split("."))  # type: ignore[return-value]


def parse_compute_capability(value) -> tuple[int, int]:
    """(major, minor) from '9.0', 'sm90', 'sm_90', 'sm_120', (9, 0) or [9, 0]."""
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    text = str(value).strip().lower().removeprefix("sm").lstrip("_")
    if "." in text:
        major, minor = text.split(".", 1)
        return int(major), int(minor)
    if text.isdigit() and len(text) >= 2:  # 'sm90' -> (9, 0), 'sm120' -> (12, 0): the last digit is minor
        return int(text[:-1]), int(text[-1])
    raise ValueError(f"not a CUDA compute capability: {value!r} (expected e.g. '9.0' or 'sm90')")


def format_compute_capability(cc) -> str:
    major, minor = parse_compute_capability(cc)
    return f"{major}.{minor}"


def sm_name(cc) -> str:
    major, minor = parse_compute_capability(cc)
    return f"sm{major}{minor}"


def plan_filename(compute_capability, version: str, graph: str = GRAPH) -> str:
    """Bundle-relative path of a plan: plans/composer_sm90_trt10.13.0.plan."""
    return f"plans/{graph}_{sm_name(compute_capability)}_trt{short_version(version)}.plan"


@functools.lru_cache(maxsize=8)
def gpu_compute_capability(device_index: int = 0) -> tuple[int, int] | None:
    """Compute capability of CUDA device `device_index`, or None without a GPU: asks pycuda, then nvidia-smi
    (a machine that builds plans may have the driver's tool but not pycuda)."""
    try:
        driver = import_pycuda()
        if device_index < driver.Device.count():
            return tuple(driver.Device(device_index).compute_capability())  # type: ignore[return-value]
        return None
    except TensorRTUnavailable:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=compute_cap", "--format=csv,noheader", f"--id={device_index}"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout.strip()
            return parse_compute_capability(out.splitlines()[0]) if out else None
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None
    return None


def tensorrt_available(device_index: int = 0) -> bool:
    """True when tensorrt and pycuda are installed and a CUDA GPU is present."""
    if missing_packages():
        return False
    return gpu_compute_capability(device_index) is not None


def cuda_device_index(device: str) -> int:
    """'cuda' -> 0, 'cuda:1' -> 1; anything else is a ValueError (TensorRT runs on CUDA GPUs only)."""
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(
        f"the TensorRT backend runs on a CUDA GPU: device must be 'cuda' or 'cuda:N', not {device!r}"
    )


# ---------------------------------------------------------------------------------------------------
# Plans in a bundle


def plan_matches(entry: dict, compute_capability, version: str, graph: str = GRAPH) -> bool:
    try:
        return (
            entry.get("graph", GRAPH) == graph
            and parse_compute_capability(entry["compute_capability"])
            == parse_compute_capability(compute_capability)
            and short_version(entry["tensorrt_version"]) == short_version(version)
        )
    except (KeyError, ValueError):
        return False


def find_plan(
    manifest: dict,
    bundle_dir,
    compute_capability=None,
    version: str | None = None,
    graph: str = GRAPH,
    device_index: int = 0,
) -> dict | None:
    """The manifest's plan entry built for this GPU's compute capability and this TensorRT release whose
    file exists in the bundle, or None. `compute_capability` and `version` default to this machine's."""
    if compute_capability is None:
        compute_capability = gpu_compute_capability(device_index)
        if compute_capability is None:
            return None
    if version is None:
        version = tensorrt_version()
    for entry in manifest.get("plans") or []:
        if (
            plan_matches(entry, compute_capability, version, graph)
            and (Path(bundle_dir) / entry["file"]).is_file()
        ):
            return entry
    return None


def describe_plan(entry: dict) -> str:
    return (
        f"{entry.get('file', '?')} (sm_{sm_name(entry['compute_capability'])[2:]}, "
        f"TensorRT {entry.get('tensorrt_version', '?')}, max_batch {entry.get('max_batch', '?')})"
    )


def plan_mismatch_message(bundle_dir, manifest: dict, compute_capability, version: str) -> str:
    """Why no plan fits this machine, what the bundle has, and the command that builds a fitting one."""
    here = f"sm_{sm_name(compute_capability)[2:]}" if compute_capability is not None else "no CUDA GPU"
    plans = [describe_plan(entry) for entry in manifest.get("plans") or [] if "compute_capability" in entry]
    have = "; ".join(plans) if plans else "none"
    return (
        f"bundle {bundle_dir} has no TensorRT plan for this machine ({here}, TensorRT {version}); "
        f"plans in the bundle: {have}. A plan only runs on the GPU architecture and TensorRT release that "
        f"built it: build one here with `{REBUILD_HINT.format(bundle=bundle_dir)}` "
        f"(or use backend='ort')."
    )


def require_plan(manifest: dict, bundle_dir, compute_capability, version: str, graph: str = GRAPH) -> dict:
    """find_plan, or PlanMismatch with plan_mismatch_message."""
    entry = find_plan(
        manifest, bundle_dir, compute_capability=compute_capability, version=version, graph=graph
    )
    if entry is None:
        raise PlanMismatch(plan_mismatch_message(bundle_dir, manifest, compute_capability, version))
    return entry


# ---------------------------------------------------------------------------------------------------
# Running a plan


def numpy_dtype(trt_dtype) -> np.dtype:
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in _NUMPY_DTYPES:
        raise TypeError(f"TensorRT tensor type {name} has no numpy equivalent here")
    return np.dtype(_NUMPY_DTYPES[name])


def batch_buckets(max_batch: int) -> list[int]:
    """1, 2, 4, ... below max_batch, then max_batch: the batch sizes CUDA graphs are captured for."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch]


def bucket_for(n: int, max_batch: int) -> int:
    return next(size for size in batch_buckets(max_batch) if size >= n)


class _CudaContext:
    """The device's primary CUDA context (the one TensorRT, onnxruntime and torch use), pushed per call."""

    def __init__(self, driver, index: int):
        self._driver = driver
        if index >= driver.Device.count():
            raise TensorRTUnavailable(f"no CUDA device {index} (found {driver.Device.count()})")
        self.device = driver.Device(index)
        self._context = self.device.retain_primary_context()

    def __enter__(self):
        self._context.push()
        return self

    def __exit__(self, *exc_info):
        self._driver.Context.pop()

    def release(self):
        self._context.detach()


class _Slot:
    """One execution context with its own stream (and, once captured, its CUDA graph)."""

    def __init__(self, context, stream):
        self.context = context
        self.stream = stream
        self.graph = None  # cudaGraph_t, kept to destroy it
        self.graph_exec = None  # cudaGraphExec_t replayed by later calls
        self.runs = 0


class PlanRunner:
    """Deserialises a TensorRT plan and runs it on numpy batches of at most max_batch samples."""

    def __init__(
        self, plan: bytes, device: str = "cuda", max_batch: int | None = None, cuda_graphs: bool = False
    ):
        trt = import_tensorrt()
        self._driver = import_pycuda()
        self._trt = trt
        self._lock = threading.Lock()
        self._cuda = _CudaContext(self._driver, cuda_device_index(device))
        self._cudart = cuda_runtime() if cuda_graphs else None
        if cuda_graphs and self._cudart is None:
            raise TensorRTUnavailable(f"CUDA graphs need the CUDA runtime bindings (cuda-bindings): "
                                      f"{INSTALL_HINT}")
        self.cuda_graphs = cuda_graphs
        self.uncapturable: set[int] = set()  # graph buckets whose capture failed: they run plainly
        self._slots: dict[int, _Slot] = {}  # key 0: the one plain slot; else a graph bucket's slot
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, object] = {}
        self._engine = self._runtime = None
        try:
            with self._cuda:
                self._load(plan, max_batch)
        except BaseException:
            self._free()
            raise

    def _load(self, plan: bytes, max_batch: int | None):
        trt = self._trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise PlanMismatch(
                "TensorRT could not deserialise the plan: it was built by another TensorRT release or "
                "for another GPU architecture (see the log above)"
            )
        self._describe_tensors()
        profile_max = self._profile_max_batch()
        self.max_batch = profile_max if max_batch is None else int(max_batch)
        if not 1 <= self.max_batch <= profile_max:
            raise ValueError(
                f"max_batch {self.max_batch} is outside the plan's optimisation profile (1..{profile_max}); "
                "rebuild the plan with --max-batch"
            )
        for name in self.inputs + self.outputs:
            shape = (self.max_batch, *self.shapes[name])
            self._host[name] = self._driver.pagelocked_empty(shape, self.dtypes[name])
            self._device[name] = self._driver.mem_alloc(max(self._host[name].nbytes, 1))

    # -- description ---------------------------------------------------------------------------------

    def _describe_tensors(self):
        trt, engine = self._trt, self._engine
        self.inputs, self.outputs = [], []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, np.dtype] = {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            shape = tuple(engine.get_tensor_shape(name))
            if len(shape) == 0 or any(size < 0 for size in shape[1:]):
                raise PlanMismatch(
                    f"plan tensor {name} has shape {shape}: only the batch axis may be dynamic"
                )
            self.shapes[name] = shape[1:]
            self.dtypes[name] = numpy_dtype(engine.get_tensor_dtype(name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
            else:
                self.outputs.append(name)

    def _profile_max_batch(self) -> int:
        # profile 0's (min, opt, max) shapes; the batch axis of every input shares the same range
        return min(int(self._engine.get_tensor_profile_shape(name, 0)[2][0]) for name in self.inputs)

    def _new_slot(self) -> _Slot:
        context = self._engine.create_execution_context()
        if context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        for name in self.inputs + self.outputs:
            context.set_tensor_address(name, int(self._device[name]))
        return _Slot(context, self._driver.Stream())

    # -- execution -----------------------------------------------------------------------------------

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one batch (1..max_batch samples, the same count in every input); returns new arrays."""
        n = len(next(iter(feeds.values())))
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"batch of {n}: expected 1..{self.max_batch} samples per plan call")
        with self._lock, self._cuda:
            size = bucket_for(n, self.max_batch) if self.cuda_graphs else n
            for name in self.inputs:
                host = self._host[name]
                host[:n] = feeds[name]
                host[n:size] = 0  # padding rows for a graph bucket: defined values, results dropped
            slot = self._slot(size)
            for name in self.inputs:
                self._driver.memcpy_htod_async(self._device[name], self._host[name][:size], slot.stream)
            self._enqueue(slot, size)
            for name in self.outputs:
                self._driver.memcpy_dtoh_async(self._host[name][:size], self._device[name], slot.stream)
            slot.stream.synchronize()
            return {name: self._host[name][:n].copy() for name in self.outputs}

    def _slot(self, size: int) -> _Slot:
        key = size if self.cuda_graphs else 0
        if key not in self._slots:
            self._slots[key] = self._new_slot()
        return self._slots[key]

    def _enqueue(self, slot: _Slot, size: int):
        if slot.graph_exec is not None:
            self._check(self._cudart.cudaGraphLaunch(slot.graph_exec, slot.stream.handle), "cudaGraphLaunch")
            return
        for name in self.inputs:
            if not slot.context.set_input_shape(name, (size, *self.shapes[name])):
                raise ValueError(f"TensorRT refused shape {(size, *self.shapes[name])} for input {name}")
        if not slot.context.execute_async_v3(slot.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        slot.runs += 1
        if self.cuda_graphs and slot.runs == 1:
            # the first run flushed TensorRT's deferred per-shape setup; record the replayable graph now
            slot.stream.synchronize()
            self._capture(slot, size)

    def _capture(self, slot: _Slot, size: int):
        rt = self._cudart
        handle = slot.stream.handle
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check(rt.cudaStreamBeginCapture(handle, mode), "cudaStreamBeginCapture")
        ok = slot.context.execute_async_v3(handle)
        err, graph = rt.cudaStreamEndCapture(handle)
        if not ok or int(err) != 0:
            # this engine cannot be captured (e.g. it synchronises internally): keep running it plainly
            if int(err) == 0 and graph is not None:
                rt.cudaGraphDestroy(graph)
            self.uncapturable.add(size)
            return
        slot.graph = graph
        slot.graph_exec = self._check(rt.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiate")

    @staticmethod
    def _check(result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"{what} failed: {err}")
        return rest[0] if len(rest) == 1 else None

    def close(self):
        """Frees the contexts, graphs, buffers and engine; the runner cannot be used afterwards."""
        if self._engine is not None:
            with self._lock:
                self._free()

    def _free(self):
        with self._cuda:  # TensorRT objects and CUDA memory go while their context is current
            for slot in self._slots.values():
                slot.stream.synchronize()
                if slot.graph_exec is not None:
                    self._cudart.cudaGraphExecDestroy(slot.graph_exec)
                    self._cudart.cudaGraphDestroy(slot.graph)
            self._slots.clear()  # execution contexts before their engine
            for allocation in self._device.values():
                allocation.free()
            for array in self._host.values():
                array.base.free()
            self._device.clear()
            self._host.clear()
            self._engine = None
            self._runtime = None
        self._cuda.release()


def read_plan(path) -> bytes:
    return Path(path).read_bytes()


def env_cuda_graphs() -> bool:
    return os.environ.get(GRAPHS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


# ---------------------------------------------------------------------------------------------------
# The Engine


class TensorRTEngine(Engine):
    """The bundle's TensorRT plan for this GPU behind the Engine contract (backend "trt").

    run() executes the plan (FP16, its precision fixed when it was built). generate() and sample() run the
    bundle's fp32 generator and sampler graphs through onnxruntime on the same device (CUDA provider, or
    TensorRT provider, when onnxruntime-gpu is installed; otherwise on the CPU, with a warning), since the
    plan holds only the composer.
    """

    backend = "trt"

    def __init__(
        self, bundle, device: str = "cuda", max_batch: int | None = None, cuda_graphs: bool | None = None
    ):
        device = parse_device(device)  # "cuda" -> "cuda:0"; "cpu" is refused just below
        index = cuda_device_index(device)
        missing = missing_packages()
        if missing:
            raise TensorRTUnavailable(
                f"the TensorRT backend needs {' and '.join(missing)}: install the GPU extras: {INSTALL_HINT}"
            )
        bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
        trt = import_tensorrt()
        compute_capability = gpu_compute_capability(index)
        if compute_capability is None:
            raise TensorRTUnavailable(f"no CUDA GPU {device}: the TensorRT backend runs on NVIDIA GPUs")
        entry = require_plan(bundle.manifest, bundle.path, compute_capability, str(trt.__version__))
        if entry["file"] not in bundle.manifest.get("files", {}):
            # a plan is executable code: only run one whose checksum the manifest vouches for
            raise BundleError(f"{bundle.path / entry['file']}: not listed under 'files' in latcomp.json")
        # the plan's optimisation profile bounds the batch (PlanRunner reads it from the plan itself)
        plan_max = int(entry.get("max_batch") or bundle.manifest["max_batch"])
        wanted = min(int(bundle.manifest["max_batch"]), plan_max) if max_batch is None else int(max_batch)
        if wanted > plan_max:
            log.warning(
                "max_batch %d exceeds the profile of plan %s; using %d (for more, rebuild it with "
                "`latcomp build-engine %s --max-batch %d`)",
                wanted,
                entry["file"],
                plan_max,
                bundle.path,
                wanted,
            )
            wanted = plan_max
        super().__init__(bundle, device, str(entry.get("precision", "fp16")), wanted)
        self.plan = entry
        self._ort_sessions: dict = {}
        self._ort_lock = threading.Lock()
        graphs = env_cuda_graphs() if cuda_graphs is None else bool(cuda_graphs)
        self._runner = PlanRunner(read_plan(bundle.path / entry["file"]), device, self.max_batch, graphs)
        try:
            self._check_io()
        except Exception:
            self._runner.close()
            raise
        self.cuda_graphs = graphs

    def _check_io(self):
        r, runner = self.resolution, self._runner
        expected = {
            "image": ((r, r, 3), np.uint8),
            "mask": ((r, r, 1), np.uint8),
            "realism": ((), np.float32),
            "result": ((r, r, 3), np.uint8),
            "latent": (tuple(self.latent_shape), np.float32),
        }
        got = {
            name: (tuple(runner.shapes[name]), runner.dtypes[name]) for name in runner.inputs + runner.outputs
        }
        for name, (shape, dtype) in expected.items():
            if name not in got or got[name][0] != shape or got[name][1] != dtype:
                raise PlanMismatch(
                    f"plan {self.plan['file']} does not fit this bundle: tensor {name} is {got.get(name)}, "
                    f"expected {shape} {np.dtype(dtype).name}; rebuild it with "
                    f"`{REBUILD_HINT.format(bundle=self.bundle.path)}`"
                )

    def _compose(self, images, masks, realism):
        outputs = self._runner.infer({"image": images, "mask": masks, "realism": realism})
        return outputs["result"], outputs["latent"]

    # generator and sampler: onnxruntime on the same device

    def _ort_session(self, graph: str):
        with self._ort_lock:
            if graph not in self._ort_sessions:
                try:
                    import onnxruntime as ort
                except ImportError as error:
                    raise RuntimeError(
                        "generate() and sample() on the trt backend run the generator and sampler graphs "
                        f"through onnxruntime, which is not installed: {INSTALL_HINT}"
                    ) from error
                from .ort_engine import providers_for, session_options

                try:
                    providers = providers_for(self.bundle, graph, self.device, False, self.max_batch)
                except RuntimeError as error:  # onnxruntime without a GPU provider
                    log.warning("%s; the %s graph runs on the CPU", error, graph)
                    providers = ["CPUExecutionProvider"]
                path = str(self.bundle.graph_path(graph))
                self._ort_sessions[graph] = ort.InferenceSession(path, session_options(), providers=providers)
            return self._ort_sessions[graph]

    def _generate(self, latents):
        return self._ort_session("generator").run(None, {"latent": latents})[0]

    def _sample_latents(self, z, truncation):
        return self._ort_session("sampler").run(None, {"z": z, "truncation": truncation})[0]

    def _release(self):
        self._runner.close()
        with self._ort_lock:
            self._ort_sessions.clear()
