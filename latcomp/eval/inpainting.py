"""How well a bundle fills holes in held-out procedural faces, against naive fills (no torch).

For each face and mask the bundle's result is compared with the original face, inside the hole (what the
model invented), over the known pixels (how faithfully it kept what it was given) and everywhere. The
naive baselines fill the hole without any model: `mean_fill` paints the mean colour of the known pixels,
`collage` leaves the unknown pixels black, the way the regressor receives them.
Errors are mean absolute differences on a 0-1 scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..data import faces
from ..data.masks import full_mask, paper_mask, rectangle_mask

HELD_OUT_SEED = 1_000_000  # training renders seeds from 0; these faces are never seen
MASKS = {"paper": paper_mask, "rect": rectangle_mask, "full": full_mask}


@dataclass
class Case:
    images: np.ndarray  # uint8 [N, R, R, 3] originals
    masks: np.ndarray  # uint8 [N, R, R], 255 = known


def held_out_cases(kind: str, count: int, size: int, seed: int = 0) -> Case:
    """`count` unseen faces, each with a mask of `kind` ("paper", "rect" or "full")."""
    rng = np.random.default_rng([seed, list(MASKS).index(kind)])
    images = np.stack([faces.render(HELD_OUT_SEED + seed * 100_000 + i, size).image for i in range(count)])
    masks = np.stack([MASKS[kind](rng, size) for _ in range(count)])
    return Case(images, masks)


def mean_fill(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    known = masks[..., None] >= 128
    counts = np.maximum(known.sum(axis=(1, 2)), 1)  # [N, 1]
    means = (images * known).sum(axis=(1, 2)) / counts  # [N, 3]
    return np.where(known, images, np.round(means)[:, None, None, :]).astype(np.uint8)


def collage_fill(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return np.where(masks[..., None] >= 128, images, 0).astype(np.uint8)


def errors(result: np.ndarray, case: Case) -> dict[str, float]:
    """MAE (0-1) inside the hole, over the known pixels and over the whole image."""
    difference = np.abs(result.astype(np.float64) - case.images.astype(np.float64)).mean(axis=-1) / 255.0
    known = case.masks >= 128
    hole = ~known
    return {
        "hole_l1": float(difference[hole].mean()) if hole.any() else float("nan"),
        "masked_l1": float(difference[known].mean()) if known.any() else float("nan"),
        "full_l1": float(difference.mean()),
    }


def evaluate_inpainting(engine, count: int = 64, seed: int = 0, realism: float = 0.0) -> dict:
    """{"masks": {kind: {"methods": {method: {hole_l1, masked_l1, full_l1, time_ms}}}}} for each mask kind.

    The bundle's images are fed with the hole zeroed (the regressor never sees what lies under a hole).
    """
    methods = {
        "regressor": lambda images, masks: engine.run(collage_fill(images, masks), masks[..., None],
                                                      realism=realism)[0],
        "mean_fill": mean_fill,
        "collage": collage_fill,
    }
    report = {"samples": count, "resolution": engine.resolution, "masks": {}}
    for kind in MASKS:
        case = held_out_cases(kind, count, engine.resolution, seed)
        measured = {}
        for name, method in methods.items():
            started = time.perf_counter()
            result = method(case.images, case.masks)
            milliseconds = (time.perf_counter() - started) * 1000 / count
            measured[name] = {**errors(result, case), "time_ms": milliseconds}
        report["masks"][kind] = {"methods": measured}
    return report


def markdown(report: dict) -> str:
    lines = ["| masks | method | hole L1 | known L1 | full L1 | ms/image |", "|---|---|---:|---:|---:|---:|"]
    for kind, entry in report["masks"].items():
        for method, values in entry["methods"].items():
            lines.append(f"| {kind} | {method} | {values['hole_l1']:.4f} | {values['masked_l1']:.4f} | "
                         f"{values['full_l1']:.4f} | {values['time_ms']:.3f} |")
    return "\n".join(lines)
