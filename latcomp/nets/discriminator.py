"""StyleGAN2 residual discriminator (rosinality layout), used to train our own small generators."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import SQRT2, EqualLinear, fir_depthwise, make_kernel


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate: weights N(0,1), scaled by 1/sqrt(fan_in) at run time."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class ConvLayer(nn.Module):
    """[blur ->] conv [-> bias + leaky ReLU * sqrt(2)]; downsampling blurs first, then strides by 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 activate: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.downsample = downsample
        if downsample:
            self.register_buffer("blur_kernel", make_kernel(blur_kernel, gain=1.0))
            pad = len(blur_kernel) - 2 + kernel_size - 1  # keeps exactly H/2 after the stride-2 conv
            self.blur_pad = (pad + 1) // 2
            self.in_channels = in_channels
        self.conv = EqualConv2d(in_channels, out_channels, kernel_size, stride=2 if downsample else 1,
                                padding=0 if downsample else kernel_size // 2, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if activate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:
            x = fir_depthwise(x, self.blur_kernel, self.blur_pad, self.in_channels)
        x = self.conv(x)
        if self.bias is not None:
            x = F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * SQRT2
        return x


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2  # [N, out, H/2, W/2]


class Discriminator(nn.Module):
    """image [N, 3, size, size] -> realness logit [N, 1]; widths per resolution like the generator's."""

    def __init__(self, size: int, channels: Mapping[int | str, int], stddev_group: int = 4):
        super().__init__()
        widths = {int(res): int(width) for res, width in channels.items()}
        self.config = {"size": size, "channels": {str(r): w for r, w in widths.items()},
                       "stddev_group": stddev_group}
        log_size = int(math.log2(size))
        self.from_rgb = ConvLayer(3, widths[size], 1)
        self.blocks = nn.Sequential(
            *[ResBlock(widths[2**i], widths[2 ** (i - 1)]) for i in range(log_size, 2, -1)]
        )
        self.stddev_group = stddev_group
        self.final_conv = ConvLayer(widths[4] + 1, widths[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(widths[4] * 4 * 4, widths[4], activate=True), EqualLinear(widths[4], 1)
        )

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Appends the mean per-group std as one feature map: lets D see a lack of variety (mode collapse)."""
        n, c, h, w = x.shape
        group = min(n, self.stddev_group)
        if n % group:
            group = 1
        y = x.reshape(group, n // group, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [n // group]
        y = y.reshape(-1, 1, 1, 1).repeat(group, 1, h, w)  # [N, 1, H, W]
        return torch.cat([x, y], dim=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.from_rgb(image))  # [N, C4, 4, 4]
        x = self.final_conv(self.minibatch_stddev(x))
        return self.final_linear(x.flatten(1))  # [N, 1]
