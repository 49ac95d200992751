"""The torch modules behind the bundle's graphs: wire format (uint8 NHWC, masks 255 = known) in and out.

Model definitions, so they live with the nets: export traces them, the torch backend of latcomp.runtime
rebuilds them from a bundle's weights, and neither imports the other for them.

Every conversion lives inside these modules, so the exported graphs need no pre- or post-processing:
  - `Composer`: uint8 image + uint8 mask + realism -> uint8 result + latent (regressor, blend, generator)
  - `Decoder`: latent -> uint8 image (the generator alone)
  - `Sampler`: Gaussian z + truncation -> latent (StyleGAN2: mapping + truncation + broadcast; ProGAN: z*t)
Their state_dict keys (`generator.<key>`, `regressor.<key>`, `latent_avg`) are the initializer names of the
exported fp32 graphs, which is how the torch backend rebuilds them from a bundle.
The wire-format conversions are `latcomp.nets.tensors`' (uint8 casts first and last, float arithmetic between,
as TensorRT accepts uint8 only at casts), the same functions training and evaluation use.
"""

from __future__ import annotations

import torch
from torch import nn

from .tensors import images_from_uint8, images_to_uint8, masks_from_uint8


def average_latent(generator: nn.Module) -> torch.Tensor:
    """The latent truncation 0 leads to: StyleGAN2's mean w broadcast to w+, ProGAN's origin. [*L]"""
    with torch.no_grad():
        z = torch.zeros(1, generator.z_dim, device=next(generator.parameters()).device)
        return generator.sample_latent(z, truncation=0.0)[0].detach().clone()


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 1, ...] broadcastable against `like` [N, *latent_shape]."""
    return values.reshape(-1, *[1] * (like.dim() - 1)).to(like.dtype)


class Composer(nn.Module):
    """uint8 image [N,R,R,3], uint8 mask [N,R,R,1], realism [N] -> uint8 result [N,R,R,3], latent [N,*L].

    realism blends the regressor's latent linearly toward the generator's average latent, per sample
    (0: as predicted, 1: the average); the returned latent is the blended one, the one that made `result`.
    """

    def __init__(self, generator: nn.Module, regressor: nn.Module, latent_avg: torch.Tensor | None = None):
        super().__init__()
        if tuple(generator.latent_shape) != tuple(regressor.latent_shape):
            raise ValueError(f"the regressor predicts latents {tuple(regressor.latent_shape)} but the "
                             f"generator takes {tuple(generator.latent_shape)}")
        self.generator = generator
        self.regressor = regressor
        self.register_buffer("latent_avg", average_latent(generator) if latent_avg is None else latent_avg)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, realism: torch.Tensor):
        known = masks_from_uint8(mask)  # [N, 1, R, R]
        predicted = self.regressor(self.regressor.make_input(images_from_uint8(image), known))  # [N, *L]
        weight = _per_sample(realism.clamp(0.0, 1.0), predicted)
        latent = predicted + weight * (self.latent_avg - predicted)
        return images_to_uint8(self.generator(latent)), latent


class Decoder(nn.Module):
    """latent [N, *latent_shape] -> uint8 image [N, R, R, 3]."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return images_to_uint8(self.generator(latent))


class Sampler(nn.Module):
    """z [N, z_dim], truncation [N] -> latent [N, *latent_shape], truncated toward the average latent."""

    def __init__(self, generator: nn.Module, latent_avg: torch.Tensor | None = None):
        super().__init__()
        self.generator = generator
        self.register_buffer("latent_avg", average_latent(generator) if latent_avg is None else latent_avg)

    def forward(self, z: torch.Tensor, truncation: torch.Tensor) -> torch.Tensor:
        latent = self.generator.sample_latent(z)  # untruncated; truncation is per sample here
        return self.latent_avg + _per_sample(truncation, latent) * (latent - self.latent_avg)
