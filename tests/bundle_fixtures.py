"""Small exported bundles for tests (export, runtime, service).

    from bundle_fixtures import make_small_bundle

    make_small_bundle(directory, arch="stylegan2") -> Path   # writes directory/f"small-{arch}" and returns it

The networks are seeded, so `small_pair(arch)` rebuilds exactly the modules a bundle was exported from.
A bundle takes a few seconds to export on a CPU: make it once per session (tmp_path_factory).
"""

from __future__ import annotations

from pathlib import Path

import torch

ARCHS = ("stylegan2", "progan")


def _randomise_batchnorm(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics, so that a mishandled BatchNorm shows in the outputs."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            size = layer.num_features
            layer.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
            layer.running_var.copy_(torch.exp(0.2 * torch.randn(size, generator=generator)))
            layer.weight.data.copy_(1 + 0.1 * torch.randn(size, generator=generator))
            layer.bias.data.copy_(0.1 * torch.randn(size, generator=generator))


@torch.no_grad()
def small_pair(arch: str = "stylegan2") -> tuple[torch.nn.Module, torch.nn.Module]:
    """A seeded (generator, regressor) pair at 32 px: StyleGAN2 + StyleGANEncoder, ProGAN + ProGANEncoder."""
    from latcomp.nets import ProGANEncoder, ProGANGenerator, StyleGAN2Generator, StyleGANEncoder

    torch.manual_seed(0)
    if arch == "stylegan2":
        generator = StyleGAN2Generator(size=32, style_dim=64, n_mlp=2,
                                       channels={4: 32, 8: 32, 16: 16, 32: 16})
        generator.compute_w_avg(n=512)
        regressor = StyleGANEncoder(blocks=[1, 1, 1, 1], widths=[8, 16, 32, 32], n_latent=generator.n_latent,
                                    style_dim=64, input_size=32)
    elif arch == "progan":
        generator = ProGANGenerator(sizes=[64, 32, 32, 16, 16])
        regressor = ProGANEncoder(blocks=[1, 1, 1, 1], widths=[8, 16, 32, 32], z_dim=64, resolution=32)
    else:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    _randomise_batchnorm(regressor, torch.Generator().manual_seed(1))
    return generator.eval(), regressor.eval()


def make_small_bundle(directory: str | Path, arch: str = "stylegan2") -> Path:
    """Exports small_pair(arch) (fp32 + fp16 graphs, max_batch 16) to directory/f"small-{arch}"."""
    from latcomp.export import export_bundle

    generator, regressor = small_pair(arch)
    return export_bundle(generator, regressor, Path(directory) / f"small-{arch}", name=f"small-{arch}",
                         version="test", provenance={"training": {"note": "random weights, for tests"}})
