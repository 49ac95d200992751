"""InceptionV3 pool3 features from user-supplied weights: the two published layouts (random weights in their
exact key layout, since the real files are not ours to ship), variant detection, refusals, the FID network's
pooling quirks, the preprocessing and one `latcomp eval --inception-weights` run (tiny counts: 299 px
InceptionV3 costs ~6 GFLOP per image)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latcomp.cli import main
from latcomp.eval.inception import (
    FILES,
    InceptionV3,
    inception_from_state_dict,
    load_inception,
    pool3_features,
    read_state_dict,
    variant_of,
)
from latcomp.eval.realism import Gaussian, fit, frechet_distance, inception_features
from latcomp.eval.tasks import face_reference

# torchvision's auxiliary head, InceptionAux(768, 1000): in its weight file, never used for features
AUX_SHAPES = {"AuxLogits.conv0.conv.weight": (128, 768, 1, 1),
              "AuxLogits.conv1.conv.weight": (768, 128, 5, 5),
              **{f"AuxLogits.conv{i}.bn.{name}": (width,) for i, width in ((0, 128), (1, 768))
                 for name in ("weight", "bias", "running_mean", "running_var")},
              **{f"AuxLogits.conv{i}.bn.num_batches_tracked": () for i in (0, 1)},
              "AuxLogits.fc.weight": (1000, 768), "AuxLogits.fc.bias": (1000,)}
# torchvision's documented num_params of Inception_V3_Weights.IMAGENET1K_V1 (the model with AuxLogits)
TORCHVISION_PARAMETERS = 27_161_264


def _random_tensor(key: str, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    """He-scaled convolutions and mild BatchNorm statistics, so activations keep their scale through the 94
    layers (default init shrinks them ~6x per layer: the features would be ~0)."""
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0)
    noise = torch.randn(shape, generator=generator)
    if key.endswith("conv.weight"):
        return noise * math.sqrt(2 / math.prod(shape[1:]))
    if key.endswith("running_var"):
        return 1 + 0.1 * noise.abs()
    if key.endswith("bn.weight"):
        return 1 + 0.1 * noise
    return 0.1 * noise


def published_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the layout of the published file of `variant` (torchvision's with AuxLogits)."""
    shapes = {key: tuple(value.shape) for key, value in InceptionV3(variant).state_dict().items()}
    if variant == "torchvision":
        shapes.update(AUX_SHAPES)
    generator = torch.Generator().manual_seed(seed)
    return {key: _random_tensor(key, shape, generator) for key, shape in shapes.items()}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def states() -> dict[str, dict[str, torch.Tensor]]:
    return {variant: published_state_dict(variant, seed) for seed, variant in enumerate(FILES)}


@pytest.fixture(scope="module")
def weight_files(states, tmp_path_factory) -> dict:
    """Both layouts saved under the published file names."""
    folder = tmp_path_factory.mktemp("inception")
    for variant, state in states.items():
        torch.save(state, folder / FILES[variant])
    return {variant: folder / FILES[variant] for variant in FILES}


