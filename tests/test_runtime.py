"""Runtime: bundle verification, backend choice, ort vs torch, batching, sampling, input validation."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from bundle_fixtures import make_small_bundle

pytest.importorskip("onnxruntime")

from latcomp.runtime import BundleError, Engine, open_bundle, read_bundle  # noqa: E402
from latcomp.runtime import bundle as bundle_module  # noqa: E402


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    return {arch: make_small_bundle(root, arch) for arch in ("stylegan2", "progan")}


@pytest.fixture(scope="session")
def engine(bundles):
    with open_bundle(bundles["stylegan2"]) as engine:
        yield engine


@pytest.fixture
def copy(bundles, tmp_path):
    """A private copy of the StyleGAN2 bundle, to tamper with."""
    return shutil.copytree(bundles["stylegan2"], tmp_path / "bundle")


def inputs(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    masks = np.where(rng.random((batch, 32, 32, 1)) < 0.5, 255, 0).astype(np.uint8)
    return images, masks, rng.random(batch).astype(np.float32)


# ---- bundle verification ----


def test_tampered_file_is_refused_naming_it(copy):
    weights = copy / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.bin: sha256 does not match"):
        open_bundle(copy)


def test_truncated_file_is_refused_naming_it(copy):
    graph = copy / "sampler.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"sampler\.onnx: \d+ bytes, but latcomp\.json says"):
        read_bundle(copy)


def test_missing_file_is_refused_naming_it(copy):
    (copy / "generator.onnx").unlink()
    with pytest.raises(BundleError, match=r"generator\.onnx: missing"):
        open_bundle(copy)


@pytest.mark.parametrize("version", [2, None, "1"])
def test_wrong_or_missing_format_version_is_refused(copy, version):
    path = copy / "latcomp.json"
    manifest = json.loads(path.read_text())
    if version is None:
        del manifest["format_version"]
    else:
        manifest["format_version"] = version
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"latcomp\.json: (no )?format_version"):
        open_bundle(copy)


def test_not_a_bundle(tmp_path, monkeypatch):
    with pytest.raises(BundleError, match="latcomp.json: missing"):
        read_bundle(tmp_path)
    (tmp_path / "latcomp.json").write_text(json.dumps({"format": "something-else", "format_version": 1}))
    with pytest.raises(BundleError, match="expected 'latcomp-bundle'"):
        read_bundle(tmp_path)
    monkeypatch.setattr("latcomp.runtime.select.DEFAULT_BUNDLE", tmp_path / "absent")
    with pytest.raises(BundleError, match="no default bundle"):
        open_bundle()


def test_file_outside_the_bundle_is_refused(copy):
    path = copy / "latcomp.json"
    manifest = json.loads(path.read_text())
    manifest["files"]["../elsewhere"] = {"sha256": "0" * 64, "bytes": 1}
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside the bundle"):
        read_bundle(copy)


# ---- choice of backend ----


def test_runtime_imports_and_runs_without_torch(bundles):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np
        import latcomp.runtime
        engine = latcomp.runtime.open_bundle({str(bundles["progan"])!r})
        images, latents = engine.sample([1, 2])
        result, _ = engine.run(images, np.full((2, 32, 32), 255, np.uint8), realism=0.5)
        assert engine.backend == "ort" and result.shape == (2, 32, 32, 3)
        assert "onnx" not in sys.modules, "the ort backend needs onnxruntime only"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_auto_picks_ort_on_cpu_and_says_why(bundles, caplog):
    with caplog.at_level(logging.INFO, logger="latcomp.runtime"):
        with open_bundle(bundles["stylegan2"]) as engine:
            assert (engine.backend, engine.device, engine.precision) == ("ort", "cpu", "fp32")
            assert engine.providers == ["CPUExecutionProvider"]
    lines = [record.getMessage() for record in caplog.records if record.name == "latcomp.runtime"]
    assert len(lines) == 1
    assert "backend=ort" in lines[0] and "device is cpu" in lines[0] and "TensorRT" in lines[0]


def test_bad_arguments(bundles):
    with pytest.raises(ValueError, match="backend"):
        open_bundle(bundles["progan"], backend="tensorflow")
    with pytest.raises(ValueError, match="device"):
        open_bundle(bundles["progan"], device="tpu")
    with pytest.raises(ValueError, match="precision"):
        open_bundle(bundles["progan"], precision="int4")
    with pytest.raises(ValueError, match="CUDA only"):
        open_bundle(bundles["progan"], backend="torch", precision="fp16")


# ---- running ----


@pytest.mark.parametrize("arch", ["stylegan2", "progan"])
def test_torch_backend_matches_ort(bundles, arch):
    pytest.importorskip("torch")
    images, masks, realism = inputs(5)
    with open_bundle(bundles[arch], backend="ort") as ort_engine, \
            open_bundle(bundles[arch], backend="torch") as torch_engine:
        assert torch_engine.backend == "torch" and torch_engine.providers is None
        ours, our_latents = torch_engine.run(images, masks, realism)
        theirs, their_latents = ort_engine.run(images, masks, realism)
        assert np.abs(ours.astype(int) - theirs).max() <= 1
        assert np.abs(our_latents - their_latents).max() <= 1e-4
        ours, our_latents = torch_engine.sample([3, 4, 5], truncation=0.7)
        theirs, their_latents = ort_engine.sample([3, 4, 5], truncation=0.7)
        assert np.abs(our_latents - their_latents).max() <= 1e-4
        assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_fp16_on_cpu_is_close_to_fp32(bundles, engine):
    images, masks, realism = inputs(4, seed=2)
    with open_bundle(bundles["stylegan2"], precision="fp16") as half:
        assert half.precision == "fp16"
        result, latents = half.run(images, masks, realism)
    reference, reference_latents = engine.run(images, masks, realism)
    mse = np.mean((result.astype(float) - reference) ** 2)
    assert mse == 0 or 10 * np.log10(255**2 / mse) >= 40
    assert latents.dtype == np.float32


def test_batches_larger_than_max_batch_are_split(bundles, engine, monkeypatch):
    images, masks, realism = inputs(7, seed=1)
    whole = engine.run(images, masks, realism)
    with open_bundle(bundles["stylegan2"], max_batch=3) as small:
        sizes = []
        compose = small._compose
        monkeypatch.setattr(small, "_compose",
                            lambda *arrays: sizes.append(len(arrays[0])) or compose(*arrays))
        split = small.run(images, masks, realism)
    assert sizes == [3, 3, 1]
    assert np.array_equal(split[0], whole[0])
    np.testing.assert_allclose(split[1], whole[1], atol=1e-5)


def test_sample_is_deterministic_per_seed(engine):
    images, latents = engine.sample([7, 8, 9], truncation=0.8)
    again_images, again_latents = engine.sample([9, 7])
    assert images.shape == (3, 32, 32, 3) and latents.shape == (3, 8, 64)
    assert np.array_equal(engine.sample([9, 7], truncation=0.8)[0], images[[2, 0]])
    assert not np.allclose(again_latents[0], latents[2])  # another truncation
    assert np.array_equal(engine.generate(latents), images)


def test_sample_follows_the_randomstate_convention(bundles):
    with open_bundle(bundles["progan"]) as engine:  # ProGAN: the latent is z * truncation
        _, latents = engine.sample([11, 12], truncation=[1.0, 0.5])
    for row, (seed, scale) in enumerate([(11, 1.0), (12, 0.5)]):
        z = np.random.RandomState(seed).standard_normal(64).astype(np.float32)
        np.testing.assert_allclose(latents[row], z * scale, rtol=1e-6)


def test_realism_arguments(engine):
    images, masks, _ = inputs(3)
    default = engine.run(images, masks)
    assert np.array_equal(engine.run(images, masks, 0.0)[0], default[0])
    assert np.array_equal(engine.run(images, masks, np.zeros(3, np.float32))[0], default[0])
    average, latents = engine.run(images, masks, realism=1.0)
    assert (average == average[:1]).all() and np.allclose(latents, latents[:1])
    with pytest.raises(ValueError, match=r"realism must lie in \[0, 1\]"):
        engine.run(images, masks, 1.5)
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        engine.run(images, masks, np.zeros(2, np.float32))


def test_input_validation(engine):
    images, masks, _ = inputs(2)
    assert engine.run(images, masks[..., 0])[0].shape == (2, 32, 32, 3)  # [N,R,R] masks too
    with pytest.raises(ValueError, match=r"images must have dtype uint8"):
        engine.run(images.astype(np.float32), masks)
    with pytest.raises(ValueError, match=r"images must have shape \[N,32,32,3\], got \[2, 16, 16, 3\]"):
        engine.run(images[:, :16, :16], masks)
    with pytest.raises(ValueError, match="images must be a numpy array"):
        engine.run(images.tolist(), masks)
    with pytest.raises(ValueError, match=r"masks must have shape \[N,R,R,1\] or \[N,R,R\]"):
        engine.run(images, np.repeat(masks, 3, axis=-1))
    with pytest.raises(ValueError, match="masks has 1 entries but images has 2"):
        engine.run(images, masks[:1])
    with pytest.raises(ValueError, match=r"latents must have shape \[N,8,64\]"):
        engine.generate(np.zeros((1, 64), np.float32))
    with pytest.raises(ValueError, match="latents must have dtype float32"):
        engine.generate(np.zeros((1, 8, 64)))
    for seeds in ([-1], [2**32], [1.5]):
        with pytest.raises(ValueError, match="seeds must be integers"):
            engine.sample(seeds)
    assert engine.sample(np.array([3]))[1].shape == (1, 8, 64)


def test_empty_batches(engine):
    images, latents = engine.run(np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0, 32, 32, 1), np.uint8))
    assert images.shape == (0, 32, 32, 3) and latents.shape == (0, 8, 64)
    assert engine.generate(np.zeros((0, 8, 64), np.float32)).shape == (0, 32, 32, 3)
    assert engine.sample([])[1].shape == (0, 8, 64)


def test_engine_attributes_and_close(bundles):
    engine = open_bundle(bundles["stylegan2"])
    assert isinstance(engine, Engine)
    assert (engine.name, engine.version) == ("small-stylegan2", "test")
    assert (engine.resolution, engine.z_dim) == (32, 64)
    assert engine.latent_shape == (8, 64) and engine.max_batch == 16
    assert engine.manifest["format"] == bundle_module.FORMAT
    with engine:
        pass
    assert engine.closed
    with pytest.raises(RuntimeError, match="closed"):
        engine.sample([1])
    engine.close()  # twice is fine
