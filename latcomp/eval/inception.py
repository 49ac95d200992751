"""InceptionV3 pool3 features (the 2048-d input of FID) from weights the user supplies (torch only).

Two published weight files fit this network; neither is downloaded or shipped by latcomp:
  - "pytorch-fid": `pt_inception-2015-12-05-6726825d.pth`, the TensorFlow FID network (inception-2015-12-05)
    ported by pytorch-fid. 1008-class fc, no auxiliary head. TensorFlow's average pools ignore the zero
    padding (count_include_pad=False) and the last block (Mixed_7c) max-pools in its pool branch: these
    differences are part of the FID definition, so they are reproduced here.
  - "torchvision": `inception_v3_google-0cc3c7bd.pth`, torchvision's ImageNet model. 1000-class fc, plus an
    auxiliary classifier (AuxLogits.*) that features never use, so it is dropped on loading; its average
    pools count the padding.
Module and parameter names follow torchvision's Inception3 layout, which both files use, so that
load_state_dict(strict=True) checks every key and shape. The classifier (fc) is never run: it is kept so the
files load strictly, and its row count is what tells the two variants apart.

Input: uint8 images are resized to 299x299 (bilinear, align_corners=False, as pytorch-fid) and scaled to
[-1, 1]. Both variants want that scale: pytorch-fid feeds 2x - 1 of [0, 1] pixels, and torchvision's weights
are used with ImageNet-normalised input that `transform_input=True` maps back with
x_n * std/0.5 + (mean - 0.5)/0.5 = ((x - mean)/std * std + mean - 0.5)/0.5 = 2x - 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nets.tensors import images_from_uint8

POOL3_DIM = 2048
INPUT_SIZE = 299
CLASSES = {"pytorch-fid": 1008, "torchvision": 1000}  # fc rows: how a file says which network it is
FILES = {"pytorch-fid": "pt_inception-2015-12-05-6726825d.pth",
         "torchvision": "inception_v3_google-0cc3c7bd.pth"}
EXPECTED = (f"expected pytorch-fid's {FILES['pytorch-fid']} (fc with 1008 classes) or torchvision's "
            f"{FILES['torchvision']} (fc with 1000 classes)")
DROPPED = "AuxLogits."  # torchvision's auxiliary classifier: training only, not part of the trunk


class Conv(nn.Module):
    """torchvision's BasicConv2d: conv (no bias, the BN shifts) + BatchNorm(eps=1e-3, TensorFlow's) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool3x3(x: torch.Tensor, pool: str) -> torch.Tensor:
    """The pool branch's same-size 3x3 pooling: "avg" averages over all 9 taps, zero padding included
    (torchvision), "avg_valid" over the taps inside the image only (TensorFlow), "max" takes the maximum."""
    if pool == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=pool == "avg")


class MixedA(nn.Module):
    """35x35 block: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | pool -> 1x1. Out: 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = Conv(in_channels, 64, 1)
        self.branch5x5_1 = Conv(in_channels, 48, 1)
        self.branch5x5_2 = Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = Conv(in_channels, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, padding=1)
        self.branch_pool = Conv(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_pool3x3(x, self.pool)),
        ], dim=1)


class ReduceB(nn.Module):
    """35 -> 17 (Mixed_6a): stride-2 3x3 | 1x1 -> 3x3 -> stride-2 3x3 | stride-2 max pool. Out: 480 + in."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = Conv(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = Conv(in_channels, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class MixedC(nn.Module):
    """17x17 block with 7x7 convolutions factorised into 1x7 and 7x1 (width c7 inside). Out: 768."""

    def __init__(self, in_channels: int, c7: int, pool: str):
        super().__init__()
        self.pool = pool
        row, column = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = Conv(in_channels, 192, 1)
        self.branch7x7_1 = Conv(in_channels, c7, 1)
        self.branch7x7_2 = Conv(c7, c7, **row)
        self.branch7x7_3 = Conv(c7, 192, **column)
        self.branch7x7dbl_1 = Conv(in_channels, c7, 1)
        self.branch7x7dbl_2 = Conv(c7, c7, **column)
        self.branch7x7dbl_3 = Conv(c7, c7, **row)
        self.branch7x7dbl_4 = Conv(c7, c7, **column)
        self.branch7x7dbl_5 = Conv(c7, 192, **row)
        self.branch_pool = Conv(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            self.branch7x7dbl_5(self.branch7x7dbl_4(double)),
            self.branch_pool(_pool3x3(x, self.pool)),
        ], dim=1)


class ReduceD(nn.Module):
    """17 -> 8 (Mixed_7a): 1x1 -> stride-2 3x3 | 1x1 -> 1x7 -> 7x1 -> stride-2 3x3 | max pool.
    Out: 512 + in."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = Conv(in_channels, 192, 1)
        self.branch3x3_2 = Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Conv(in_channels, 192, 1)
        self.branch7x7x3_2 = Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(seven),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class MixedE(nn.Module):
    """8x8 block whose 3x3 branches end in parallel 1x3 and 3x1 convolutions. Out: 2048."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = Conv(in_channels, 320, 1)
        self.branch3x3_1 = Conv(in_channels, 384, 1)
        self.branch3x3_2a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = Conv(in_channels, 448, 1)
        self.branch3x3dbl_2 = Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = Conv(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)  # [N, 384, 8, 8]
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))  # [N, 384, 8, 8]
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(_pool3x3(x, self.pool)),
        ], dim=1)


