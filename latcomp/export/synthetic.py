"""The paper's model sizes with random weights: benchmarks and memory checks without a published checkpoint.

    generator, regressor = synthetic_pair("stylegan2-256")      # seeded, so the same pair every time
    path = synthetic_bundle("stylegan2-256")                    # exported once into the cache, then reused

Layouts as published (and as `latcomp.nets` loads them):
  - stylegan2-256/512/1024: rosinality's StyleGAN2, channel multiplier 2 (config-f widths: 512 up to 32 px,
    then 512 at 64, halving per level: 32 channels at 1024 px), with the paper's ResNet-34 w+ regressor
    (blocks 3-4-6-3, input area-resized to 256, 1x1 projection to n_latent x 512);
  - progan-256: the GAN-dissection ProGAN at 256 px (z 512, widths 512, 512, 512, 256, 128, 64, 32),
    with the paper's ResNet-18 z regressor (full-size stem).
The generator keeps the initialisation its constructor gives (rosinality's: N(0, 1) weights under
equalised learning rate); the regressor follows the conformance vectors' recipe (He-normal convolutions,
the second conv of each block halved, non-trivial BatchNorm statistics, small heads), which keeps its
activations finite through 34 layers. Speed and memory do not depend on the values; quantisation error
does, and random weights make it unrepresentative in both directions: report which weights were used.
torch is imported when a pair is built, so the command line can list the names without it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PROGAN_256_WIDTHS = [512, 512, 512, 512, 256, 128, 64, 32]  # z, then 4, 8, ..., 256 px (netdissect)
CONFIGS = {
    "stylegan2-256": ("stylegan2", 256),
    "stylegan2-512": ("stylegan2", 512),
    "stylegan2-1024": ("stylegan2", 1024),
    "progan-256": ("progan", 256),
}
NAMES = tuple(CONFIGS)
CACHE_DIR = Path(os.environ.get("LATCOMP_CACHE_DIR", Path.home() / ".cache" / "latcomp"))
SEED = 0
CACHE_VERSION = "1"  # bump when the recipe changes, so a cached bundle of the old one is not reused


def check_name(name: str) -> str:
    if name not in CONFIGS:
        raise ValueError(f"unknown synthetic model {name!r}; choose from {', '.join(NAMES)}")
    return name


def _regressor_recipe(regressor, generator) -> None:
    """The conformance vectors' initialisation of the ResNet regressors (see the module docstring)."""
    import torch
    from torch import nn

    def normal(shape, scale: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * scale

    for name, module in regressor.named_modules():
        if isinstance(module, nn.Conv2d):
            fan_in = math.prod(module.weight.shape[1:])
            scale = math.sqrt(2.0 / fan_in) * (0.5 if name.endswith("conv2") else 1.0)
            if name.endswith("conv5"):
                scale = 0.06 / math.sqrt(fan_in)
            module.weight.copy_(normal(module.weight.shape, scale))
            if module.bias is not None:
                module.bias.copy_(normal(module.bias.shape, 0.1))
        elif isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.weight.copy_(1 + normal(size, 0.1))
            module.bias.copy_(normal(size, 0.1))
            module.running_mean.copy_(normal(size, 0.1))
            module.running_var.copy_(torch.exp(normal(size, 0.2)))
        elif isinstance(module, nn.Linear):
            module.weight.copy_(normal(module.weight.shape, 0.3 / math.sqrt(module.in_features)))
            module.bias.copy_(normal(module.bias.shape, 0.1))


def synthetic_pair(name: str, seed: int = SEED):
    """(generator, regressor) of the named configuration with seeded random weights, in eval mode."""
    import torch

    from ..nets import ProGANEncoder, ProGANGenerator, StyleGAN2Generator, StyleGANEncoder

    arch, resolution = CONFIGS[check_name(name)]
    torch.manual_seed(seed)
    if arch == "stylegan2":
        generator = StyleGAN2Generator(size=resolution, channel_multiplier=2)
        with torch.no_grad():
            generator.compute_w_avg()
        regressor = StyleGANEncoder(n_latent=generator.n_latent)  # ResNet-34, input area-resized to 256
    else:
        generator = ProGANGenerator(sizes=PROGAN_256_WIDTHS)
        regressor = ProGANEncoder(resolution=resolution)  # ResNet-18
    with torch.no_grad():
        _regressor_recipe(regressor, torch.Generator().manual_seed(seed + 1))
    return generator.eval(), regressor.eval()


def cache_path(name: str) -> Path:
    return CACHE_DIR / "synthetic" / f"{check_name(name)}-v{CACHE_VERSION}"


def synthetic_bundle(name: str, out_dir: str | Path | None = None, overwrite: bool = False,
                     log=print, int8: bool = False, **export_options) -> Path:
    """The bundle of `synthetic_pair(name)`: exported into `out_dir` (default: the cache, where an existing
    export is reused unless `overwrite`, or `int8` asks for a graph it lacks), its provenance saying the
    weights are random."""
    from ..runtime.bundle import BundleError, read_bundle
    from .bundle import export_bundle

    target = Path(out_dir) if out_dir is not None else cache_path(name)
    if out_dir is None and target.is_dir() and not overwrite:
        try:
            cached = read_bundle(target)
        except BundleError as error:
            log(f"the cached synthetic bundle is unusable ({error}); exporting it again")
        else:
            if not int8 or cached.has_graph("composer_int8"):
                log(f"using the cached synthetic bundle {target}")
                return target
    log(f"exporting the synthetic {name} bundle (random weights) to {target}; the larger sizes take minutes")
    generator, regressor = synthetic_pair(name)
    note = {"synthetic": name, "seed": SEED,
            "note": "random weights in the published layout, for benchmarks (see latcomp.export.synthetic)"}
    return export_bundle(generator, regressor, target, name=f"synthetic-{name}", version="random",
                         overwrite=overwrite or out_dir is None, provenance={"training": note}, log=log,
                         int8=int8, **export_options)
