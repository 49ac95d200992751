"""StyleGAN2 generator, state_dict-compatible with rosinality's stylegan2-pytorch `Generator`.

The modulated convolution is written in its export-friendly form: activations are scaled by the styles,
one ordinary (or stride-2 transposed) convolution runs with the weight shared by the whole batch, and the
output is multiplied by per-sample demodulation coefficients. This is the same function as the reference's
grouped convolution with per-sample kernels (within 1e-14 in float64), but every convolution weight stays a
constant, so the graph exports to ONNX with a dynamic batch axis. FIR filters run as depthwise convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def default_channels(size: int, channel_multiplier: int) -> dict[int, int]:
    """Rosinality's width table: 512 up to 32 px, then 256·channel_multiplier at 64 px, halving per level."""
    return {res: 512 if res <= 32 else 256 * channel_multiplier * 64 // res for res in _resolutions(size)}


def _resolutions(size: int) -> list[int]:
    log_size = int(math.log2(size))
    if size < 4 or 2**log_size != size:
        raise ValueError(f"size must be a power of two >= 4, got {size}")
    return [2**i for i in range(2, log_size + 1)]


def make_kernel(taps: Sequence[float], gain: float) -> torch.Tensor:
    """Separable FIR kernel outer(taps, taps), normalised to sum `gain`."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k / k.sum() * gain  # [kh, kw]


# The FIR helpers take the channel count as a Python int rather than reading x.shape[1]: under ONNX tracing
# a shape read becomes a graph value and the exporter rejects a conv whose kernel shape it cannot know.


def fir_depthwise(x: torch.Tensor, kernel: torch.Tensor, pad: int, channels: int) -> torch.Tensor:
    """True 2-D convolution of every channel with `kernel` (the reference flips it), zero padding `pad`."""
    # flip by gathering with constant indices: torch.flip exports as a step -1 Slice, which the ONNX
    # exporter does not constant-fold, and the conv weight would then not be a plain initializer
    reverse = torch.arange(kernel.shape[0] - 1, -1, -1, device=kernel.device)
    weight = kernel[reverse][:, reverse].to(x.dtype) * x.new_ones(channels, 1, 1, 1)  # [C, 1, L, L]
    return F.conv2d(x, weight, padding=pad, groups=channels)


def upsample2x_depthwise(x: torch.Tensor, kernel: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-insertion 2x upsampling, then the L-tap FIR `kernel`: [N, C, H, W] -> [N, C, 2H, 2W].

    For L = 4 a stride-2 transposed conv with padding 1 computes y[n] = sum_i x[i] K[n + 1 - 2i], which is
    exactly the reference's upfirdn2d(up=2, pad=(2, 1)) including its kernel flip, so K is used unflipped
    (padding (L - 2) / 2 in general).
    """
    weight = kernel.to(x.dtype) * x.new_ones(channels, 1, 1, 1)  # [C, 1, L, L]
    return F.conv_transpose2d(x, weight, stride=2, padding=(kernel.shape[0] - 2) // 2, groups=channels)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored as N(0,1)/lr_mul, scaled at run time."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul
        if self.activate:  # fused leaky ReLU: bias, leaky_relu(0.2), gain sqrt(2)
            return F.leaky_relu(F.linear(x, self.weight * self.scale) + bias, 0.2) * SQRT2
        return F.linear(x, self.weight * self.scale, bias)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * SQRT2


class Blur(nn.Module):
    """FIR low-pass after the transposed conv; `kernel` is a state_dict buffer as upstream."""

    def __init__(self, taps: Sequence[float], pad: int, gain: float, channels: int):
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps, gain))
        self.pad = pad
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir_depthwise(x, self.kernel, self.pad, self.channels)


class Upsample(nn.Module):
    def __init__(self, taps: Sequence[float], channels: int = 3):
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps, gain=4.0))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x_depthwise(x, self.kernel, self.channels)


class ModulatedConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            # the transposed 3x3 at stride 2 gives 2H+1; an L-tap blur padded (L-2)/2 per side gives 2H
            self.blur = Blur(blur_kernel, pad=(len(blur_kernel) - 2) // 2, gain=4.0, channels=out_channels)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [N, I, H, W], w [N, style_dim] -> [N, O, H', W']."""
        style = self.modulation(w)  # [N, I]
        weight = self.weight[0] * self.scale  # [O, I, k, k], shared by the batch
        x = x * style[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # [N, O, 2H+1, 2W+1]
        else:
            out = F.conv2d(x, weight, padding=self.kernel_size // 2)  # [N, O, H, W]
        if self.demodulate:
            # |W'_n[o]|^2 = sum_i s[n,i]^2 * sum_kk W[o,i,kk]^2, so demodulation is one matmul
            # (a norm rather than square().sum(): the ONNX exporter folds ReduceL2 of a constant to [O, I],
            # while it would store the squared [O, I, k, k] weight as a second full-size constant)
            energy = F.linear(style.square(), weight.flatten(2).norm(dim=2).square())  # [N, O]
            out = out * torch.rsqrt(energy + 1e-8)[:, :, None, None]
        if self.upsample:
            out = self.blur(out)  # [N, O, 2H, 2W]
        return out


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return x if noise is None else x + self.weight * noise


class StyledConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias  # [N, 3, H, W]
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)  # [N, C, 4, 4]


class StyleGAN2Generator(nn.Module):
    """Mapping network z -> w and synthesis network w+ [N, n_latent, style_dim] -> image [N, 3, size, size].

    `channels` (resolution -> width; keys may be str, as after JSON) replaces the default width table, so
    checkpoints of any width and our own small models use this class; `channel_multiplier` only selects
    the default table. Noise: "const" uses the stored `noises.noise_i` buffers (deterministic, as the
    conformance vectors), "random" draws fresh noise per call and sample (training), "none" adds none.
    """

    arch: ClassVar[str] = "stylegan2"

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01,
                 channels: Mapping[int | str, int] | None = None):
        super().__init__()
        if len(blur_kernel) % 2:
            raise ValueError(f"blur_kernel needs an even number of taps, got {list(blur_kernel)}")
        if channels is None:
            widths = default_channels(size, channel_multiplier)
        else:
            given = {int(res): int(width) for res, width in channels.items()}
            missing = [res for res in _resolutions(size) if res not in given]
            if missing:
                raise ValueError(f"channels has no width for resolutions {missing}")
            widths = {res: given[res] for res in _resolutions(size)}
        self.config = {
            "size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": channel_multiplier,
            "blur_kernel": [float(t) for t in blur_kernel],
            "lr_mlp": lr_mlp,
            "channels": None if channels is None else {str(res): width for res, width in widths.items()},
        }
        self.size = self.resolution = size
        self.style_dim = self.z_dim = style_dim
        self.log_size = int(math.log2(size))
        self.num_layers = 2 * (self.log_size - 2) + 1
        self.n_latent = 2 * self.log_size - 2
        self.latent_shape = (self.n_latent, style_dim)
        self.channels = widths

        mapping = [EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)]
        self.style = nn.Sequential(PixelNorm(), *mapping)  # style.0 has no weights, so keys start at style.1
        self.input = ConstantInput(widths[4])
        self.conv1 = StyledConv(widths[4], widths[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(widths[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = widths[4]
        for res in _resolutions(size)[1:]:
            out_channels = widths[res]
            self.convs.append(StyledConv(in_channels, out_channels, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channels, out_channels, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channels, style_dim, blur_kernel=blur_kernel))
            in_channels = out_channels
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))

        # The mean w for truncation is not part of the rosinality state_dict (it lives next to it in the
        # file as 'latent_avg'), so it is a non-persistent buffer; loading new weights makes it stale.
        self.register_buffer("w_avg", torch.zeros(style_dim), persistent=False)
        self._w_avg_ready = False
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_w_avg_ready", False))

    @classmethod
    def normalize_state_dict(cls, sd: dict) -> dict:
        return sd

    @classmethod
    def config_from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> dict:
        """Constructor kwargs implied by the keys and shapes; lr_mlp and blur_kernel take their defaults."""
        # the highest index, so that a missing layer is reported by name when the state_dict is checked
        n_mlp = max((int(key.split(".")[1]) for key in sd if key.startswith("style.")), default=0)
        n_levels = sum(1 for key in sd if key.startswith("to_rgbs.") and key.endswith(".conv.weight"))
        channels = {4: int(sd["conv1.conv.weight"].shape[1])}
        for level in range(n_levels):
            channels[2 ** (level + 3)] = int(sd[f"convs.{2 * level}.conv.weight"].shape[1])
        size = 2 ** (n_levels + 2)
        multiplier = next((m for m in (2, 1) if default_channels(size, m) == channels), 2)
        return {
            "size": size,
            "style_dim": int(sd["style.1.weight"].shape[1]),
            "n_mlp": n_mlp,
            "channel_multiplier": multiplier,
            "channels": {str(res): width for res, width in channels.items()},
        }

    # ---- mapping and truncation ----

    @property
    def has_w_avg(self) -> bool:
        """Whether w_avg holds a mean latent (from the checkpoint, set_w_avg or compute_w_avg), not zeros."""
        return self._w_avg_ready

    @torch.no_grad()
    def set_w_avg(self, w_avg: torch.Tensor) -> None:
        self.w_avg.copy_(w_avg.reshape(self.style_dim))
        self._w_avg_ready = True

    @torch.no_grad()
    def compute_w_avg(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """Mean of the mapping over `n` seeded z (CPU generator, so the same on every device)."""
        z = torch.randn(n, self.style_dim, generator=torch.Generator().manual_seed(seed))
        self.set_w_avg(self.style(z.to(self.w_avg)).mean(dim=0))
        return self.w_avg

    def sample_latent(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """z [N, style_dim] -> w+ [N, n_latent, style_dim], truncated toward w_avg (computed if never set)."""
        w = self.style(z)  # [N, style_dim]
        if truncation != 1.0:
            if not self._w_avg_ready:
                self.compute_w_avg()
            w = self.w_avg + truncation * (w - self.w_avg)
        return w[:, None, :].repeat(1, self.n_latent, 1)

    # ---- synthesis ----

    def _noise(self, index: int, latent: torch.Tensor, noise_mode: str) -> torch.Tensor | None:
        stored = getattr(self.noises, f"noise_{index}")  # [1, 1, H, W]
        if noise_mode == "const":
            return stored  # broadcast over batch and channels
        if noise_mode == "random":
            return torch.randn(latent.shape[0], *stored.shape[1:], device=latent.device, dtype=latent.dtype)
        if noise_mode == "none":
            return None
        raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")

    def forward(self, latent: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """w+ [N, n_latent, style_dim] or w [N, style_dim] -> image [N, 3, size, size], not clamped."""
        if latent.dim() == 2:
            latent = latent[:, None, :].expand(-1, self.n_latent, -1)
        if not torch.jit.is_tracing() and tuple(latent.shape[1:]) != self.latent_shape:
            expected = f"[N, {self.n_latent}, {self.style_dim}] or [N, {self.style_dim}]"
            raise ValueError(f"latent must be {expected}, got {tuple(latent.shape)}")

        x = self.input(latent.shape[0])  # [N, C4, 4, 4]
        x = self.conv1(x, latent[:, 0], self._noise(0, latent, noise_mode))
        skip = self.to_rgb1(x, latent[:, 1])  # [N, 3, 4, 4]
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1  # latent row and noise index of this level's upsampling conv
            x = self.convs[i - 1](x, latent[:, i], self._noise(i, latent, noise_mode))  # [N, C, 2H, 2W]
            x = self.convs[i](x, latent[:, i + 1], self._noise(i + 1, latent, noise_mode))
            skip = to_rgb(x, latent[:, i + 2], skip)  # [N, 3, 2H, 2W]
        return skip
