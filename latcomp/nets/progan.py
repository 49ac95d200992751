"""ProGAN generator in the GAN-dissection ("netdissect") state_dict layout.

Keys: `layer{n}.conv.weight` [out, in, k, k] (no conv bias), `layer{n}.wscale.b` [out] for n = 1..2L, and
`output_{R}x{R}.conv.weight` [3, C, 1, 1] / `output_{R}x{R}.wscale.b` [3]. Layer 1 maps the 1x1 latent to
4x4 with a 4x4 conv (padding 3); every odd layer from 3 on doubles the resolution (nearest) before its conv.
The architecture is fully determined by the state_dict: `sizes = [z_dim, ch@4, ch@8, ..., ch@R]`.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

_LEGACY_FEATURE = re.compile(r"^features\.(\d+)\.(.*)$")
_LAYER_CONV = re.compile(r"^layer(\d+)\.conv\.weight$")


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Normalise every pixel's feature vector to unit RMS over channels."""
    return x / torch.sqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class WScale(nn.Module):
    """Equalised learning rate: the conv weight is stored unscaled and the output is scaled at run time.

    The netdissect port puts the kernel size into the gain (sqrt(2)/k) and uses C_in alone as fan-in,
    so scale = gain / sqrt(C_in), not the usual sqrt(2 / (C_in*k*k)).
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.scale = scale
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.b.view(1, -1, 1, 1)


class ProGANLayer(nn.Module):
    """pixel-norm -> [nearest 2x up] -> conv (no bias) -> WScale -> LeakyReLU(0.2) (no sqrt(2) gain)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.wscale = WScale(out_channels, math.sqrt(2.0) / kernel_size / math.sqrt(in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [N, C, 2H, 2W]
        return F.leaky_relu(self.wscale(self.conv(x)), 0.2)


class ProGANOutput(nn.Module):
    """pixel-norm -> 1x1 conv to RGB -> WScale (gain 1) -> hard clamp to [-1, 1] (the reference's 'tanh')."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 1, bias=False)
        self.wscale = WScale(3, 1.0 / math.sqrt(in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.wscale(self.conv(pixel_norm(x))), -1.0, 1.0)


class ProGANGenerator(nn.Module):
    """ProGAN generator z [N, z_dim] (or [N, z_dim, 1, 1]) -> image [N, 3, R, R] in [-1, 1].

    ProGAN has no mapping network: the latent *is* z, and `sample_latent` applies truncation by scaling z.
    """

    arch: ClassVar[str] = "progan"

    def __init__(self, sizes: list[int]):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes must be [z_dim, ch@4, ...], got {sizes}")
        self.config = {"sizes": [int(s) for s in sizes]}
        self.z_dim = int(sizes[0])
        self.resolution = 4 * 2 ** (len(sizes) - 2)
        self.latent_shape = (self.z_dim,)

        # Two layers per resolution i: layer 2i-1 (upsampling for i >= 2) and layer 2i, both output sizes[i].
        self.num_layers = 2 * (len(sizes) - 1)
        for n in range(1, self.num_layers + 1):
            out_channels = sizes[(n + 1) // 2]
            in_channels = sizes[n // 2]  # layer 2i-1 reads ch@(i-1) (z for i = 1); layer 2i reads ch@i
            if n == 1:
                layer = ProGANLayer(in_channels, out_channels, kernel_size=4, padding=3, upsample=False)
            else:
                layer = ProGANLayer(in_channels, out_channels, kernel_size=3, padding=1, upsample=n % 2 == 1)
            self.add_module(f"layer{n}", layer)
        self.output_name = f"output_{self.resolution}x{self.resolution}"
        self.add_module(self.output_name, ProGANOutput(sizes[-1]))

    @classmethod
    def normalize_state_dict(cls, sd: dict) -> dict:
        """Rename the old layout (`features.{n-1}.*`, `output.*`) to `layer{n}.*`, `output_{R}x{R}.*`."""
        if not any(_LEGACY_FEATURE.match(k) or k.startswith("output.") for k in sd):
            return sd
        renamed = {}
        for key, value in sd.items():
            match = _LEGACY_FEATURE.match(key)
            renamed[f"layer{int(match[1]) + 1}.{match[2]}" if match else key] = value
        num_layers = sum(1 for k in renamed if _LAYER_CONV.match(k))
        resolution = 4 * 2 ** (num_layers // 2 - 1)
        prefix = f"output_{resolution}x{resolution}."
        return {(prefix + k.removeprefix("output.") if k.startswith("output.") else k): v
                for k, v in renamed.items()}

    @classmethod
    def config_from_state_dict(cls, sd: dict) -> dict:
        """sizes = [layer1 C_in, then C_out of layer1, layer3, layer5, ...] (one entry per resolution)."""
        sd = cls.normalize_state_dict(sd)
        num_layers = sum(1 for k in sd if _LAYER_CONV.match(k))
        if num_layers < 2 or num_layers % 2:
            raise ValueError(f"need an even number (>= 2) of layer{{n}}.conv.weight keys, got {num_layers}")
        sizes = [int(sd["layer1.conv.weight"].shape[1])]
        sizes += [int(sd[f"layer{n}.conv.weight"].shape[0]) for n in range(1, num_layers + 1, 2)]
        return {"sizes": sizes}

    def layers(self) -> list[nn.Module]:
        """The blocks in execution order: layer1 .. layer2L, then the RGB output."""
        return [getattr(self, f"layer{n}") for n in range(1, self.num_layers + 1)] + [
            getattr(self, self.output_name)
        ]

    def features(self, z: torch.Tensor, upto: int) -> torch.Tensor:
        """Output of module `layer{upto}` (debugging aid), e.g. upto=1 -> [N, ch@4, 4, 4]."""
        if not 1 <= upto <= self.num_layers:
            raise ValueError(f"upto must be in 1..{self.num_layers}, got {upto}")
        x = z.reshape(-1, self.z_dim, 1, 1)  # [N, z_dim, 1, 1]
        for layer in self.layers()[:upto]:
            x = layer(x)
        return x

    def sample_latent(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """No mapping network: the latent is z itself; truncation < 1 shrinks z towards the origin."""
        return z * truncation

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.reshape(-1, self.z_dim, 1, 1)  # [N, z_dim, 1, 1]
        for layer in self.layers():
            x = layer(x)
        return x  # [N, 3, R, R]
