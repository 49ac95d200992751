"""nets.save stores a StyleGAN2 generator with a real mean latent, never the zeros of one never set."""

from __future__ import annotations

import pytest
import torch

from latcomp import nets
from latcomp.nets import CheckpointError, StyleGAN2Generator

CONFIG = dict(size=16, style_dim=32, n_mlp=2, channels={4: 32, 8: 16, 16: 16})


@pytest.fixture
def generator():
    """A generator rebuilt from a state_dict: its w_avg buffer holds zeros until something sets it."""
    torch.manual_seed(0)
    state_dict = StyleGAN2Generator(**CONFIG).state_dict()
    generator = nets.from_state_dict("stylegan2", state_dict)
    assert not generator.has_w_avg and not torch.any(generator.w_avg)
    return generator


def test_save_without_latent_avg_stores_the_generators_mean(generator, tmp_path):
    path = nets.save(tmp_path / "g.safetensors", generator)
    expected = generator.compute_w_avg().clone()
    loaded = nets.load(path)
    assert loaded.has_w_avg
    torch.testing.assert_close(loaded.w_avg, expected)


def test_saving_the_unset_w_avg_is_refused(generator, tmp_path):
    with pytest.raises(CheckpointError, match="all zeros"):
        nets.save(tmp_path / "g.safetensors", generator, latent_avg=generator.w_avg)
    assert not (tmp_path / "g.safetensors").exists()
    with pytest.raises(CheckpointError, match="32"):
        nets.save(tmp_path / "g.safetensors", generator, latent_avg=torch.ones(7))


def test_an_explicit_mean_latent_is_stored_as_given(generator, tmp_path):
    mean = torch.linspace(-1, 1, 32)
    loaded = nets.load(nets.save(tmp_path / "g.safetensors", generator, latent_avg=mean))
    torch.testing.assert_close(loaded.w_avg, mean)
    generator.set_w_avg(mean * 2)  # a mean set on the generator is what a bare save stores
    torch.testing.assert_close(nets.load(nets.save(tmp_path / "h.safetensors", generator)).w_avg, mean * 2)
