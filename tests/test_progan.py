"""ProGAN generator: conformance with the GAN-dissection reference, legacy key names, small configs, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close_f64

from latcomp.nets.progan import ProGANGenerator

CASES = ("img", "h_layer1", "h_layer2")


def build(sd: dict) -> ProGANGenerator:
    sd = ProGANGenerator.normalize_state_dict(sd)
    model = ProGANGenerator(**ProGANGenerator.config_from_state_dict(sd))
    model.load_state_dict(sd, strict=True)
    return model.eval()


def run_cases(model: ProGANGenerator, z: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outputs = {"img": model(z), **{f"h_layer{n}": model.features(z, upto=n) for n in (1, 2)}}
    return {name: tensor.double().numpy() for name, tensor in outputs.items()}


@pytest.fixture(scope="module")
def reference(conformance):
    return conformance("proggan_generator")


@pytest.fixture(scope="module")
def generator(reference):
    return build(reference.state_dict())


def test_state_dict_matches_reference_layout(reference, generator):
    ours = generator.state_dict()
    assert list(ours) == list(reference.weights)  # same keys in the reference's order
    for key, array in reference.weights.items():
        assert tuple(ours[key].shape) == array.shape and str(ours[key].dtype) == f"torch.{array.dtype}", key
    assert generator.config == {"sizes": reference.manifest["config"]["sizes"]}
    assert generator.resolution == reference.manifest["config"]["resolution"]
    assert generator.latent_shape == (generator.z_dim,)


def test_conformance_float32(reference, generator):
    z = torch.from_numpy(reference.inputs["z"])  # [N, 512, 1, 1]
    outputs = run_cases(generator, z)
    for name in CASES:
        assert_close_f64(outputs[name], reference.expected[f"{name}_f64"])
    # A flat [N, 512] latent is the same input.
    flat = run_cases(generator, z.flatten(1))
    assert np.array_equal(flat["img"], outputs["img"])


def test_conformance_float64(reference):
    model = build(reference.state_dict()).double()
    outputs = run_cases(model, torch.from_numpy(reference.inputs["z"]).double())
    for name in CASES:
        assert np.abs(outputs[name] - reference.expected[f"{name}_f64"]).max() <= 1e-9, name


def test_legacy_key_names_load_the_same(reference, generator):
    modern = reference.state_dict()
    legacy = {}
    for key, value in modern.items():
        if key.startswith("layer"):
            layer, rest = key[len("layer"):].split(".", 1)
            legacy[f"features.{int(layer) - 1}.{rest}"] = value
        else:  # output_{R}x{R}.*
            legacy["output." + key.split(".", 1)[1]] = value
    renamed = ProGANGenerator.normalize_state_dict(legacy)
    assert list(renamed) == list(modern)
    assert ProGANGenerator.config_from_state_dict(legacy) == generator.config
    assert all(renamed[key] is modern[key] for key in modern)
    assert ProGANGenerator.normalize_state_dict(modern) is modern  # modern names pass through untouched


def small_generator(sizes=(64, 64, 32, 16)) -> ProGANGenerator:
    torch.manual_seed(0)
    model = ProGANGenerator(sizes=list(sizes)).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # the constructor leaves biases at zero; make them count
            parameter.normal_()
    return model


def test_small_config_rebuilds_from_its_own_state_dict():
    model = small_generator()
    sd = model.state_dict()
    assert "output_16x16.conv.weight" in sd and model.resolution == 16
    rebuilt = build(dict(sd))
    assert rebuilt.config == model.config == {"sizes": [64, 64, 32, 16]}
    assert [(k, v.shape, v.dtype) for k, v in rebuilt.state_dict().items()] == [
        (k, v.shape, v.dtype) for k, v in sd.items()
    ]
    z = torch.randn(2, 64)
    latent = model.sample_latent(z, truncation=0.5)
    assert torch.equal(latent, 0.5 * z)
    with torch.no_grad():
        image = rebuilt(latent)
    assert image.shape == (2, 3, 16, 16) and image.abs().max() <= 1.0
    assert torch.equal(image, model(latent))


def test_config_errors_are_explicit():
    with pytest.raises(ValueError, match="sizes"):
        ProGANGenerator(sizes=[512])
    with pytest.raises(ValueError, match="upto"):
        small_generator().features(torch.zeros(1, 64), upto=7)


def test_onnx_export_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = small_generator()
    path = tmp_path / "progan.onnx"
    torch.onnx.export(model, (torch.randn(2, 64),), str(path), input_names=["z"], output_names=["image"],
                      opset_version=17, dynamic_axes={"z": {0: "batch"}, "image": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        z = torch.randn(batch, 64)
        with torch.no_grad():
            expected = model(z).numpy()
        (image,) = session.run(None, {"z": z.numpy()})
        assert image.shape == (batch, 3, 16, 16)
        assert np.abs(image - expected).max() <= 1e-4
