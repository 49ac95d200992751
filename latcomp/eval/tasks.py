"""The evaluation's inputs: part collages and paper-mask holes of unseen faces (or of a folder's images),
and the real images the realism of every method is measured against (numpy + Pillow).

Every face here is rendered from a seed far above the training range (training renders seeds from 0),
and the four sets (collage sources, inpainting faces, reference faces) use disjoint seed ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import faces
from ..data.folder import ImageFolder
from ..data.masks import COLLAGE_ORDER, KNOWN, collage, paper_mask, upsample_bilinear
from .inpainting import HELD_OUT_SEED, collage_fill

# Offsets above HELD_OUT_SEED; each run seed takes 100_000 faces of each range.
COLLAGE_FACES, INPAINTING_FACES, REFERENCE_FACES = 10_000_000, 20_000_000, 30_000_000
# Parts that each come from a different face when there are enough faces: the paper's "eyes from one,
# mouth from another, hair from a third"; the remaining parts go to random faces.
DISTINCT_PARTS = ("eyes", "mouth", "hair", "skin")


@dataclass
class Task:
    name: str
    description: str
    inputs: np.ndarray  # uint8 [N, R, R, 3], zero where unknown
    masks: np.ndarray  # uint8 [N, R, R], 255 = known
    originals: np.ndarray | None = None  # uint8 [N, R, R, 3] when the truth under the holes is known


def _seeds(offset: int, seed: int, count: int) -> range:
    start = HELD_OUT_SEED + offset + seed * 100_000
    return range(start, start + count)


def assign_parts(rng: np.random.Generator, parts_from: int) -> dict[str, int]:
    """Which of `parts_from` faces each part is taken from."""
    order = rng.permutation(parts_from)
    assignment = {part: int(order[i % parts_from]) for i, part in enumerate(DISTINCT_PARTS)}
    for part in COLLAGE_ORDER:
        assignment.setdefault(part, int(rng.integers(parts_from)))
    return assignment


def face_collages(count: int, size: int, parts_from: int = 4, seed: int = 0) -> Task:
    """`count` collages, each of the parts of `parts_from` unseen faces (latcomp.data.masks.collage);
    pixels no assigned part covers (where the faces' shapes disagree) are unknown."""
    if parts_from < 2:
        raise ValueError(f"a collage needs parts from at least 2 faces, got {parts_from}")
    rng = np.random.default_rng([seed, 11])
    seeds = iter(_seeds(COLLAGE_FACES, seed, count * parts_from))
    inputs, masks = [], []
    for _ in range(count):
        images, parts = faces.render_batch([next(seeds) for _ in range(parts_from)], size)
        image, mask = collage(images, parts, assign_parts(rng, parts_from))
        inputs.append(image)
        masks.append(mask)
    return Task("composition", f"collages of the parts of {parts_from} unseen procedural faces",
                np.stack(inputs), np.stack(masks))


def face_inpainting(count: int, size: int, seed: int = 0) -> Task:
    """`count` unseen faces under the paper's masks (Chai et al. 2021: thresholded 6x6 bilinear noise)."""
    rng = np.random.default_rng([seed, 12])
    originals, _ = faces.render_batch(_seeds(INPAINTING_FACES, seed, count), size)
    masks = np.stack([paper_mask(rng, size) for _ in range(count)])
    return Task("inpainting", "unseen procedural faces under the paper's masks",
                collage_fill(originals, masks), masks, originals)


def face_reference(count: int, size: int, seed: int = 0) -> np.ndarray:
    """The real images realism is measured against: `count` unseen faces, disjoint from both tasks."""
    return faces.render_batch(_seeds(REFERENCE_FACES, seed, count), size)[0]


def region_collage(rng: np.random.Generator, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A collage without part maps: the canvas is split into blobby regions (argmax of per-image 6x6
    bilinear noise), each copied from a different image, and a paper mask hides part of the result."""
    count, size = len(images), images.shape[1]
    noise = np.stack([upsample_bilinear(rng.random((6, 6)), size) for _ in range(count)])  # [K, R, R]
    owner = noise.argmax(axis=0)  # [R, R]
    image = np.take_along_axis(images, owner[None, ..., None].repeat(3, axis=-1), axis=0)[0]
    mask = paper_mask(rng, size)
    return np.where(mask[..., None] == KNOWN, image, 0).astype(np.uint8), mask


def folder_tasks(folder: ImageFolder, count: int, parts_from: int = 4, seed: int = 0,
                 reference: int = 256) -> tuple[Task, Task, np.ndarray]:
    """(composition, inpainting, reference images) from a folder of real images. The folder is split by
    index: even images are sources of collages and holes, odd ones the realism reference, so no method is
    scored against the very images it was given."""
    if len(folder) < 2:
        raise ValueError(f"{folder!r}: need at least 2 images (sources and a realism reference)")
    sources = list(range(0, len(folder), 2))
    references = list(range(1, len(folder), 2))[:reference]
    rng = np.random.default_rng([seed, 13])
    inputs, masks = [], []
    for _ in range(count):
        chosen = rng.choice(sources, size=min(parts_from, len(sources)), replace=False)
        image, mask = region_collage(rng, np.stack([folder.load(int(i)) for i in chosen]))
        inputs.append(image)
        masks.append(mask)
    composition = Task("composition", f"region collages of {parts_from} folder images (no part maps)",
                       np.stack(inputs), np.stack(masks))
    originals = np.stack([folder.load(sources[i % len(sources)]) for i in range(count)])
    holes = np.stack([paper_mask(rng, folder.size) for _ in range(count)])
    inpainting = Task("inpainting", "folder images under the paper's masks", collage_fill(originals, holes),
                      holes, originals)
    return composition, inpainting, np.stack([folder.load(i) for i in references])