def test_parameter_counts_and_keys_match_the_published_models():
    trunks = {variant: InceptionV3(variant) for variant in FILES}
    counts = {variant: sum(p.numel() for p in network.parameters()) for variant, network in trunks.items()}
    aux = sum(math.prod(shape) for key, shape in AUX_SHAPES.items() if "running" not in key
              and "num_batches" not in key)
    assert aux == 3_326_696
    assert counts["torchvision"] == 23_834_568 and counts["torchvision"] + aux == TORCHVISION_PARAMETERS
    assert counts["pytorch-fid"] == 23_850_960 == 23_834_568 - 2048 * 1000 - 1000 + 2048 * 1008 + 1008
    for variant, network in trunks.items():
        state = network.state_dict()
        # 94 BasicConv2d (conv + BN with its 5 tensors) and the classifier, nothing else
        assert len(state) == 94 * 6 + 2 and sum(key.endswith(".conv.weight") for key in state) == 94
        assert all(key.startswith(("Conv2d_", "Mixed_", "fc.")) for key in state)
        assert state["fc.weight"].shape == (1008 if variant == "pytorch-fid" else 1000, 2048)
    shapes = {key: tuple(value.shape) for key, value in trunks["pytorch-fid"].state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_4a_3x3.conv.weight"] == (192, 80, 3, 3)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_5d.branch5x5_2.conv.weight"] == (64, 48, 5, 5)
    assert shapes["Mixed_6a.branch3x3.conv.weight"] == (384, 288, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == (192, 192, 3, 3)
    assert shapes["Mixed_7b.branch3x3_2b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch3x3dbl_1.conv.weight"] == (448, 2048, 1, 1)
    assert trunks["pytorch-fid"].Mixed_7c.branch1x1.bn.eps == 0.001


# the pool branch's pooling of every block that has one: TensorFlow's FID graph averages over the pixels
# inside the image and max-pools in Mixed_7c; torchvision averages over all 9 taps, padding included
TENSORFLOW = {"Mixed_5b": "valid", "Mixed_5c": "valid", "Mixed_5d": "valid", "Mixed_6b": "valid",
              "Mixed_6c": "valid", "Mixed_6d": "valid", "Mixed_6e": "valid", "Mixed_7b": "valid",
              "Mixed_7c": "max"}


@pytest.mark.parametrize("variant", list(FILES))
def test_pool_branches_pool_as_the_weights_were_trained(variant):
    network = InceptionV3(variant).eval()
    expected = {"valid": lambda x: F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False),
                "max": lambda x: F.max_pool2d(x, 3, stride=1, padding=1),
                "padded": lambda x: F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)}
    generator = torch.Generator().manual_seed(1)
    for name, kind in TENSORFLOW.items():
        block = getattr(network, name)
        block.branch_pool = torch.nn.Identity()  # the block's last channels are now the pooled input itself
        x = torch.randn(1, block.branch1x1.conv.in_channels, 4, 4, generator=generator)
        with torch.inference_mode():
            pooled = block(x)[:, -x.shape[1]:]
        kind = kind if variant == "pytorch-fid" else "padded"
        assert torch.allclose(pooled, expected[kind](x), atol=1e-6), (variant, name)
        others = [other for other in expected if other != kind]
        assert not any(torch.allclose(pooled, expected[other](x), atol=1e-3) for other in others), name


def test_input_is_resized_to_299_bilinear_and_scaled_to_minus_one_one():
    network = InceptionV3("torchvision").eval()
    seen = []

    class Seen(Exception):
        pass

    def record(module, inputs):
        seen.append(inputs[0].clone())
        raise Seen  # the input is all this test needs: skip the 6 GFLOP

    network.Conv2d_1a_3x3.register_forward_pre_hook(record)
    images = face_reference(1, 32)
    with pytest.raises(Seen):
        pool3_features(network, images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255  # [1, 3, 32, 32] in [0, 1]
    resized = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert seen[0].shape == (1, 3, 299, 299)
    assert torch.allclose(seen[0].double(), 2 * resized - 1, atol=1e-5)
    # torchvision's weights take ImageNet-normalised input and transform_input=True maps it to this scale
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)[:, None, None]
    normalised = (resized - mean) / std
    assert torch.allclose(normalised * (std / 0.5) + (mean - 0.5) / 0.5, 2 * resized - 1, atol=1e-12)


@pytest.mark.parametrize("variant", list(FILES))
def test_published_layouts_load_strictly_and_give_deterministic_pool3_features(variant, states, weight_files):
    network = load_inception(weight_files[variant])
    assert network.variant == variant and not network.training
    assert torch.equal(network.state_dict()["Mixed_7c.branch_pool.conv.weight"],
                       states[variant]["Mixed_7c.branch_pool.conv.weight"])
    images = face_reference(2, 32, seed=variant == "torchvision")
    features = pool3_features(network, images, batch=2)
    assert features.shape == (2, 2048) and features.dtype == np.float64 and np.isfinite(features).all()
    assert features.std() > 0 and not np.allclose(features[0], features[1])  # not collapsed
    again = pool3_features(network, images[1:], batch=1)  # alone in its batch: the same numbers
    assert np.allclose(features[1:], again, rtol=1e-4, atol=1e-5)


