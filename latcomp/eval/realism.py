"""Realism as a Fréchet distance between feature distributions (numpy; the "regressor" features use torch).

FD(a, b) = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2), the Fréchet (2-Wasserstein)
distance between Gaussians fitted to two feature sets: FID when the features are InceptionV3's pool3.
InceptionV3 is not implemented here (no torchvision, and its weights are not ours to ship), so the
features come from one of two documented substitutes:
  - "stats" (default): a fixed, seeded random projection of multi-scale colour and gradient statistics
    on a 4x4 grid (the spatial layout of colour and of edges at four scales). Bundle-independent and
    deterministic, so numbers compare across bundles and runs; blind to anything finer than those
    statistics (texture identity, semantic plausibility), which InceptionV3 would see.
  - "regressor": the bundle's own regressor trunk (spatial mean of its last stage, image fed fully
    known), projected the same way. Semantic for this domain, but tied to the bundle (not comparable
    across bundles) and trained with the generator it is asked to judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

FEATURE_DIM = 32  # few samples per method: the covariance must stay estimable (bias grows with dim/count)
PROJECTION_SEED = 20_240_601
STATS_SIZE = 64  # every image is resized to this before the statistics, whatever the bundle's resolution
GRID = 4  # statistics are pooled over GRID x GRID cells
LEVELS = 4  # 64, 32, 16 and 8 px
# 1 / the spread (std over images, averaged over cells) of each group on 512 procedural faces
GAINS = {"mean": 7.0, "std": 22.0, "gradient": (30.0, 18.0, 11.0, 7.0)}
EXTRACTORS = ("stats", "regressor")
CAVEATS = {
    "stats": "Realism is a Fréchet distance on a fixed random projection of multi-scale colour and gradient "
             "statistics (not InceptionV3): it sees colour layout, holes and blur, not semantics; compare "
             "methods within one run, not with published FIDs.",
    "regressor": "Realism is a Fréchet distance on the bundle's own regressor trunk features (not "
                 "InceptionV3): not comparable across bundles, and the regressor was trained alongside the "
                 "generator it judges.",
}


@dataclass(frozen=True)
class Gaussian:
    mean: np.ndarray  # [D]
    cov: np.ndarray  # [D, D]
    count: int


def fit(features: np.ndarray) -> Gaussian:
    """Mean and (unbiased) covariance of features [N, D]."""
    features = np.asarray(features, np.float64)
    if len(features) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 samples per set, got {len(features)}")
    return Gaussian(features.mean(axis=0), np.cov(features, rowvar=False), len(features))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    """tr((C_a C_b)^1/2) is computed as the sum of the square roots of the eigenvalues of the symmetric
    C_a^1/2 C_b C_a^1/2 (same spectrum), which stays real and exact for singular covariances (fewer
    samples than dimensions) where a general matrix square root goes complex."""
    root = _sqrt_psd(a.cov)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ b.cov @ root), 0, None)).sum()
    distance = np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov) + np.trace(b.cov) - 2 * cross
    return float(max(distance, 0.0))


def _projection(rows: int) -> np.ndarray:
    """The fixed [rows, FEATURE_DIM] Gaussian projection (seeded: the same on every machine)."""
    rng = np.random.default_rng([PROJECTION_SEED, rows])
    return rng.standard_normal((rows, FEATURE_DIM)) / np.sqrt(FEATURE_DIM)


def _resized(images: np.ndarray) -> np.ndarray:
    """uint8 [N, R, R, 3] -> float [N, 64, 64, 3] in [0, 1] (box filter, so downscaling averages)."""
    if images.shape[1:3] == (STATS_SIZE, STATS_SIZE):
        return images.astype(np.float64) / 255
    box = Image.Resampling.BOX
    return np.stack([np.asarray(Image.fromarray(im).resize((STATS_SIZE, STATS_SIZE), box), np.float64)
                     for im in images]) / 255


def _cells(values: np.ndarray) -> np.ndarray:
    """[N, s, s, C] -> [N, GRID, GRID, s/GRID * s/GRID, C]: the pixels of each grid cell."""
    n, s, _, c = values.shape
    k = s // GRID
    return values.reshape(n, GRID, k, GRID, k, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, GRID, GRID, -1, c)


def statistics(images: np.ndarray) -> np.ndarray:
    """The raw statistics [N, 368]: per cell, the mean of luma and two opponent colours (48, once: a cell's
    mean is the same at every level), and per level and cell their standard deviation (48) and the mean
    |d/dx| and |d/dy| of luma (32). Each group is scaled by a fixed gain (GAINS) that gives it a spread of
    about 1 on procedural faces, so that no group drowns the others in the projection."""
    rgb = _resized(images)
    opponent = np.stack([rgb @ [0.299, 0.587, 0.114], rgb[..., 0] - rgb[..., 1],
                         (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]], axis=-1)  # [N, 64, 64, 3]
    rows = [_cells(opponent).mean(axis=3) * GAINS["mean"]]  # [N, G, G, 3]
    for level in range(LEVELS):
        luma = opponent[..., 0]
        dx = np.abs(np.diff(luma, axis=2, append=luma[:, :, -1:]))  # [N, s, s]
        dy = np.abs(np.diff(luma, axis=1, append=luma[:, -1:, :]))
        rows.append(_cells(opponent).std(axis=3) * GAINS["std"])  # [N, G, G, 3]
        gradient = _cells(np.stack([dx, dy], axis=-1)).mean(axis=3)  # [N, G, G, 2]
        rows.append(gradient * GAINS["gradient"][level])
        n, s = opponent.shape[:2]
        opponent = opponent.reshape(n, s // 2, 2, s // 2, 2, 3).mean(axis=(2, 4))
    return np.concatenate([r.reshape(len(images), -1) for r in rows], axis=1)


def stats_features(images: np.ndarray) -> np.ndarray:
    """The "stats" extractor: uint8 [N, R, R, 3] -> [N, FEATURE_DIM]."""
    raw = statistics(images)
    return raw @ _projection(raw.shape[1])


def regressor_features(regressor, device: str = "cpu", batch: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """The "regressor" extractor of a torch regressor (e.g. TorchEngine.composer.regressor)."""
    import torch

    from ..nets.tensors import images_from_uint8

    def extract(images: np.ndarray) -> np.ndarray:
        found = []
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                x = images_from_uint8(torch.from_numpy(images[start:start + batch])).to(device)
                known = torch.ones_like(x[:, :1])
                found.append(regressor.features(regressor.make_input(x, known)).double().cpu().numpy())
        raw = np.concatenate(found)
        return raw @ _projection(raw.shape[1])

    return extract
