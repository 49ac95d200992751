"""Data: procedural faces with part labels, masks and collages, image folders (numpy + Pillow only)."""

from latcomp.data.faces import PARTS, Face, render, render_batch
from latcomp.data.folder import ImageFolder
from latcomp.data.masks import (
    STRATEGIES,
    MaskMixture,
    brush_mask,
    collage,
    paper_mask,
    part_mask,
    rectangle_mask,
)

__all__ = [
    "PARTS",
    "STRATEGIES",
    "Face",
    "ImageFolder",
    "MaskMixture",
    "brush_mask",
    "collage",
    "paper_mask",
    "part_mask",
    "rectangle_mask",
    "render",
    "render_batch",
]