def test_old_and_wrapped_files_are_read(states, tmp_path):
    old = {key: value for key, value in states["torchvision"].items()
           if not key.endswith("num_batches_tracked") and not key.startswith("AuxLogits.")}
    assert inception_from_state_dict(old).variant == "torchvision"  # no num_batches_tracked, no AuxLogits
    small = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    torch.save({"state_dict": small}, tmp_path / "wrapped.pth")
    assert variant_of(read_state_dict(tmp_path / "wrapped.pth")) == "pytorch-fid"
    from safetensors.torch import save_file

    save_file(small, tmp_path / "weights.safetensors")
    assert set(read_state_dict(tmp_path / "weights.safetensors")) == set(small)


def test_wrong_files_are_refused_naming_the_expected_ones(states, tmp_path):
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}
    with pytest.raises(ValueError, match=f"not InceptionV3 weights.*{FILES['pytorch-fid']}.*"
                                         f"{FILES['torchvision']}"):
        variant_of(resnet)
    with pytest.raises(ValueError, match="999 classes"):
        variant_of({"fc.weight": torch.zeros(999, 2048)})
    without = {key: value for key, value in states["pytorch-fid"].items() if not key.startswith("Mixed_6a.")}
    # 4 convs x 5 tensors: a missing num_batches_tracked is filled in, as for old files
    with pytest.raises(ValueError, match="not the pytorch-fid InceptionV3 layout \\(missing 20: Mixed_6a"):
        inception_from_state_dict(without)
    wrong = {**states["pytorch-fid"], "Mixed_5b.branch_pool.conv.weight": torch.zeros(64, 192, 1, 1)}
    with pytest.raises(ValueError, match=r"wrong shape 1: Mixed_5b.branch_pool.conv.weight \(64, 192, 1, 1"):
        inception_from_state_dict(wrong)
    extra = {**states["pytorch-fid"], "Mixed_8a.conv.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="unexpected 1: Mixed_8a"):
        inception_from_state_dict(extra)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch file"):
        read_state_dict(tmp_path / "garbage.pth")
    torch.save({"fc.weight": 3}, tmp_path / "numbers.pth")
    with pytest.raises(ValueError, match="not a state dict of tensors"):
        read_state_dict(tmp_path / "numbers.pth")
    with pytest.raises(FileNotFoundError, match=FILES["pytorch-fid"]):
        inception_features(tmp_path / "absent.pth")


def test_eval_with_inception_weights_reports_fid_style_realism(small_bundle, weight_files, tmp_path, capsys):
    report_path = tmp_path / "eval.json"
    assert main(["eval", str(small_bundle), "--samples", "2", "--real", "2", "--methods", "regressor,collage",
                 "--inception-weights", str(weight_files["pytorch-fid"]), "--json", str(report_path),
                 "--quiet"]) == 0
    report = json.loads(report_path.read_text())
    assert report["features"] == {"extractor": "inception", "dim": 2048, "weights": FILES["pytorch-fid"],
                                  "variant": "pytorch-fid", "caveat": report["features"]["caveat"]}
    assert "FID-style" in report["features"]["caveat"] and "50,000" in report["features"]["caveat"]
    for entry in [*report["methods"].values(), *report["inpainting"]["methods"].values()]:
        assert math.isfinite(entry["fd"]) and entry["fd"] >= 0
    assert report["real"]["fd_floor"] >= 0
    summary = capsys.readouterr().out
    assert f"InceptionV3 pool3 (pytorch-fid weights, {FILES['pytorch-fid']})" in summary
    assert "FID-style" in summary
    assert main(["eval", str(small_bundle), "--features", "inception"]) == 2
    assert "--features inception needs --inception-weights" in capsys.readouterr().err


def test_frechet_distance_from_few_samples_in_many_dimensions_matches_the_covariance_route():
    rng = np.random.default_rng(0)
    a, b = fit(rng.normal(size=(5, 100))), fit(rng.normal(0.5, 2, size=(7, 100)))
    assert a.count * b.count <= 100**2  # the [n_a, n_b] singular value route
    by_covariance = frechet_distance(Gaussian(a.mean, a.cov, a.count), Gaussian(b.mean, b.cov, b.count))
    assert np.isclose(frechet_distance(a, b), by_covariance, rtol=1e-6)
    assert frechet_distance(a, a) < 1e-9 * np.trace(a.cov)
