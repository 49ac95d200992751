"""Loading checkpoint files: wrappings, safetensors, naming errors, refusal of code-running pickles."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from latcomp.nets import (
    CheckpointError,
    ProGANEncoder,
    StyleGAN2Generator,
    describe,
    detect_arch,
    from_state_dict,
    load,
    save,
)

# The file wrappings of the published checkpoints (conformance README, "what torch.load(file) returns").
WRAPPINGS = {
    "stylegan2_generator": lambda sd: {"g_ema": sd, "latent_avg": torch.zeros(512), "args": {"size": 128}},
    "proggan_generator": lambda sd: sd,
    "proggan_encoder": lambda sd: {"state_dict": sd, "optimizer": {}, "epoch": 3, "val_loss": 0.5},
    "stylegan_encoder": lambda sd: {"state_dict": sd, "optimizer": {}, "epoch": 3, "val_loss": 0.5},
}
ARCH_OF = {
    "stylegan2_generator": "stylegan2",
    "proggan_generator": "progan",
    "proggan_encoder": "progan-encoder",
    "stylegan_encoder": "stylegan-encoder",
}


def small_generator() -> StyleGAN2Generator:
    torch.manual_seed(0)
    return StyleGAN2Generator(size=32, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 8})


@pytest.mark.parametrize("name", sorted(WRAPPINGS))
def test_published_wrappings_load_and_detect(conformance, tmp_path, name):
    case = conformance(name)
    path = tmp_path / f"{name}.pt"
    torch.save(WRAPPINGS[name](case.state_dict()), path)
    model = load(path, resolution=128) if name == "proggan_encoder" else load(path)
    assert model.arch == ARCH_OF[name]
    loaded = model.state_dict()
    for key, array in case.weights.items():
        assert torch.equal(loaded[key], torch.from_numpy(array)), key
    info = describe(model)
    assert info["parameters"] > 1_000_000
    if name == "stylegan2_generator":
        assert info["resolution"] == 128 and info["latent_shape"] == [12, 512]
        assert torch.equal(model.w_avg, torch.zeros(512))  # taken from the file's latent_avg


def test_progan_encoder_stem_follows_generator_resolution(conformance, tmp_path):
    path = tmp_path / "enc.pt"
    torch.save({"state_dict": conformance("proggan_encoder").state_dict()}, path)
    assert load(path, resolution=128).config["resolution"] == 128
    assert load(path).config["resolution"] == 256


def test_progan_wrapped_in_state_dict_loads(conformance, tmp_path):
    path = tmp_path / "progan.pth"
    torch.save({"state_dict": conformance("proggan_generator").state_dict()}, path)
    assert load(path).resolution == 128


def test_safetensors_round_trip_keeps_config_and_mean_latent(tmp_path):
    generator = small_generator()
    w_avg = torch.randn(32)
    path = save(tmp_path / "g.safetensors", generator, latent_avg=w_avg)
    loaded = load(path)
    assert loaded.config == generator.config
    assert torch.equal(loaded.w_avg, w_avg)
    latent = torch.randn(2, *generator.latent_shape)
    torch.testing.assert_close(loaded(latent), generator.eval()(latent))


def test_missing_mean_latent_is_estimated_deterministically(tmp_path):
    path = tmp_path / "g.pt"
    torch.save({"g_ema": small_generator().state_dict()}, path)
    assert torch.equal(load(path).w_avg, load(path).w_avg)


@pytest.fixture
def generator_state() -> dict[str, torch.Tensor]:
    return small_generator().state_dict()


def test_missing_key_is_named(generator_state):
    del generator_state["conv1.activate.bias"]
    expected = r"missing key 'conv1\.activate\.bias' \(expected shape \(32,\)\)"
    with pytest.raises(CheckpointError, match=expected):
        from_state_dict("stylegan2", generator_state)


def test_wrong_shape_names_key_and_both_shapes(generator_state):
    generator_state["to_rgb1.bias"] = torch.zeros(1, 4, 1, 1)
    expected = r"'to_rgb1\.bias' has shape \(1, 4, 1, 1\), expected \(1, 3, 1, 1\)"
    with pytest.raises(CheckpointError, match=expected):
        from_state_dict("stylegan2", generator_state)


def test_extra_key_is_named(generator_state):
    generator_state["convs.99.conv.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected key 'convs\.99\.conv\.weight' \(shape \(3,\)\)"):
        from_state_dict("stylegan2", generator_state)


def test_key_needed_for_inference_missing_is_named(generator_state):
    del generator_state["style.1.weight"]
    with pytest.raises(CheckpointError, match="style.1.weight"):
        from_state_dict("stylegan2", generator_state)


def test_unknown_keys_cannot_be_detected():
    with pytest.raises(CheckpointError, match="cannot tell the architecture"):
        detect_arch({"foo.weight": torch.zeros(1)})


def test_unknown_arch_is_refused(generator_state):
    with pytest.raises(CheckpointError, match="unknown architecture 'biggan'"):
        from_state_dict("biggan", generator_state)


class _WritesAFile:
    """A pickle payload that creates a file when unpickled: stands for any code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_running_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _WritesAFile(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load .* would run code"):
        load(path)
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_garbage_file_gives_clear_error(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        load(path)
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    with pytest.raises(CheckpointError, match="cannot read"):
        load(path)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load(tmp_path / "absent.pt")


def test_encoder_mask_convention_in_description():
    encoder = ProGANEncoder(blocks=[1, 1, 1, 1], widths=[8, 16, 32, 64], z_dim=16, resolution=64)
    assert describe(encoder)["mask_convention"] == "centered"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "latcomp", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_cli_info_describes_each_kind_of_file(conformance, tmp_path):
    for name, wrap in WRAPPINGS.items():
        path = tmp_path / f"{name}.pt"
        torch.save(wrap(conformance(name).state_dict()), path)
        extra = ["--resolution", "128"] if name == "proggan_encoder" else []
        result = run_cli("info", str(path), "--json", *extra)
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["arch"] == ARCH_OF[name]
        assert ("mask_convention" in info) == name.endswith("encoder")


def test_cli_info_example_and_errors(tmp_path):
    result = run_cli("info", "--example")
    assert result.returncode == 0, result.stderr
    assert "stylegan2" in result.stdout and "latent_shape" in result.stdout
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, bad)
    result = run_cli("info", str(bad))
    assert result.returncode == 2
    assert "cannot tell the architecture" in result.stderr
