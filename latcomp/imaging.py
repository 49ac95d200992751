"""Image array helpers shared by training, evaluation and docs (numpy and Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def grid(images: np.ndarray, columns: int, padding: int = 2, fill: int = 255) -> np.ndarray:
    """Tiles uint8 images [N,H,W,3] into one [rows*(H+p)+p, columns*(W+p)+p, 3] image, row by row."""
    count, height, width, channels = images.shape
    rows = -(-count // columns)
    canvas = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), fill, np.uint8
    )
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        canvas[top : top + height, left : left + width] = image
    return canvas


def save_png(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def gray_to_rgb(mask: np.ndarray) -> np.ndarray:
    """[..., H, W] or [..., H, W, 1] uint8 mask -> [..., H, W, 3] for display next to images."""
    if mask.shape[-1] == 1:
        mask = mask[..., 0]
    return np.repeat(mask[..., None], 3, axis=-1)
