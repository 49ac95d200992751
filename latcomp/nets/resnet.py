"""The paper's latent regressors: torchvision-style BasicBlock ResNets on RGBM (image * mask, mask) input.

State_dict keys are exactly torchvision's (`conv1`, `bn1`, `layer{S}.{B}.conv1/bn1/conv2/bn2`,
`layer{S}.0.downsample.0/1`) plus the head: `fc` for the ProGAN encoder (z), `layer5.conv5` for the
StyleGAN encoder (w+). Depth and widths are configurable so small models of our own share the code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

_BLOCK_CONV1 = re.compile(r"^layer(\d+)\.(\d+)\.conv1\.weight$")
MASK_CONVENTIONS = ("centered", "binary")


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv + BN if the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.downsample = nn.Sequential(projection, nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + shortcut)


class RGBMResNet(nn.Module):
    """Shared trunk and input convention of both regressors (subclasses add the head).

    Stem: conv 7x7/2 (no bias), BN, ReLU, max-pool 3x3 (padding 1) with stride `pool_stride`; then one stage
    of BasicBlocks per entry of `blocks`, widths `widths`, stride 1 for the first stage and 2 after.
    """

    def __init__(self, blocks: list[int], widths: list[int], in_channels: int, pool_stride: int,
                 mask_convention: str):
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks {blocks} and widths {widths} must be non-empty and of equal length")
        if mask_convention not in MASK_CONVENTIONS:
            raise ValueError(f"mask_convention must be one of {MASK_CONVENTIONS}, got {mask_convention!r}")
        self.mask_convention = mask_convention
        self.pool_stride = pool_stride
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        channels = widths[0]
        for stage, (num_blocks, width) in enumerate(zip(blocks, widths, strict=True), start=1):
            stride = 1 if stage == 1 else 2
            stage_blocks = [BasicBlock(channels if b == 0 else width, width, stride if b == 0 else 1)
                            for b in range(num_blocks)]
            self.add_module(f"layer{stage}", nn.Sequential(*stage_blocks))
            channels = width
        self.num_stages = len(blocks)

    @staticmethod
    def trunk_config_from_state_dict(sd: dict) -> dict:
        """blocks, widths and in_channels from the `layer{S}.{B}.conv1.weight` keys and `conv1.weight`."""
        counts: dict[int, int] = {}
        widths: dict[int, int] = {}
        for key, value in sd.items():
            match = _BLOCK_CONV1.match(key)
            if match:
                stage, block = int(match[1]), int(match[2])
                counts[stage] = max(counts.get(stage, 0), block + 1)
                if block == 0:
                    widths[stage] = int(value.shape[0])
        stages = sorted(counts)
        if stages != list(range(1, len(stages) + 1)) or not stages:
            raise ValueError(f"expected stages layer1..layerS with blocks, found {stages}")
        return {
            "blocks": [counts[s] for s in stages],
            "widths": [widths[s] for s in stages],
            "in_channels": int(sd["conv1.weight"].shape[1]),
        }

    def make_input(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """RGBM [N, 4, H, W] from image [N, 3, H, W] in [-1, 1] and mask [N, 1, H, W] in {0, 1} (1 = known).

        The mask channel follows this model's convention ("centered": +-0.5, "binary": {0, 1}). Unlike the
        reference wrappers, nothing is modified in place and an all-zero mask gets no special treatment.
        """
        mask = mask.to(image.dtype)
        channel = mask - 0.5 if self.mask_convention == "centered" else mask
        return torch.cat([image * mask, channel], dim=1)

    def prepare(self, rgbm: torch.Tensor) -> torch.Tensor:
        """Per-model input preprocessing before the stem (identity here)."""
        return rgbm

    def trunk(self, rgbm: torch.Tensor) -> torch.Tensor:
        """Stem + all stages: [N, in_channels, H, W] -> [N, widths[-1], h, w]."""
        x = F.relu(self.bn1(self.conv1(self.prepare(rgbm))))
        x = F.max_pool2d(x, kernel_size=3, stride=self.pool_stride, padding=1)
        for stage in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return x

    def features(self, rgbm: torch.Tensor) -> torch.Tensor:
        """Spatial mean of the trunk output [N, widths[-1]] (`feat_*` / `layer4_mean_*` debug outputs)."""
        return self.trunk(rgbm).mean(dim=(2, 3))


class ProGANEncoder(RGBMResNet):
    """ResNet (18 by default) RGBM -> z [N, z_dim]: global mean, then `fc`.

    The reference returns [N, z_dim, 1, 1]; ProGANGenerator accepts either. For generators below 150 px
    ("halfsize") the stem max-pool has stride 1 so the trunk output keeps the 256-px model's spatial size.
    """

    arch: ClassVar[str] = "progan-encoder"

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 in_channels: int = 4, z_dim: int = 512, resolution: int = 256,
                 mask_convention: str = "centered"):
        halfsize = resolution < 150
        super().__init__(list(blocks), list(widths), in_channels, 1 if halfsize else 2, mask_convention)
        self.halfsize = halfsize
        self.config = {"blocks": [int(b) for b in blocks], "widths": [int(w) for w in widths],
                       "in_channels": int(in_channels), "z_dim": int(z_dim), "resolution": int(resolution),
                       "mask_convention": mask_convention}
        self.z_dim = int(z_dim)
        self.resolution = int(resolution)
        self.latent_shape = (self.z_dim,)
        self.fc = nn.Linear(widths[-1], z_dim)

    @classmethod
    def normalize_state_dict(cls, sd: dict) -> dict:
        return sd

    @classmethod
    def config_from_state_dict(cls, sd: dict) -> dict:
        """Everything but `resolution` (default 256; pass the generator's) and `mask_convention`."""
        return {**cls.trunk_config_from_state_dict(sd), "z_dim": int(sd["fc.weight"].shape[0])}

    def forward(self, rgbm: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(rgbm))  # [N, z_dim]


class Conv5Head(nn.Module):
    """Holder so the projection's keys read `layer5.conv5.*` as in the reference checkpoints."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv5 = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv5(x)


def area_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area resize to [s, s]: output (i, j) averages rows [floor(iH/s), ceil((i+1)H/s)), same for columns.

    That rule is exactly adaptive_avg_pool2d. Integer factors take exact, export-friendly shortcuts:
    identity, nearest repetition (each output cell covers one input cell) or plain average pooling.
    """
    # plain ints: the graph is exported for one input size, so the pooling window must be a constant
    height, width = int(x.shape[-2]), int(x.shape[-1])
    if height == size and width == size:
        return x
    if size % height == 0 and size % width == 0:
        return F.interpolate(x, size=(size, size), mode="nearest")
    if height % size == 0 and width % size == 0:
        return F.avg_pool2d(x, kernel_size=(height // size, width // size))
    return F.adaptive_avg_pool2d(x, (size, size))


class StyleGANEncoder(RGBMResNet):
    """ResNet (34 by default) RGBM -> w+ [N, n_latent, style_dim].

    The input is first area-resized to `input_size` (whatever its size); `layer5.conv5` (1x1, with bias, no
    activation) projects the trunk map to n_latent*style_dim channels *before* the global mean; channel c
    becomes (latent c // style_dim, dim c % style_dim).
    """

    arch: ClassVar[str] = "stylegan-encoder"

    def __init__(self, blocks: Sequence[int] = (3, 4, 6, 3), widths: Sequence[int] = (64, 128, 256, 512),
                 in_channels: int = 4, n_latent: int = 14, style_dim: int = 512, input_size: int = 256,
                 mask_convention: str = "binary"):
        if len(blocks) >= 5:
            raise ValueError("at most 4 stages: the head's keys are layer5.conv5.*")
        super().__init__(list(blocks), list(widths), in_channels, 2, mask_convention)
        self.config = {"blocks": [int(b) for b in blocks], "widths": [int(w) for w in widths],
                       "in_channels": int(in_channels), "n_latent": int(n_latent),
                       "style_dim": int(style_dim), "input_size": int(input_size),
                       "mask_convention": mask_convention}
        self.n_latent = int(n_latent)
        self.style_dim = int(style_dim)
        self.input_size = int(input_size)
        self.latent_shape = (self.n_latent, self.style_dim)
        self.layer5 = Conv5Head(widths[-1], n_latent * style_dim)

    @classmethod
    def normalize_state_dict(cls, sd: dict) -> dict:
        return sd

    @classmethod
    def config_from_state_dict(cls, sd: dict, style_dim: int | None = None) -> dict:
        """The weights fix only n_latent*style_dim: style_dim defaults to 512 (every public StyleGAN2).

        When the projection is not a multiple of 512 (a small model of our own, whose file carries its
        config anyway) the guess is a single latent row. `input_size` (default 256) and `mask_convention`
        cannot be read from the weights.
        """
        projected = int(sd["layer5.conv5.weight"].shape[0])
        if style_dim is None:
            style_dim = 512 if projected % 512 == 0 else projected
        if projected % style_dim:
            raise ValueError(f"layer5.conv5 has {projected} outputs, not a multiple of style_dim={style_dim}")
        return {**cls.trunk_config_from_state_dict(sd), "n_latent": projected // style_dim,
                "style_dim": int(style_dim)}

    def prepare(self, rgbm: torch.Tensor) -> torch.Tensor:
        return area_resize(rgbm, self.input_size)  # [N, C, input_size, input_size]

    def forward(self, rgbm: torch.Tensor) -> torch.Tensor:
        w = self.layer5(self.trunk(rgbm)).mean(dim=(2, 3))  # [N, n_latent*style_dim]
        return w.reshape(-1, self.n_latent, self.style_dim)
