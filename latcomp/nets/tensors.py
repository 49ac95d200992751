"""Conversions between the wire format (uint8 NHWC, masks 255 = known) and torch's (float NCHW, [-1, 1]).

The one implementation for training, evaluation and the exported graphs (`latcomp.nets.fused` traces these
functions into ONNX), so only torch ops with plain ONNX counterparts (casts, transposes, arithmetic, a
comparison, clamp, round). The uint8 casts come first and last and all arithmetic runs in float, since
TensorRT accepts uint8 only at casts. numpy arrays are accepted as input and `images_to_numpy` hands numpy
back, for the training side.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    # a tensor passes through untouched, so that tracing sees the graph input itself
    return array if isinstance(array, torch.Tensor) else torch.as_tensor(array)


def images_from_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] in [-1, 1]."""
    return _as_tensor(images).float().permute(0, 3, 1, 2) / 127.5 - 1.0


def masks_from_uint8(masks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 1] or [N, H, W], >= 128 = known -> float32 [N, 1, H, W] in {0, 1}."""
    masks = _as_tensor(masks)
    if masks.dim() == 3:  # the rank is static, so a traced graph keeps only the branch it took
        masks = masks[..., None]
    return (masks.float().permute(0, 3, 1, 2) >= 128.0).float()


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [N, 3, H, W], nominally [-1, 1] -> uint8 [N, H, W, 3] (clamped, rounded half to even)."""
    levels = torch.round((images.float().clamp(-1.0, 1.0) + 1.0) * 127.5)
    return levels.permute(0, 2, 3, 1).to(torch.uint8)


def images_to_numpy(images: torch.Tensor) -> np.ndarray:
    """`images_to_uint8` as a numpy array on the CPU, detached from any autograd graph."""
    return images_to_uint8(images.detach()).cpu().numpy()
