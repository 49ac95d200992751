"""TensorRT backend: plan naming and matching, refusals and the CLI's errors run everywhere; building and
running a plan needs tensorrt, pycuda and a CUDA GPU (marked gpu, skipped without them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latcomp.export import tensorrt_build as tb
from latcomp.runtime import trt_engine as te

REPO = Path(__file__).resolve().parents[1]


def fake_manifest() -> dict:
    return {
        "format": "latcomp-bundle",
        "plans": [
            {
                "file": "plans/composer_sm86_trt10.8.0.plan",
                "graph": "composer",
                "compute_capability": "8.6",
                "tensorrt_version": "10.8.0.43",
                "max_batch": 16,
            },
            {
                "file": "plans/composer_sm90_trt10.13.0.plan",
                "graph": "composer",
                "compute_capability": "9.0",
                "tensorrt_version": "10.13.0.35",
                "max_batch": 8,
            },
            {
                "file": "plans/composer_sm90_trt11.4.0.plan",
                "graph": "composer",
                "compute_capability": "9.0",
                "tensorrt_version": "11.4.0.106",
                "max_batch": 16,
            },
        ],
    }


# -- naming, versions, matching (no TensorRT needed) -------------------------------------------------


def test_plan_filename_names_gpu_architecture_and_release():
    assert te.plan_filename("9.0", "10.13.0.35") == "plans/composer_sm90_trt10.13.0.plan"
    assert te.plan_filename((8, 6), "10.8.0") == "plans/composer_sm86_trt10.8.0.plan"
    assert te.plan_filename("sm_120", "11.4") == "plans/composer_sm120_trt11.4.0.plan"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9.0", (9, 0)),
        ("8.6", (8, 6)),
        ("sm90", (9, 0)),
        ("sm_86", (8, 6)),
        ("sm120", (12, 0)),
        ((12, 1), (12, 1)),
        ([7, 5], (7, 5)),
        (" 10.0 ", (10, 0)),
    ],
)
def test_parse_compute_capability(value, expected):
    assert te.parse_compute_capability(value) == expected
    assert te.format_compute_capability(value) == f"{expected[0]}.{expected[1]}"


@pytest.mark.parametrize("bad", ["", "gpu", "sm", "9", "nine.zero"])
def test_parse_compute_capability_rejects_garbage(bad):
    with pytest.raises(ValueError):
        te.parse_compute_capability(bad)


def test_short_version():
    assert te.short_version("10.13.0.35") == "10.13.0"
    assert te.short_version("11.4") == "11.4.0"
    assert te.version_tuple("10.12.0.36") == (10, 12, 0)
    with pytest.raises(ValueError):
        te.short_version("ten")


def test_find_plan_matches_compute_capability_and_release(tmp_path):
    manifest = fake_manifest()
    for entry in manifest["plans"]:
        (tmp_path / entry["file"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / entry["file"]).write_bytes(b"plan")
    found = te.find_plan(manifest, tmp_path, compute_capability="9.0", version="10.13.0.99")
    assert found is manifest["plans"][1]  # the build number does not matter, major.minor.patch does
    assert (
        te.find_plan(manifest, tmp_path, compute_capability=(9, 0), version="11.4.0.106")
        is manifest["plans"][2]
    )
    assert (
        te.find_plan(manifest, tmp_path, compute_capability="8.6", version="10.8.0.43")
        is manifest["plans"][0]
    )
    assert te.find_plan(manifest, tmp_path, compute_capability="9.0", version="10.13.1") is None
    assert te.find_plan(manifest, tmp_path, compute_capability="8.9", version="10.13.0") is None
    assert (
        te.find_plan(manifest, tmp_path, compute_capability="9.0", version="10.13.0", graph="generator")
        is None
    )
    assert te.find_plan({"plans": []}, tmp_path, compute_capability="9.0", version="10.13.0") is None
    assert te.find_plan({}, tmp_path, compute_capability="9.0", version="10.13.0") is None


def test_find_plan_skips_a_listed_plan_whose_file_is_missing(tmp_path):
    assert te.find_plan(fake_manifest(), tmp_path, compute_capability="9.0", version="10.13.0") is None


def test_find_plan_ignores_malformed_entries(tmp_path):
    manifest = {
        "plans": [{"file": "x.plan"}, {"file": "y.plan", "compute_capability": "?", "tensorrt_version": "1"}]
    }
    assert te.find_plan(manifest, tmp_path, compute_capability="9.0", version="10.13.0") is None


def test_refusal_says_what_the_bundle_has_and_how_to_rebuild(tmp_path):
    bundle = tmp_path / "mybundle"
    with pytest.raises(te.PlanMismatch) as caught:
        te.require_plan(fake_manifest(), bundle, compute_capability="8.9", version="10.13.0.35")
    message = str(caught.value)
    assert f"latcomp build-engine {bundle}" in message
    assert "sm_89" in message and "TensorRT 10.13.0.35" in message
    assert "composer_sm86_trt10.8.0.plan" in message and "composer_sm90_trt11.4.0.plan" in message
    assert "backend='ort'" in message


def test_refusal_without_any_plan(tmp_path):
    message = te.plan_mismatch_message(tmp_path, {"plans": []}, (9, 0), "11.4.0")
    assert "plans in the bundle: none" in message and "latcomp build-engine" in message


def test_batch_buckets():
    assert te.batch_buckets(16) == [1, 2, 4, 8, 16]
    assert te.batch_buckets(12) == [1, 2, 4, 8, 12]
    assert te.batch_buckets(1) == [1]
    assert [te.bucket_for(n, 12) for n in (1, 2, 3, 5, 8, 9, 12)] == [1, 2, 4, 8, 8, 12, 12]


def test_numpy_dtype_by_tensorrt_type_name():
    class FakeType:
        def __init__(self, name):
            self.name = name

    assert te.numpy_dtype(FakeType("UINT8")) == np.uint8
    assert te.numpy_dtype(FakeType("FLOAT")) == np.float32
    assert te.numpy_dtype(FakeType("HALF")) == np.float16
    with pytest.raises(TypeError):
        te.numpy_dtype(FakeType("FP8"))


def test_cuda_device_index():
    assert te.cuda_device_index("cuda") == 0
    assert te.cuda_device_index("cuda:3") == 3
    for bad in ("cpu", "cuda:x", "gpu"):
        with pytest.raises(ValueError, match="CUDA GPU"):
            te.cuda_device_index(bad)


# -- build policy helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "typing", "expected"),
    [
        ("10.0.1.6", "auto", "weak"),
        ("10.11.0.33", "auto", "weak"),
        ("10.12.0.36", "auto", "strong"),
        ("10.13.0.35", "auto", "strong"),
        ("11.0.0", "auto", "strong"),
        ("11.4.0.106", "auto", "strong"),
        ("10.8.0", "strong", "strong"),
        ("10.13.0", "weak", "weak"),
    ],
)
def test_choose_typing(version, typing, expected):
    assert tb.choose_typing(version, typing) == expected


def test_choose_typing_refuses_weak_typing_on_tensorrt_11():
    with pytest.raises(ValueError, match="removed in 11"):
        tb.choose_typing("11.4.0", "weak")
    with pytest.raises(ValueError):
        tb.choose_typing("10.13.0", "fp16")


def test_profile_shapes_cover_batch_one_to_max():
    assert tb.profile_shapes((-1, 32, 32, 3), 8, 16) == ((1, 32, 32, 3), (8, 32, 32, 3), (16, 32, 32, 3))
    assert tb.profile_shapes((-1,), 2, 4) == ((1,), (2,), (4,))
    with pytest.raises(tb.BuildError):
        tb.profile_shapes((-1, -1, 3), 1, 2)
    assert tb.default_opt_batch(16) == 8 and tb.default_opt_batch(1) == 1


def test_default_timing_cache_is_per_architecture_and_release(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = tb.default_timing_cache("9.0", "10.13.0.35")
    assert path == tmp_path / "latcomp" / "tensorrt" / "timing_sm90_trt10.13.0.cache"


def test_record_plan_adds_entry_and_checksum_without_mutating(tmp_path):
    manifest = {"name": "b", "files": {"composer.onnx": {"sha256": "0", "bytes": 1}}, "plans": []}
    plan = tmp_path / "plans" / "composer_sm90_trt10.13.0.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"serialized engine")
    entry = {
        "file": "plans/composer_sm90_trt10.13.0.plan",
        "graph": "composer",
        "compute_capability": "9.0",
        "tensorrt_version": "10.13.0.35",
        "max_batch": 16,
    }
    updated = tb.record_plan(manifest, tmp_path, entry)
    assert manifest["plans"] == [] and "plans/composer_sm90_trt10.13.0.plan" not in manifest["files"]
    assert updated["plans"] == [entry]
    assert updated["files"][entry["file"]] == {
        "sha256": tb.sha256_file(plan),
        "bytes": len(b"serialized engine"),
    }
    assert updated["files"]["composer.onnx"] == {"sha256": "0", "bytes": 1}
    again = tb.record_plan(updated, tmp_path, dict(entry, max_batch=8))  # a rebuild replaces, not appends
    assert [p["max_batch"] for p in again["plans"]] == [8]


def test_write_manifest_is_atomic(tmp_path):
    tb.write_manifest(tmp_path, {"name": "x"})
    tb.write_manifest(tmp_path, {"name": "y"})
    assert json.loads((tmp_path / "latcomp.json").read_text()) == {"name": "y"}
    assert [p.name for p in tmp_path.iterdir()] == ["latcomp.json"]  # no temporary file left behind


# -- without TensorRT: imports stay light, errors say what to install -------------------------------


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def test_modules_import_without_tensorrt_or_pycuda_and_runtime_without_torch():
    code = (
        "import sys\n"
        "import latcomp.runtime.trt_engine\n"
        "print(sorted(m for m in ('tensorrt', 'pycuda', 'torch') if m in sys.modules))\n"
        "import latcomp.export.tensorrt_build\n"
        "print(sorted(m for m in ('tensorrt', 'pycuda') if m in sys.modules))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "[]"]


BLOCK_TENSORRT = "import sys; sys.modules['tensorrt'] = None; sys.modules['pycuda'] = None\n"


def test_build_engine_cli_without_tensorrt_exits_2_with_install_hint(tmp_path):
    code = BLOCK_TENSORRT + (
        "from latcomp import cli\n"
        "if 'latcomp.export.tensorrt_build' in cli.COMMAND_MODULES:\n"
        f"    sys.exit(cli.main(['build-engine', {str(tmp_path)!r}, '--max-batch', '4']))\n"
        "import argparse\n"
        "from latcomp.export.tensorrt_build import register\n"
        "parser = argparse.ArgumentParser(prog='latcomp')\n"
        "register(parser.add_subparsers())\n"
        f"args = parser.parse_args(['build-engine', {str(tmp_path)!r}, '--max-batch', '4'])\n"
        "sys.exit(args.run(args))\n"
    )
    result = run_python(code)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "pip install 'latcomp[gpu]'" in result.stderr
    assert "tensorrt" in result.stderr and "Traceback" not in result.stderr


def test_build_plan_without_tensorrt_raises_unavailable(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(te.TensorRTUnavailable, match=r"latcomp\[gpu\]"):
        tb.build_plan(tmp_path, max_batch=2)


def test_engine_without_tensorrt_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    assert not te.tensorrt_available()
    with pytest.raises(te.TensorRTUnavailable, match=r"pip install 'latcomp\[gpu\]'"):
        te.TensorRTEngine(tmp_path, device="cuda")


def test_engine_refuses_a_cpu_device(tmp_path):
    with pytest.raises(ValueError, match="CUDA GPU"):
        te.TensorRTEngine(tmp_path, device="cpu")


# -- the whole flow against a CPU stand-in for tensorrt, pycuda and the CUDA runtime -------------------
#
# The stand-in follows the documented semantics of the calls we make (device memory as host byte buffers
# addressed by integers, set_input_shape checked against the optimisation profile, execute_async_v3
# reading and writing the bound addresses, stream capture recording work that a graph launch replays) and
# "executes" a plan by running its source ONNX graph with onnxruntime on the CPU. It checks our side of
# the contract (buffers, shapes, padding, chunking, capture and replay, the manifest) on any machine; the
# GPU tests above check the real libraries.


class _FakeCuda:
    """pycuda.driver and cuda.bindings.runtime, on host memory."""

    def __init__(self):
        self.memory: dict[int, bytearray] = {}
        self.capturing: dict[int, list] = {}
        self.next_address = 4096
        self.pushed = 0
        self.launches = 0

    # pycuda.driver
    def init(self):
        pass

    def module(self):
        import types

        cuda = self

        class Device:
            def __init__(self, index):
                self.index = index

            @staticmethod
            def count():
                return 1

            def compute_capability(self):
                return (9, 0)

            def name(self):
                return "Fake GPU"

            def retain_primary_context(self):
                return Context()

        class Context:
            def push(self):
                cuda.pushed += 1

            @staticmethod
            def pop():
                cuda.pushed -= 1

            def detach(self):
                pass

        class Allocation:
            def __init__(self, nbytes):
                self.address = cuda.next_address
                cuda.next_address += nbytes + 256
                cuda.memory[self.address] = bytearray(nbytes)

            def __int__(self):
                return self.address

            def free(self):
                cuda.memory.pop(self.address)

        class Pinned(bytearray):
            def free(self):
                self.freed = True

        class Stream:
            count = 0

            def __init__(self):
                Stream.count += 1
                self.handle = 1000 + Stream.count

            def synchronize(self):
                assert self.handle not in cuda.capturing, "synchronize while capturing"

        def pagelocked_empty(shape, dtype):
            dtype = np.dtype(dtype)
            return np.ndarray(shape, dtype, buffer=Pinned(int(np.prod(shape)) * dtype.itemsize))

        def memcpy_htod_async(dest, src, stream):
            assert isinstance(src.base, Pinned) or isinstance(getattr(src.base, "base", None), Pinned)
            cuda.memory[int(dest)][: src.nbytes] = src.tobytes()

        def memcpy_dtoh_async(dest, src, stream):
            dest[...] = np.frombuffer(bytes(cuda.memory[int(src)][: dest.nbytes]), dest.dtype).reshape(
                dest.shape
            )

        driver = types.ModuleType("pycuda.driver")
        driver.__dict__.update(
            init=self.init,
            Device=Device,
            Context=Context,
            Stream=Stream,
            mem_alloc=Allocation,
            pagelocked_empty=pagelocked_empty,
            memcpy_htod_async=memcpy_htod_async,
            memcpy_dtoh_async=memcpy_dtoh_async,
        )
        return driver

    def runtime(self):
        import types

        cuda = self
        rt = types.SimpleNamespace()
        rt.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

        def begin(handle, mode):
            cuda.capturing[handle] = []
            return (0,)

        def end(handle):
            return 0, cuda.capturing.pop(handle)

        def launch(graph_exec, handle):
            cuda.launches += 1
            for work in graph_exec:
                work()
            return (0,)

        rt.cudaStreamBeginCapture = begin
        rt.cudaStreamEndCapture = end
        rt.cudaGraphInstantiateWithFlags = lambda graph, flags: (0, list(graph))
        rt.cudaGraphLaunch = launch
        rt.cudaGraphExecDestroy = lambda graph_exec: (0,)
        rt.cudaGraphDestroy = lambda graph: (0,)
        return rt


def _fake_tensorrt(cuda: _FakeCuda, version: str = "10.13.0.35"):
    import enum
    import types

    import onnx
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
    trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16")
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")
    trt.DataType = enum.Enum("DataType", "FLOAT HALF UINT8")
    onnx_types = {1: trt.DataType.FLOAT, 10: trt.DataType.HALF, 2: trt.DataType.UINT8}
    trt.builds = []

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class Tensor:
        def __init__(self, value):
            self.name = value.name
            self.shape = tuple(
                d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim
            )
            self.dtype = onnx_types[value.type.tensor_type.elem_type]

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs, self.path = flags, [], [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, index):
            return self.inputs[index]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            model = onnx.load(path, load_external_data=False)
            self.network.path = path
            self.network.inputs = [Tensor(v) for v in model.graph.input]
            self.network.outputs = [Tensor(v) for v in model.graph.output]
            return True

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data) or b"fake timing cache"

        def serialize(self):
            return self.data

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.cache = set(), [], None

        def set_memory_pool_limit(self, pool, size):
            assert pool is trt.MemoryPoolType.WORKSPACE and size > 0

        def set_flag(self, flag):
            self.flags.add(flag.name)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile(dict):
        def set_shape(self, name, low, opt, high):
            self[name] = [list(low), list(opt), list(high)]

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            typed = bool(network.flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            trt.builds.append({"strong": typed, "flags": sorted(config.flags), "path": network.path})
            io = {t.name: [list(t.shape), t.dtype.name, "INPUT"] for t in network.inputs}
            io.update({t.name: [list(t.shape), t.dtype.name, "OUTPUT"] for t in network.outputs})
            plan = {"fake-plan": version, "path": network.path, "io": io, "profile": config.profiles[0]}
            return json.dumps(plan).encode()

    class Context:
        def __init__(self, engine):
            self.engine, self.addresses, self.shapes = engine, {}, {}

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def set_input_shape(self, name, shape):
            low, _, high = self.engine.plan["profile"][name]
            if not all(lo <= size <= hi for lo, size, hi in zip(low, shape, high, strict=True)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def execute_async_v3(self, stream_handle):
            shapes = dict(self.shapes)

            def work():
                feeds = {}
                for name in self.engine.inputs:
                    dtype = te.numpy_dtype(self.engine.get_tensor_dtype(name))
                    count = int(np.prod(shapes[name])) * dtype.itemsize
                    raw = bytes(cuda.memory[self.addresses[name]][:count])
                    feeds[name] = np.frombuffer(raw, dtype).reshape(shapes[name])
                for name, value in zip(
                    self.engine.outputs, self.engine.session.run(None, feeds), strict=True
                ):
                    value = np.ascontiguousarray(value)
                    cuda.memory[self.addresses[name]][: value.nbytes] = value.tobytes()

            if stream_handle in cuda.capturing:
                cuda.capturing[stream_handle].append(work)
            else:
                work()
            return True

    class Engine:
        def __init__(self, plan):
            self.plan = plan
            self.names = list(plan["io"])
            self.inputs = [n for n in self.names if plan["io"][n][2] == "INPUT"]
            self.outputs = [n for n in self.names if plan["io"][n][2] == "OUTPUT"]
            self.session = ort.InferenceSession(plan["path"], providers=["CPUExecutionProvider"])

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_shape(self, name):
            return self.plan["io"][name][0]

        def get_tensor_dtype(self, name):
            return trt.DataType[self.plan["io"][name][1]]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode[self.plan["io"][name][2]]

        def get_tensor_profile_shape(self, name, profile):
            return self.plan["profile"][name]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            plan = json.loads(bytes(data))
            return Engine(plan) if plan.get("fake-plan") == version else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    """Installs the stand-in as tensorrt, pycuda.driver and the CUDA runtime bindings."""
    import importlib.machinery
    import types

    pytest.importorskip("onnxruntime")
    cuda = _FakeCuda()
    trt = _fake_tensorrt(cuda)
    pycuda = types.ModuleType("pycuda")
    driver = cuda.module()
    for name, module in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", driver)):
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    pycuda.driver = driver
    runtime = cuda.runtime()
    monkeypatch.setattr(te, "cuda_runtime", lambda: runtime)
    te.gpu_compute_capability.cache_clear()
    yield types.SimpleNamespace(cuda=cuda, trt=trt)
    te.gpu_compute_capability.cache_clear()


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    from bundle_fixtures import make_small_bundle

    return Path(make_small_bundle(tmp_path_factory.mktemp("fake") / "bundle", arch="stylegan2"))


def test_fake_build_then_run_matches_onnxruntime(fake_gpu, small_bundle, tmp_path):
    import onnxruntime as ort

    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle, bundle)
    cache = tmp_path / "timing.cache"
    result = tb.build_plan(
        bundle, max_batch=4, opt_batch=2, timing_cache=cache, iterations=2, log=lambda *a: None
    )
    entry = result["entry"]
    assert entry["file"] == "plans/composer_sm90_trt10.13.0.plan"
    assert entry["typing"] == "strong" and entry["source"] == "composer_fp16.onnx"
    assert fake_gpu.trt.builds[-1] == {
        "strong": True,
        "flags": [],
        "path": str(bundle / "composer_fp16.onnx"),
    }
    assert result["profile"]["image"][0][0] == 1 and result["profile"]["realism"] == [[1], [2], [4]]
    assert sorted(result["latency_ms"]) == [1, 2, 4] and cache.read_bytes() == b"fake timing cache"
    manifest = tb.read_manifest(bundle)  # sha256 of the new plan verified
    assert manifest["plans"] == [entry]
    assert te.find_plan(manifest, bundle) == entry  # this "machine" is sm_90 with TensorRT 10.13.0

    images, masks, realism = _inputs(manifest["resolution"], 7, seed=5)
    with te.TensorRTEngine(bundle, device="cuda", max_batch=64) as engine:
        assert engine.max_batch == 4  # capped at the plan's profile
        assert (engine.backend, engine.device, engine.precision) == ("trt", "cuda:0", "fp16")
        got_images, got_latents = engine.run(images, masks, realism)
        sampled_images, sampled_latents = engine.sample([1, 2, 3], truncation=0.7)
    assert fake_gpu.cuda.pushed == 0 and fake_gpu.cuda.memory == {}  # contexts popped, device memory freed
    session = ort.InferenceSession(str(bundle / "composer_fp16.onnx"), providers=["CPUExecutionProvider"])
    want_images, want_latents = session.run(None, {"image": images, "mask": masks, "realism": realism})
    np.testing.assert_array_equal(got_images, want_images)
    np.testing.assert_allclose(got_latents, want_latents, rtol=1e-5, atol=1e-5)
    assert sampled_images.shape == (3, *images.shape[1:])
    assert sampled_latents.shape == (3, *got_latents.shape[1:])

    from latcomp.runtime import open_bundle

    with open_bundle(bundle, device="cuda") as chosen:  # auto: the matching plan wins on a GPU
        assert chosen.backend == "trt" and chosen.plan == entry


def test_fake_weak_typing_builds_the_fp32_graph_with_the_fp16_flag(fake_gpu, small_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle, bundle)
    fake_gpu.trt.__version__ = "10.8.0.43"
    result = tb.build_plan(
        bundle, max_batch=2, time_batches=False, timing_cache=tmp_path / "c", log=lambda *a: None
    )
    assert result["entry"]["typing"] == "weak" and result["entry"]["source"] == "composer.onnx"
    assert fake_gpu.trt.builds[-1] == {
        "strong": False,
        "flags": ["FP16"],
        "path": str(bundle / "composer.onnx"),
    }
    assert result["entry"]["file"] == "plans/composer_sm90_trt10.8.0.plan" and result["latency_ms"] == {}


def test_fake_cuda_graphs_capture_once_per_bucket_then_replay(fake_gpu, small_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle, bundle)
    tb.build_plan(bundle, max_batch=4, time_batches=False, timing_cache=tmp_path / "c", log=lambda *a: None)
    r = tb.read_manifest(bundle)["resolution"]
    with te.TensorRTEngine(bundle, device="cuda") as plain:
        expected = [plain.run(*_inputs(r, n, seed=n)) for n in (3, 1, 3, 4)]
    with te.TensorRTEngine(bundle, device="cuda", cuda_graphs=True) as graphed:
        got = [graphed.run(*_inputs(r, n, seed=n)) for n in (3, 1, 3, 4)]
        runner = graphed._runner
        assert sorted(runner._slots) == [1, 4]  # 3 is padded to the bucket of 4
        assert all(slot.graph_exec is not None for slot in runner._slots.values())
    assert fake_gpu.cuda.launches == 2  # the second batch of 3 and the batch of 4 replayed bucket 4's graph
    for (got_images, got_latents), (want_images, want_latents) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(got_images, want_images)
        np.testing.assert_allclose(got_latents, want_latents, rtol=1e-4, atol=1e-4)


def test_fake_engine_refuses_plans_for_another_gpu_or_release(fake_gpu, small_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle, bundle)
    with pytest.raises(te.PlanMismatch, match=f"latcomp build-engine {bundle}"):
        te.TensorRTEngine(bundle, device="cuda")  # no plan at all
    tb.build_plan(bundle, max_batch=2, time_batches=False, timing_cache=tmp_path / "c", log=lambda *a: None)
    fake_gpu.trt.__version__ = "10.14.1.48"
    with pytest.raises(te.PlanMismatch, match=r"TensorRT 10\.14\.1\.48.*composer_sm90_trt10\.13\.0\.plan"):
        te.TensorRTEngine(bundle, device="cuda")


def test_fake_runner_cleans_up_when_a_plan_does_not_load(fake_gpu, small_bundle, tmp_path):
    with pytest.raises(te.PlanMismatch, match="another TensorRT release"):
        te.PlanRunner(json.dumps({"fake-plan": "9.0.0"}).encode(), device="cuda")
    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle, bundle)
    result = tb.build_plan(bundle, max_batch=2, time_batches=False, timing_cache=tmp_path / "c", log=print)
    plan = (bundle / result["entry"]["file"]).read_bytes()
    with pytest.raises(ValueError, match="outside the plan's optimisation profile"):
        te.PlanRunner(plan, device="cuda", max_batch=3)
    assert fake_gpu.cuda.pushed == 0 and fake_gpu.cuda.memory == {}
    runner = te.PlanRunner(plan, device="cuda")
    with pytest.raises(ValueError, match="expected 1..2 samples"):
        runner.infer({"image": np.zeros((3, 1, 1, 3), np.uint8)})
    runner.close()
    runner.close()  # closing twice is harmless
    assert fake_gpu.cuda.memory == {}


def test_fake_cli_builds_and_prints_latency(fake_gpu, small_bundle, tmp_path, capsys):
    import argparse

    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle, bundle)
    parser = argparse.ArgumentParser(prog="latcomp")
    tb.register(parser.add_subparsers())
    args = parser.parse_args(
        ["build-engine", str(bundle), "--max-batch", "2", "--timing-cache", str(tmp_path / "c")]
    )
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "plans/composer_sm90_trt10.13.0.plan" in out and "p50 ms" in out
    args = parser.parse_args(["build-engine", str(tmp_path / "nowhere")])
    assert args.run(args) == 2
    assert "no such bundle directory" in capsys.readouterr().err


# -- on a GPU with TensorRT ---------------------------------------------------------------------------


def _gpu_or_skip():
    pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda.driver")
    if te.gpu_compute_capability(0) is None:
        pytest.skip("no CUDA GPU")


@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory):
    _gpu_or_skip()
    from bundle_fixtures import make_small_bundle

    bundle = Path(make_small_bundle(tmp_path_factory.mktemp("trt") / "bundle", arch="stylegan2"))
    result = tb.build_plan(
        bundle,
        max_batch=4,
        opt_batch=2,
        iterations=3,
        timing_cache=tmp_path_factory.mktemp("cache") / "timing.cache",
    )
    return bundle, result


def _inputs(resolution: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)
    masks = np.where(rng.random((n, resolution, resolution, 1)) < 0.5, 255, 0).astype(np.uint8)
    realism = np.linspace(0.0, 1.0, n, dtype=np.float32)
    return images, masks, realism


@pytest.mark.gpu
def test_build_records_a_verified_plan_and_times_each_batch(built_bundle):
    bundle, result = built_bundle
    manifest = json.loads((bundle / "latcomp.json").read_text())
    entry = result["entry"]
    assert entry in manifest["plans"] and (bundle / entry["file"]).is_file()
    assert manifest["files"][entry["file"]]["sha256"] == tb.sha256_file(bundle / entry["file"])
    assert entry["file"] == te.plan_filename(entry["compute_capability"], entry["tensorrt_version"])
    assert sorted(result["latency_ms"]) == [1, 2, 4]
    assert all(row["p50_ms"] > 0 for row in result["latency_ms"].values())
    assert Path(result["timing_cache"]).stat().st_size > 0
    tb.read_manifest(bundle)  # the runtime's verification accepts the rewritten manifest


@pytest.mark.gpu
def test_engine_matches_onnxruntime_within_fp16_tolerance(built_bundle):
    bundle, result = built_bundle
    from latcomp.runtime import open_bundle

    with te.TensorRTEngine(bundle, device="cuda") as trt_engine:
        assert trt_engine.backend == "trt" and trt_engine.max_batch == 4
        images, masks, realism = _inputs(trt_engine.resolution, 6)  # 6 > max_batch: split in two calls
        trt_images, trt_latents = trt_engine.run(images, masks, realism)
    precision = "fp16" if result["entry"]["typing"] == "strong" else "fp32"
    with open_bundle(bundle, backend="ort", device="cpu", precision=precision) as reference:
        ref_images, ref_latents = reference.run(images, masks, realism)
    assert trt_images.shape == ref_images.shape and trt_images.dtype == np.uint8
    assert trt_latents.shape == ref_latents.shape and trt_latents.dtype == np.float32
    scale = 1.0 + float(np.abs(ref_latents).max())
    assert float(np.abs(trt_latents - ref_latents).max()) <= 0.05 * scale
    diff = np.abs(trt_images.astype(np.int16) - ref_images.astype(np.int16))
    assert float(diff.mean()) <= 3.0 and float(np.percentile(diff, 99)) <= 24


@pytest.mark.gpu
def test_cuda_graphs_replay_matches_plain_execution(built_bundle):
    bundle, _ = built_bundle
    if te.cuda_runtime() is None:
        pytest.skip("cuda-bindings not installed: CUDA graphs unavailable")
    with te.TensorRTEngine(bundle, device="cuda") as plain:
        inputs = _inputs(plain.resolution, 3, seed=3)
        expected = plain.run(*inputs)
    with te.TensorRTEngine(bundle, device="cuda", cuda_graphs=True) as graphed:
        for _ in range(3):  # the first call runs plainly and captures the bucket-4 graph; later ones replay
            got = graphed.run(*inputs)
        assert graphed._runner.uncapturable == set()
    assert np.abs(got[0].astype(int) - expected[0].astype(int)).max() <= 1
    assert np.allclose(got[1], expected[1], atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
def test_engine_refuses_a_plan_for_another_gpu(built_bundle, tmp_path):
    bundle, _ = built_bundle
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "latcomp.json").read_text())
    for entry in manifest["plans"]:
        entry["compute_capability"] = "1.0"
    (other / "latcomp.json").write_text(json.dumps(manifest))
    with pytest.raises(te.PlanMismatch, match="latcomp build-engine"):
        te.TensorRTEngine(other, device="cuda")
