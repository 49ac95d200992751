"""An LPIPS-style perceptual distance (Zhang et al. 2018) on a hand-written VGG16 or AlexNet trunk.

d(a, b) = sum over five trunk taps k of  mean_{h,w}  sum_c  lin_k[c] * (f̂_k(a) - f̂_k(b))[c, h, w]^2,
where f̂ is the tap's activation normalised to unit length over channels. Images are [N, 3, H, W] in
[-1, 1], shifted and scaled per channel to the statistics the trunk was trained on first.

No weights ship with latcomp. `LPIPS.from_files(*paths)` takes one or two files, in any order, each a
`torch.save`d state_dict (read with ``torch.load(weights_only=True)``, so never unpickling code) or a
.safetensors file:

  trunk (required): torchvision's ImageNet classifiers, e.g. ``vgg16-397923af.pth`` or
      ``alexnet-owt-7be5be79.pth``: keys ``features.{i}.weight`` [C_out, C_in, k, k] and
      ``features.{i}.bias`` [C_out] at torchvision's layer indices (VGG16: 0 2 5 7 10 12 14 17 19 21 24 26
      28; AlexNet: 0 3 6 8 10). ``classifier.*`` keys are ignored. Which trunk it is follows from the
      indices; widths are read from the shapes.
  linear (optional): the LPIPS v0.1 calibration weights ``vgg.pth`` / ``alex.pth`` from
      richzhang/PerceptualSimilarity (``lpips/weights/v0.1/``, also inside the `lpips` pip package): keys
      ``lin{k}.model.1.weight`` [1, C_k, 1, 1], k = 0..4 (C_k = the trunk's tap widths; for VGG16
      64 128 256 512 512). ``lins.{k}.model.1.weight`` (a whole saved LPIPS module) is accepted too.
      Without this file every channel weighs 1: the paper's uncalibrated "baseline" distance.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# torchvision's `features` layouts: "C" conv 3x3 pad 1 (AlexNet lists its own kernels), "R" ReLU,
# "M" max-pool. The taps are the ReLUs LPIPS reads: relu1_2 .. relu5_3 for VGG16, relu1..relu5 for AlexNet.
VGG16_LAYOUT = "CRCRM" "CRCRM" "CRCRCRM" "CRCRCRM" "CRCRCR"
VGG16_TAPS = (3, 8, 15, 22, 29)
# AlexNet conv index -> (kernel, stride, padding)
ALEXNET_CONVS = {0: (11, 4, 2), 3: (5, 1, 2), 6: (3, 1, 1), 8: (3, 1, 1), 10: (3, 1, 1)}
ALEXNET_LAYOUT = "CRMCRMCRCRCR"
ALEXNET_TAPS = (1, 4, 7, 9, 11)

# The LPIPS input normalisation for images in [-1, 1] (ImageNet statistics mapped to that range).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

_FEATURE_KEY = re.compile(r"^features\.(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"^lins?\.?(\d+)\.model\.1\.weight$")


class LPIPSWeightsError(ValueError):
    """A weights file that is not a trunk or linear-layer file of the documented formats."""


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LPIPSWeightsError(f"LPIPS weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise LPIPSWeightsError(f"cannot read {path} as a tensor-only state_dict: {error}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise LPIPSWeightsError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    return {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)}


class Trunk(nn.Module):
    """`features` of torchvision's VGG16 or AlexNet (same indices, so the state_dict loads as is), run up to
    the last tap; `forward` returns the five tapped activations."""

    def __init__(self, net: str, widths: Mapping[int, int], in_channels: int = 3):
        super().__init__()
        if net not in ("vgg", "alex"):
            raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
        self.net = net
        layout, self.taps = (VGG16_LAYOUT, VGG16_TAPS) if net == "vgg" else (ALEXNET_LAYOUT, ALEXNET_TAPS)
        layers: list[nn.Module] = []
        channels = in_channels
        for index, kind in enumerate(layout):
            if kind == "C":
                kernel, stride, padding = ALEXNET_CONVS[index] if net == "alex" else (3, 1, 1)
                layers.append(nn.Conv2d(channels, widths[index], kernel, stride=stride, padding=padding))
                channels = widths[index]
            elif kind == "R":
                layers.append(nn.ReLU())
            else:
                # AlexNet pools 3x3/2; VGG 2x2/2
                layers.append(nn.MaxPool2d(3, 2) if net == "alex" else nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.tap_widths = [widths[max(i for i in widths if i < tap)] for tap in self.taps]
        # AlexNet's 11x11/4 stem and two pools leave nothing of images much below 64 px
        self.min_size = 64 if net == "alex" else 16

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> Trunk:
        convs = {int(m[1]): sd[key] for key in sd if (m := _FEATURE_KEY.match(key)) and m[2] == "weight"}
        indices = sorted(convs)
        vgg_convs = [i for i, kind in enumerate(VGG16_LAYOUT) if kind == "C"]
        if indices == vgg_convs:
            net = "vgg"
        elif indices == sorted(ALEXNET_CONVS):
            net = "alex"
        else:
            raise LPIPSWeightsError(
                f"conv layers at features.{indices} match neither VGG16 (features.{vgg_convs}) nor AlexNet "
                f"(features.{sorted(ALEXNET_CONVS)})")
        trunk = cls(net, {i: int(w.shape[0]) for i, w in convs.items()}, int(convs[0].shape[1]))
        wanted = trunk.state_dict()
        tensors = {key: sd[key] for key in wanted if key in sd}
        bad = [key for key in wanted if key not in sd or sd[key].shape != wanted[key].shape]
        if bad:
            raise LPIPSWeightsError(f"{net} trunk weights missing or mis-shaped: {', '.join(bad[:6])}")
        trunk.load_state_dict(tensors, strict=True)
        return trunk

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tapped = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                tapped.append(x)  # [N, C_k, H_k, W_k]
        return tapped


def _unit_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Frozen perceptual distance; gradients flow to the images only. `forward(a, b)` -> [N]."""

    def __init__(self, trunk: Trunk, lins: list[torch.Tensor] | None = None):
        super().__init__()
        self.trunk = trunk.eval().requires_grad_(False)
        self.calibrated = lins is not None
        if lins is None:
            lins = [torch.ones(1, width, 1, 1) for width in trunk.tap_widths]
        for k, (lin, width) in enumerate(zip(lins, trunk.tap_widths, strict=True)):
            if tuple(lin.shape) != (1, width, 1, 1):
                raise LPIPSWeightsError(f"lin{k} has shape {tuple(lin.shape)}, expected (1, {width}, 1, 1) "
                                        f"to match the {trunk.net} trunk")
            self.register_buffer(f"lin{k}", lin.float())
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    @classmethod
    def from_files(cls, *paths: str | Path) -> LPIPS:
        """The trunk file plus, optionally, the linear-layer file (see the module docstring), any order."""
        if not 1 <= len(paths) <= 2:
            raise LPIPSWeightsError(f"expected a trunk file and optionally a linear-layer file, got "
                                    f"{len(paths)} files")
        trunk, lins = None, None
        for path in map(Path, paths):
            tensors = _read_tensors(path)
            if any(_FEATURE_KEY.match(key) for key in tensors):
                trunk = Trunk.from_state_dict(tensors)
            elif any(_LIN_KEY.match(key) for key in tensors):
                found = {int(m[1]): value for key, value in tensors.items() if (m := _LIN_KEY.match(key))}
                if sorted(found) != list(range(5)):
                    raise LPIPSWeightsError(f"{path}: expected linear layers 0..4, found {sorted(found)}")
                lins = [found[k] for k in range(5)]
            else:
                sample = ", ".join(sorted(tensors)[:4]) or "no tensors"
                raise LPIPSWeightsError(f"{path} is neither a trunk (features.N.weight) nor an LPIPS linear "
                                        f"file (linK.model.1.weight); its keys start {sample}")
        if trunk is None:
            raise LPIPSWeightsError("no trunk file (torchvision vgg16/alexnet state_dict) among the LPIPS "
                                    "weights")
        return cls(trunk, lins)

    def describe(self) -> str:
        kind = "calibrated (LPIPS v0.1 linear layers)" if self.calibrated else "uncalibrated (all channels 1)"
        return f"LPIPS on a {self.trunk.net} trunk, {kind}"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: [N, 3, H, W] in [-1, 1] -> distance [N]."""
        if min(a.shape[-2:]) < self.trunk.min_size:
            a, b = (F.interpolate(x, size=self.trunk.min_size, mode="bilinear", align_corners=False)
                    for x in (a, b))
        both = torch.cat([a, b]).float().sub(self.shift).div(self.scale)  # one trunk pass for both
        distance = a.new_zeros(a.shape[0], dtype=torch.float32)
        for k, features in enumerate(self.trunk(both)):
            fa, fb = _unit_channels(features).chunk(2)
            weighted = (fa - fb).square() * getattr(self, f"lin{k}")  # [N, C_k, H_k, W_k]
            distance = distance + weighted.sum(dim=1).mean(dim=(1, 2))
        return distance
