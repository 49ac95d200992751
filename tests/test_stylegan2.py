"""StyleGAN2 generator: conformance with the rosinality reference, configurations, ONNX export, sampling."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import assert_close_f64

from latcomp.nets.stylegan2 import (
    StyleGAN2Generator,
    default_channels,
    fir_depthwise,
    make_kernel,
    upsample2x_depthwise,
)

SMALL = {"size": 32, "style_dim": 64, "n_mlp": 2, "channels": {4: 32, 8: 32, 16: 16, 32: 16}}


def layout(sd: dict) -> list[tuple]:
    return [(key, tuple(value.shape), value.dtype) for key, value in sd.items()]


@pytest.fixture(scope="module")
def reference(conformance):
    """The 128-px conformance generator, loaded the way the checkpoint loader does it."""
    vectors = conformance("stylegan2_generator")
    sd = vectors.state_dict()
    model = StyleGAN2Generator(**StyleGAN2Generator.config_from_state_dict(sd))
    model.load_state_dict(sd, strict=True)
    return vectors, model.eval()


def run_cases(model: StyleGAN2Generator, inputs: dict, dtype: torch.dtype, n_z: int, n_wplus: int):
    """w for every z; images for the first n_z rows of z and the first n_wplus rows of w+."""
    z = torch.from_numpy(inputs["z"]).to(dtype)
    wplus = torch.from_numpy(inputs["wplus"][:n_wplus]).to(dtype)
    with torch.no_grad():
        images = model(torch.cat([model.sample_latent(z[:n_z]), wplus]))  # one batch: z path, then w+ path
        return {
            "w_from_z": model.style(z).double().numpy(),
            "img_from_z": images[:n_z].double().numpy(),
            "img_from_wplus": images[n_z:].double().numpy(),
        }


def test_layout_matches_manifest(reference):
    vectors, model = reference
    entries = vectors.manifest["state_dict"]
    manifest = [(entry["key"], tuple(entry["shape"]), getattr(torch, entry["dtype"])) for entry in entries]
    assert layout(model.state_dict()) == manifest
    derived = vectors.manifest["config"]["derived"]
    assert model.n_latent == derived["n_latent"] and model.latent_shape == (derived["n_latent"], 512)
    assert model.channels == {int(res): width for res, width in derived["channels"].items()}
    assert model.channels == default_channels(128, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_conformance(reference, dtype, record_property):
    vectors, model = reference
    if dtype == torch.float32:
        ours = run_cases(model, vectors.inputs, dtype, n_z=3, n_wplus=3)
    else:
        # float64 convolutions are slow on CPU, so this checks one z row (the z rows share one code path)
        # and the two w+ rows that are not a broadcast w (wplus[2] is w(z[0]) by construction). Float64
        # depthwise convs run group by group; on a busy machine their tiny parallel regions cost far more
        # in thread synchronisation than they gain, so this runs on one thread.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            ours = run_cases(copy.deepcopy(model).double(), vectors.inputs, dtype, n_z=1, n_wplus=2)
        finally:
            torch.set_num_threads(threads)
    for name, value in ours.items():
        target = vectors.expected[f"{name}_f64"][: len(value)]
        if dtype == torch.float32:
            error = assert_close_f64(value, target)
        else:
            error = float(np.abs(value - target).max())
            assert error <= 1e-9, f"{name}: float64 max abs error {error:.3g} > 1e-9"
        record_property(f"{name}_{dtype}_max_abs_error", error)
        print(f"stylegan2 {name} {dtype}: max abs error vs _f64 = {error:.3g}")


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int, pad0: int, pad1: int) -> torch.Tensor:
    """The reference's FIR resampling by its definition: zero insertion, zero padding, true convolution."""
    n, c, h, w = x.shape
    u = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    u = torch.nn.functional.pad(u, (pad0, pad1, pad0, pad1))
    flipped = kernel.flip([0, 1]).expand(c, 1, *kernel.shape)
    return torch.nn.functional.conv2d(u, flipped, groups=c)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 3), (1, 4, 2, 7, 3, 1)])
