"""Conversions between the wire format (uint8 NHWC, masks 255 = known) and torch's (float NCHW, [-1, 1])."""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float32 [N,3,H,W] in [-1, 1]."""
    images = torch.as_tensor(images)
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def masks_to_tensor(masks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W] or [N,H,W,1] with 255 = known -> float32 [N,1,H,W] in {0, 1}."""
    masks = torch.as_tensor(masks)
    if masks.dim() == 4:
        masks = masks[..., 0]
    return (masks[:, None] >= 128).float()


def tensor_to_images(images: torch.Tensor) -> np.ndarray:
    """float [N,3,H,W] in [-1, 1] -> uint8 [N,H,W,3] (clamped, rounded)."""
    images = images.detach().float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round()
    return images.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
