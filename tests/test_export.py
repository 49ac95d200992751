"""Export: fused graphs vs torch, FP16, shared named weights, manifest, parity refusal, `latcomp export`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bundle_fixtures import make_small_bundle, small_pair

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from latcomp.export import parity  # noqa: E402
from latcomp.nets import fused  # noqa: E402
from latcomp.export.bundle import export_bundle  # noqa: E402
from latcomp.nets.tensors import images_to_uint8  # noqa: E402

ARCHS = ("stylegan2", "progan")


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {arch: make_small_bundle(root, arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def modules():
    """{arch: Composer} rebuilt from the same seeds as the bundles."""
    return {arch: fused.Composer(*small_pair(arch)).eval() for arch in ARCHS}


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def inputs(batch: int, resolution: int = 32, seed: int = 0):
    rng = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, resolution, resolution, 3), dtype=torch.uint8, generator=rng)
    if batch == 1:
        masks = torch.zeros(1, resolution, resolution, 1, dtype=torch.uint8)
    else:
        masks = parity.paper_masks(batch, resolution, rng)
    realism = torch.rand(batch, generator=rng)
    return images, masks, realism


def feed(images, masks, realism):
    return {"image": images.numpy(), "mask": masks.numpy(), "realism": realism.numpy()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch", [1, 7])
def test_composer_graph_matches_torch(bundles, modules, arch, batch):
    images, masks, realism = inputs(batch)
    result, latent = session(bundles[arch] / "composer.onnx").run(None, feed(images, masks, realism))
    with torch.no_grad():
        expected, expected_latent = modules[arch](images, masks, realism)
    assert result.dtype == np.uint8 and result.shape == (batch, 32, 32, 3)
    assert np.abs(result.astype(int) - expected.numpy()).max() <= 1
    assert np.abs(latent - expected_latent.numpy()).max() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_fp16_composer_psnr_vs_fp32(bundles, arch):
    data = feed(*inputs(8, seed=3))
    fp32, fp32_latent = session(bundles[arch] / "composer.onnx").run(None, data)
    fp16, fp16_latent = session(bundles[arch] / "composer_fp16.onnx").run(None, data)
    assert fp16.dtype == np.uint8 and fp16_latent.dtype == np.float32  # I/O types kept
    assert parity.image_metrics(fp16, fp32)["psnr_db"] >= 40.0
    assert np.abs(fp16_latent - fp32_latent).max() < 0.05 * np.abs(fp32_latent).max()


@pytest.mark.parametrize("arch", ARCHS)
def test_realism_one_gives_the_average_latent_image(bundles, modules, arch):
    images, masks, _ = inputs(5, seed=7)
    result, latent = session(bundles[arch] / "composer.onnx").run(None, feed(images, masks, torch.ones(5)))
    average = modules[arch].latent_avg.numpy()
    np.testing.assert_allclose(latent, np.broadcast_to(average, latent.shape), atol=1e-6)
    (expected,) = session(bundles[arch] / "generator.onnx").run(None, {"latent": average[None]})
    assert (np.abs(result.astype(int) - expected.astype(int)) <= 1).all()
    assert (result == result[:1]).all(), "every input must give the same image"


def test_generator_and_sampler_graphs(bundles):
    generator, _ = small_pair("stylegan2")
    z = np.random.RandomState(0).standard_normal((3, 64)).astype(np.float32)
    truncation = np.array([1.0, 0.7, 0.0], np.float32)
    (latent,) = session(bundles["stylegan2"] / "sampler.onnx").run(None, {"z": z, "truncation": truncation})
    with torch.no_grad():
        for row in range(3):
            expected = generator.sample_latent(torch.from_numpy(z[row:row + 1]),
                                               truncation=float(truncation[row]))
            np.testing.assert_allclose(latent[row], expected[0].numpy(), atol=1e-5)
        expected_images = images_to_uint8(generator(torch.from_numpy(latent))).numpy()
    (images,) = session(bundles["stylegan2"] / "generator.onnx").run(None, {"latent": latent})
    assert np.abs(images.astype(int) - expected_images).max() <= 1


def test_manifest(bundles):
    path = bundles["stylegan2"]
    manifest = json.loads((path / "latcomp.json").read_text())
    assert manifest["format"] == "latcomp-bundle" and manifest["format_version"] == 1
    assert (manifest["name"], manifest["resolution"], manifest["z_dim"]) == ("small-stylegan2", 32, 64)
    assert manifest["latent_shape"] == [8, 64] and manifest["mask_convention"] == "binary"
    assert manifest["generator"]["arch"] == "stylegan2"
    assert manifest["regressor"]["arch"] == "stylegan-encoder"
    on_disk = sorted(p.name for p in path.iterdir() if p.name != "latcomp.json")
    assert sorted(manifest["files"]) == on_disk
    assert set(on_disk) >= {"composer.onnx", "composer_fp16.onnx", "generator.onnx", "sampler.onnx",
                            "weights.bin", "weights_fp16.bin"}
    composer = manifest["graphs"]["composer"]
    assert composer["inputs"] == {"image": {"dtype": "uint8", "shape": ["N", 32, 32, 3]},
                                  "mask": {"dtype": "uint8", "shape": ["N", 32, 32, 1]},
                                  "realism": {"dtype": "float32", "shape": ["N"]}}
    assert composer["outputs"]["latent"] == {"dtype": "float32", "shape": ["N", 8, 64]}
    assert manifest["graphs"]["composer_fp16"]["precision"] == "fp16"
    assert manifest["graphs"]["sampler"]["inputs"]["truncation"] == {"dtype": "float32", "shape": ["N"]}
    assert all(entry["passed"] for entry in manifest["parity"].values())
    assert set(manifest["parity"]) == set(manifest["graphs"])
    provenance = manifest["provenance"]
    assert {"command", "git_commit", "created", "training", "tools"} <= set(provenance)
    assert provenance["training"] == {"note": "random weights, for tests"}
    assert manifest["plans"] == [] and manifest["max_batch"] == 16


@pytest.mark.parametrize("arch", ARCHS)
def test_graphs_are_opset17_ir8_with_named_shared_weights(bundles, modules, arch):
    path = bundles[arch]
    graphs = {name: onnx.load(str(path / f"{name}.onnx"), load_external_data=False)
              for name in ("composer", "generator", "sampler")}
    for model in graphs.values():
        assert model.ir_version <= 9 and model.opset_import[0].version == 17
    locations = {}
    for model in graphs.values():
        for tensor in model.graph.initializer:
            info = {entry.key: entry.value for entry in tensor.external_data}
            if tensor.name.startswith(("generator.", "regressor.", "latent_avg")):
                assert info.get("location") == "weights.bin", tensor.name
                assert locations.setdefault(tensor.name, info["offset"]) == info["offset"]  # the same bytes
    state = modules[arch].state_dict()
    wanted = {key for key in state if not key.endswith("num_batches_tracked")}
    assert wanted <= set(locations), sorted(wanted - set(locations))[:5]
    # every parameter stored once: the file holds at most the unique parameters plus small padding
    parameter_bytes = sum(tensor.numel() * 4 for key, tensor in state.items() if key in wanted)
    assert (path / "weights.bin").stat().st_size <= parameter_bytes * 1.1 + 4096


def test_parity_failure_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "FP32_MAX_LATENT_DIFF", -1.0)  # nothing can pass
    generator, regressor = small_pair("progan")
    with pytest.raises(parity.ParityError, match="composer: latent max abs diff"):
        export_bundle(generator, regressor, tmp_path / "bundle", fp16=False)
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its staging directory


def test_existing_directory_needs_overwrite(tmp_path):
    generator, regressor = small_pair("progan")
    (tmp_path / "bundle").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        export_bundle(generator, regressor, tmp_path / "bundle")
    path = export_bundle(generator, regressor, tmp_path / "bundle", fp16=False, overwrite=True, max_batch=4)
    manifest = json.loads((path / "latcomp.json").read_text())
    assert "composer_fp16" not in manifest["graphs"] and manifest["max_batch"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_cli_export_end_to_end(tmp_path, capsys):
    from latcomp.cli import main
    from latcomp.nets import save
    from latcomp.runtime import open_bundle

    generator, regressor = small_pair("progan")
    save(tmp_path / "g.safetensors", generator)
    save(tmp_path / "e.safetensors", regressor)
    (tmp_path / "metrics.json").write_text(json.dumps({"val_loss": 0.25}))
    pair = ["--generator", str(tmp_path / "g.safetensors"), "--regressor", str(tmp_path / "e.safetensors")]
    code = main(["export", *pair, "--out", str(tmp_path / "out"), "--no-fp16", "--max-batch", "4",
                 "--metrics", str(tmp_path / "metrics.json"), "--triton", str(tmp_path / "triton"),
                 "--triton-kind", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "parity composer:" in capsys.readouterr().out
    config = (tmp_path / "triton" / "composer" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in config and "KIND_CPU" in config
    assert (tmp_path / "triton" / "composer" / "1" / "model.onnx").is_file()
    with open_bundle(tmp_path / "out") as engine:
        assert (engine.name, engine.max_batch, engine.resolution) == ("out", 4, 32)
        assert engine.manifest["provenance"]["training"] == {"val_loss": 0.25}
        assert isinstance(engine.manifest["provenance"]["command"], str)
        images = np.zeros((2, 32, 32, 3), np.uint8)
        result, latent = engine.run(images, np.full((2, 32, 32), 255, np.uint8))
        known = torch.full((2, 32, 32, 1), 255, dtype=torch.uint8)
        with torch.no_grad():
            expected, _ = fused.Composer(generator, regressor)(torch.from_numpy(images), known, torch.zeros(2))
        assert np.abs(result.astype(int) - expected.numpy()).max() <= 1
    assert main(["export", *pair, "--out", str(tmp_path / "out")]) == 2
    assert "exists" in capsys.readouterr().err