def test_fir_helpers_match_upfirdn(taps):
    """Asymmetric taps show that the kernel orientation and the pads follow the reference for any even L."""
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    kernel = make_kernel(taps, gain=4.0).double()
    # the reference's pads: blur after the stride-2 transposed 3x3, then the ToRGB skip upsampling
    p = len(taps) - 4
    blur = upfirdn2d(x, kernel, up=1, pad0=(p + 1) // 2 + 1, pad1=p // 2 + 1)
    torch.testing.assert_close(fir_depthwise(x, kernel, pad=(len(taps) - 2) // 2, channels=3), blur)
    p = len(taps) - 2
    upsampled = upfirdn2d(x, kernel, up=2, pad0=(p + 1) // 2 + 1, pad1=p // 2)
    torch.testing.assert_close(upsample2x_depthwise(x, kernel, channels=3), upsampled)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channel_multiplier", [1, 2])
def test_default_configurations(size, channel_multiplier):
    torch.manual_seed(0)
    model = StyleGAN2Generator(size=size, style_dim=32, n_mlp=2, channel_multiplier=channel_multiplier).eval()
    assert model.channels == default_channels(size, channel_multiplier)
    assert model.resolution == size and model.z_dim == 32
    assert model.latent_shape == (model.n_latent, 32) and model.n_latent == 2 * size.bit_length() - 4
    config = StyleGAN2Generator.config_from_state_dict(model.state_dict())
    assert config["size"] == size
    if size >= 64:  # below 64 px both multipliers give the same widths
        assert config["channel_multiplier"] == channel_multiplier
    assert layout(StyleGAN2Generator(**config).state_dict()) == layout(model.state_dict())
    with torch.no_grad():
        image = model(torch.randn(1, 32))
    assert image.shape == (1, 3, size, size) and torch.isfinite(image).all()


def test_custom_channels_and_json_config():
    torch.manual_seed(0)
    model = StyleGAN2Generator(size=64, style_dim=48, n_mlp=3, channels={"4": 64, "8": 48, "16": 32, "32": 32,
                                                                           "64": 24, "128": 8})
    assert model.channels == {4: 64, 8: 48, 16: 32, 32: 32, 64: 24}  # unused resolutions are dropped
    assert model.state_dict()["convs.6.conv.weight"].shape == (1, 24, 32, 3, 3)
    config = json.loads(json.dumps(model.config))
    assert StyleGAN2Generator(**config).config == model.config
    inferred = StyleGAN2Generator.config_from_state_dict(model.state_dict())
    assert {k: inferred[k] for k in ("size", "style_dim", "n_mlp", "channels")} == {
        k: config[k] for k in ("size", "style_dim", "n_mlp", "channels")
    }
    assert layout(StyleGAN2Generator(**inferred).state_dict()) == layout(model.state_dict())
    with pytest.raises(ValueError, match="resolutions"):
        StyleGAN2Generator(size=64, channels={4: 8, 8: 8})


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = StyleGAN2Generator(**SMALL)
    z = torch.randn(2, 64)
    for noise_mode in ("random", "const"):
        model.zero_grad()
        model(model.sample_latent(z), noise_mode=noise_mode).square().mean().backward()
        missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert not missing, f"no gradient ({noise_mode}): {missing}"


def test_w_and_wplus_inputs_agree():
    torch.manual_seed(0)
    model = StyleGAN2Generator(**SMALL).eval()
    z = torch.randn(3, 64)
    with torch.no_grad():
        wplus = model.sample_latent(z)
        assert wplus.shape == (3, model.n_latent, 64)
        assert torch.equal(wplus, model.style(z)[:, None].expand(-1, model.n_latent, -1))
        torch.testing.assert_close(model(model.style(z)), model(wplus), rtol=0, atol=0)
    with pytest.raises(ValueError, match="latent must be"):
        model(torch.randn(3, 5, 64))


def test_truncation_and_noise_modes():
    torch.manual_seed(0)
    model = StyleGAN2Generator(**SMALL).eval()
    z = torch.randn(4, 64)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("noise.weight"):
                param.fill_(0.5)  # initialised to zero, which would hide the noise
        w_avg = model.compute_w_avg(n=512, seed=3).clone()
        assert torch.equal(model.compute_w_avg(n=512, seed=3), w_avg)  # seeded CPU generator
        assert torch.equal(model.sample_latent(z, truncation=0.0), w_avg.expand(4, model.n_latent, -1))
        half = model.sample_latent(z, truncation=0.5)
        torch.testing.assert_close(half, (model.sample_latent(z) + w_avg) / 2)

        model.set_w_avg(torch.ones(64))
        assert torch.equal(model.sample_latent(z, truncation=0.0), torch.ones(4, model.n_latent, 64))
        assert "w_avg" not in model.state_dict()
        model.load_state_dict(model.state_dict())  # new weights make the old mean stale: recomputed on need
        assert torch.equal(model.sample_latent(z, truncation=0.0)[0, 0], model.compute_w_avg())

        wplus = model.sample_latent(z)
        const = model(wplus)
        assert torch.equal(model(wplus, noise_mode="const"), const)
        random_a, random_b = model(wplus, noise_mode="random"), model(wplus, noise_mode="random")
        assert not torch.allclose(random_a, random_b) and not torch.allclose(random_a, const)
        assert not torch.allclose(model(wplus, noise_mode="none"), const)
        with pytest.raises(ValueError, match="noise_mode"):
            model(wplus, noise_mode="fixed")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter announces its retirement
def test_onnx_export_dynamic_batch(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = StyleGAN2Generator(**SMALL).eval()
    path = tmp_path / "stylegan2.onnx"
    example = model.sample_latent(torch.randn(2, 64)).detach()
    torch.onnx.export(
        model, (example,), str(path), input_names=["wplus"], output_names=["image"], opset_version=17,
        dynamic_axes={"wplus": {0: "batch"}, "image": {0: "batch"}}, dynamo=False,
    )
    graph = onnx.load(str(path)).graph
    constants = {init.name for init in graph.initializer}
    aliases = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "Identity"}
    convs = [node for node in graph.node if node.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == 17  # 7 styled convs + 4 ToRGB, 3 blurs, 3 ToRGB upsamples
    for node in convs:  # shared, deduplicated constants are reached through Identity nodes
        weight = node.input[1]
        while weight in aliases:
            weight = aliases[weight]
        assert weight in constants, f"{node.name}: weight {node.input[1]} is computed, not a constant"

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        wplus = model.sample_latent(torch.randn(batch, 64)).detach()
        with torch.no_grad():
            expected = model(wplus).numpy()
        (image,) = session.run(None, {"wplus": wplus.numpy()})
        assert image.shape == (batch, 3, 32, 32)
        np.testing.assert_allclose(image, expected, rtol=0, atol=1e-4)
