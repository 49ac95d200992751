"""Masks for training and evaluating the regressor: uint8 [H, W], 255 = known pixel, 0 = unknown.

Every sampler takes a `numpy.random.Generator` first, so a seeded generator reproduces a mask stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from latcomp.data.faces import PARTS

KNOWN, UNKNOWN = 255, 0


@lru_cache(maxsize=16)
def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] weights of 1-D linear interpolation with half-pixel centres (align_corners=False, as in
    torch.nn.functional.interpolate(mode="bilinear")): output pixel i samples input coordinate
    (i + 0.5) * src / dst - 0.5, clamped to the edge pixels."""
    x = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    w = x - lo
    m = np.zeros((dst, src))
    np.add.at(m, (np.arange(dst), lo), 1 - w)
    np.add.at(m, (np.arange(dst), hi), w)
    return m


def upsample_bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a [g, g] array to [size, size] (separable, align_corners=False)."""
    rows = _bilinear_matrix(grid.shape[0], size)
    cols = _bilinear_matrix(grid.shape[1], size)
    return rows @ grid @ cols.T


def paper_mask(rng: np.random.Generator, size: int, cutoff: float | None = None, grid: int = 6) -> np.ndarray:
    """The paper's masks (Chai et al. 2021): grid x grid uniform noise, upsampled bilinearly, known where
    noise < cutoff, cutoff ~ U(0.3, 1.0) per mask unless given. Blobby regions of every size."""
    noise = rng.random((grid, grid))
    if cutoff is None:
        cutoff = rng.uniform(0.3, 1.0)
    return np.where(upsample_bilinear(noise, size) < cutoff, KNOWN, UNKNOWN).astype(np.uint8)


def rectangle_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """One to three random rectangles unknown (each side 15-50 % of the image), the rest known."""
    mask = np.full((size, size), KNOWN, dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        h, w = (rng.uniform(0.15, 0.5, 2) * size).astype(int) + 1
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        mask[y : y + h, x : x + w] = UNKNOWN
    return mask


def brush_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """One to four free-form brush strokes unknown: random walks of thick round-jointed lines."""
    image = Image.new("L", (size, size), KNOWN)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):
        width = max(1, round(rng.uniform(0.06, 0.15) * size))
        point = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 2 * np.pi)
        points = [point]
        for _ in range(int(rng.integers(4, 10))):
            angle += rng.uniform(-1.2, 1.2)  # a meandering stroke, not a straight scratch
            step = rng.uniform(0.08, 0.2) * size
            nxt = point + step * np.array([np.cos(angle), np.sin(angle)])
            if ((nxt < 0) | (nxt >= size)).any():
                angle += np.pi  # turn back at the border instead of sliding along it
                nxt = np.clip(point + step * np.array([np.cos(angle), np.sin(angle)]), 0, size - 1)
            point = nxt
            points.append(point)
        draw.line([tuple(p) for p in points], fill=UNKNOWN, width=width, joint="curve")
        r = (width - 1) / 2  # round caps; Pillow's line ends are square
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=UNKNOWN)
    return np.asarray(image).copy()


def _label_ids(labels: Iterable[str | int]) -> set[int]:
    ids = set()
    for label in labels:
        if isinstance(label, str):
            if label not in PARTS:
                raise ValueError(f"unknown part {label!r}; valid: {', '.join(PARTS)}")
            ids.add(PARTS.index(label))
        elif 0 <= int(label) < len(PARTS):
            ids.add(int(label))
        else:
            raise ValueError(f"part id {label} out of range 0..{len(PARTS) - 1}")
    return ids


def part_mask(rng: np.random.Generator, parts: np.ndarray,
              keep: Iterable[str | int] | None = None) -> np.ndarray:
    """Known where the part map has a kept label. `keep`: part names or ids; default a random subset of
    the labels present (each with probability 1/2, never none and, with two or more labels, never all)."""
    if keep is None:
        present = np.unique(parts)
        chosen = present[rng.random(len(present)) < 0.5]
        if len(chosen) == 0:
            chosen = present[[rng.integers(len(present))]]
        elif len(chosen) == len(present) > 1:
            chosen = np.delete(chosen, rng.integers(len(chosen)))
        ids = set(chosen.tolist())
    else:
        ids = _label_ids(keep)
    return np.where(np.isin(parts, list(ids)), KNOWN, UNKNOWN).astype(np.uint8)


def full_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.full((size, size), KNOWN, dtype=np.uint8)


def empty_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.full((size, size), UNKNOWN, dtype=np.uint8)


_SIZED = {"paper": paper_mask, "rect": rectangle_mask, "brush": brush_mask, "full": full_mask,
          "none": empty_mask}
STRATEGIES = ("paper", "rect", "brush", "parts", "full", "none")


class MaskMixture:
    """Chooses a mask strategy per sample with probability proportional to its weight. "parts" needs a
    part map; when a call has none, its weight is shared out among the others in proportion."""

    def __init__(self, weights: Mapping[str, float]):
        unknown = [name for name in weights if name not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown mask strategy {unknown[0]!r}; valid: {', '.join(STRATEGIES)}")
        if any(not np.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"mask weights must be finite, >= 0 and not all 0, got {dict(weights)}")
        self.weights = {name: float(w) for name, w in weights.items() if w > 0}

    @classmethod
    def from_spec(cls, spec: str) -> MaskMixture:
        """Parse "paper:0.5,rect:0.2,brush:0.2,parts:0.1" or a bare "paper" (weight 1)."""
        weights: dict[str, float] = {}
        for item in spec.split(","):
            name, _, weight = item.strip().partition(":")
            name = name.strip()
            if name not in STRATEGIES:
                valid = ", ".join(STRATEGIES)
                raise ValueError(f"unknown mask strategy {name!r} in {spec!r}; valid: {valid}")
            if name in weights:
                raise ValueError(f"mask strategy {name!r} given twice in {spec!r}")
            try:
                weights[name] = float(weight) if weight.strip() else 1.0
            except ValueError:
                raise ValueError(f"bad weight {weight!r} for mask strategy {name!r} in {spec!r}") from None
        return cls(weights)

    def probabilities(self, with_parts: bool) -> dict[str, float]:
        usable = {name: w for name, w in self.weights.items() if with_parts or name != "parts"}
        total = sum(usable.values())
        if total <= 0:
            raise ValueError("the mask mixture only has 'parts', which needs a part map")
        return {name: w / total for name, w in usable.items()}

    def sample(self, rng: np.random.Generator, size: int,
               parts: np.ndarray | None = None) -> tuple[str, np.ndarray]:
        """(strategy name, mask [size, size] uint8)."""
        if parts is not None and parts.shape != (size, size):
            raise ValueError(f"part map shape {parts.shape} does not match mask size {size}")
        probs = self.probabilities(parts is not None)
        names = list(probs)
        name = names[min(int(np.searchsorted(np.cumsum(list(probs.values())), rng.random(), side="right")),
                         len(names) - 1)]
        mask = part_mask(rng, parts) if name == "parts" else _SIZED[name](rng, size)
        return name, mask

    def __call__(self, rng: np.random.Generator, size: int, parts: np.ndarray | None = None) -> np.ndarray:
        return self.sample(rng, size, parts)[1]

    def __repr__(self) -> str:
        return f"MaskMixture({self.weights})"


# Later parts in this order are pasted over earlier ones: small features sit on top of skin and hair.
COLLAGE_ORDER = ("background", "clothes", "skin", "hair", "nose", "mouth", "brows", "eyes", "glasses")


def collage(faces_images: Sequence[np.ndarray] | np.ndarray, faces_parts: Sequence[np.ndarray] | np.ndarray,
            assignment: Mapping[str | int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Composite of several faces by part: pixels where face assignment[p] has part p are copied from that
    face; everything not covered by an assigned part is unknown. Overlaps follow COLLAGE_ORDER.

    faces_images: [N, H, W, 3] uint8; faces_parts: [N, H, W] labels; assignment e.g.
    {"eyes": 1, "mouth": 2, "hair": 0, "skin": 0}. Returns (image [H, W, 3] uint8, zero where unknown,
    mask [H, W] uint8, 255 known)."""
    images, parts = np.asarray(faces_images), np.asarray(faces_parts)
    if images.ndim != 4 or parts.shape != images.shape[:3]:
        raise ValueError(f"need images [N, H, W, 3] and parts [N, H, W], got {images.shape}, {parts.shape}")
    by_id = {}
    for label, face in assignment.items():
        (part,) = _label_ids([label])
        if not 0 <= face < len(images):
            raise ValueError(f"part {label!r} assigned to face {face}, but there are {len(images)} faces")
        by_id[part] = face
    image = np.zeros(images.shape[1:], dtype=np.uint8)
    mask = np.full(images.shape[1:3], UNKNOWN, dtype=np.uint8)
    for part in sorted(by_id, key=lambda i: COLLAGE_ORDER.index(PARTS[i])):
        region = parts[by_id[part]] == part
        image[region] = images[by_id[part]][region]
        mask[region] = KNOWN
    return image, mask