class InceptionV3(nn.Module):
    """The InceptionV3 trunk of `variant` ("pytorch-fid" or "torchvision"); forward gives pool3 features."""

    def __init__(self, variant: str):
        super().__init__()
        if variant not in CLASSES:
            raise ValueError(f"unknown InceptionV3 variant {variant!r}; choose from {', '.join(CLASSES)}")
        self.variant = variant
        fid = variant == "pytorch-fid"
        avg = "avg_valid" if fid else "avg"
        self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = Conv(80, 192, 3)
        self.Mixed_5b = MixedA(192, pool_features=32, pool=avg)
        self.Mixed_5c = MixedA(256, pool_features=64, pool=avg)
        self.Mixed_5d = MixedA(288, pool_features=64, pool=avg)
        self.Mixed_6a = ReduceB(288)
        self.Mixed_6b = MixedC(768, c7=128, pool=avg)
        self.Mixed_6c = MixedC(768, c7=160, pool=avg)
        self.Mixed_6d = MixedC(768, c7=160, pool=avg)
        self.Mixed_6e = MixedC(768, c7=192, pool=avg)
        self.Mixed_7a = ReduceD(768)
        self.Mixed_7b = MixedE(1280, pool=avg)
        self.Mixed_7c = MixedE(2048, pool="max" if fid else avg)  # the ported graph's quirk, kept for FID
        self.fc = nn.Linear(POOL3_DIM, CLASSES[variant])  # never run: it makes the files load strictly

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 299, 299] in [-1, 1] -> pool3 [N, 2048]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [N, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # [N, 192, 71, 71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 192, 35, 35]
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # [N, 288, 35, 35]
        x = self.Mixed_6a(x)  # [N, 768, 17, 17]
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # [N, 768, 17, 17]
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # [N, 2048, 8, 8]
        return x.mean(dim=(2, 3))  # [N, 2048]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .pth (torch.load, weights only) or .safetensors file, unwrapped from at most one
    {"state_dict": ...}. FileNotFoundError when there is no such file, ValueError when it is not readable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"InceptionV3 weights {path}: no such file ({EXPECTED})")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(f"InceptionV3 weights {path}: reading .safetensors needs the safetensors "
                             f"package (pip install safetensors), or pass the .pth file") from None
        try:
            found = load_file(path)
        except Exception as error:  # safetensors raises its own error types for malformed headers
            raise ValueError(f"InceptionV3 weights {path}: not a readable safetensors file ({error}); "
                             f"{EXPECTED}") from None
    else:
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling, zip, IO and weights_only refusals all mean "not this file"
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"InceptionV3 weights {path}: not a readable torch file ({reason}); "
                             f"{EXPECTED}") from None
    if isinstance(found, dict) and isinstance(found.get("state_dict"), dict):
        found = found["state_dict"]
    if not isinstance(found, dict) or not all(isinstance(v, torch.Tensor) for v in found.values()):
        raise ValueError(f"InceptionV3 weights {path}: not a state dict of tensors; {EXPECTED}")
    return found


def variant_of(state_dict: dict[str, torch.Tensor]) -> str:
    """"pytorch-fid" or "torchvision", told by the classifier's rows; ValueError for anything else."""
    fc = state_dict.get("fc.weight")
    if fc is None or fc.dim() != 2 or fc.shape[1] != POOL3_DIM:
        shape = "absent" if fc is None else tuple(fc.shape)
        raise ValueError(f"not InceptionV3 weights (fc.weight, [classes, 2048], is {shape}); {EXPECTED}")
    for variant, classes in CLASSES.items():
        if fc.shape[0] == classes:
            return variant
    raise ValueError(f"InceptionV3 weights with {fc.shape[0]} classes are not a published FID network; "
                     f"{EXPECTED}")


def inception_from_state_dict(state_dict: dict[str, torch.Tensor]) -> InceptionV3:
    """The network of `state_dict` in eval mode, every key and shape checked (AuxLogits.* dropped, a missing
    BatchNorm num_batches_tracked, absent from old files and unused in eval, tolerated)."""
    network = InceptionV3(variant_of(state_dict))
    ours = network.state_dict()
    given = {key: value for key, value in state_dict.items() if not key.startswith(DROPPED)}
    for key, value in ours.items():
        if key.endswith(".num_batches_tracked") and key not in given:
            given[key] = torch.zeros_like(value)
    missing, unexpected = sorted(set(ours) - set(given)), sorted(set(given) - set(ours))
    wrong = [f"{key} {tuple(given[key].shape)} (expected {tuple(ours[key].shape)})"
             for key in sorted(set(ours) & set(given)) if given[key].shape != ours[key].shape]
    if missing or unexpected or wrong:
        found = {"missing": missing, "unexpected": unexpected, "wrong shape": wrong}
        problems = [f"{label} {len(keys)}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                    for label, keys in found.items() if keys]
        raise ValueError(f"not the {network.variant} InceptionV3 layout ({'; '.join(problems)}); {EXPECTED}")
    network.load_state_dict(given, strict=True)
    return network.eval().requires_grad_(False)


def load_inception(path: str | Path, device: str = "cpu") -> InceptionV3:
    """The checked network of a weights file (see read_state_dict and inception_from_state_dict) on device."""
    return inception_from_state_dict(read_state_dict(path)).to(device)


def pool3_features(network: InceptionV3, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """uint8 [N, R, R, 3] -> float64 [N, 2048], `batch` images at a time on the network's device."""
    device = next(network.parameters()).device
    found = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            # scaling to [-1, 1] before the bilinear resize is the same as after: its weights sum to 1
            x = images_from_uint8(np.ascontiguousarray(images[start:start + batch])).to(device)
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            found.append(network(x).double().cpu().numpy())  # [n, 2048]
    return np.concatenate(found) if found else np.zeros((0, POOL3_DIM))
