"""Realism as a Fréchet distance between feature distributions (numpy; the "regressor" and "inception"
features use torch).

FD(a, b) = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2), the Fréchet (2-Wasserstein)
distance between Gaussians fitted to two feature sets: FID when the features are InceptionV3's pool3.
Three extractors:
  - "stats" (default): a fixed, seeded random projection of multi-scale colour and gradient statistics
    on a 4x4 grid (the spatial layout of colour and of edges at four scales). Bundle-independent and
    deterministic, so numbers compare across bundles and runs; blind to anything finer than those
    statistics (texture identity, semantic plausibility), which InceptionV3 would see.
  - "regressor": the bundle's own regressor trunk (spatial mean of its last stage, image fed fully
    known), projected the same way. Semantic for this domain, but tied to the bundle (not comparable
    across bundles) and trained with the generator it is asked to judge.
  - "inception": InceptionV3 pool3 (2048-d, latcomp.eval.inception) from weights the user supplies
    (pytorch-fid's FID network or torchvision's; latcomp neither downloads nor ships them). FID-style,
    but with few samples per method in 2048 dimensions the FD is strongly biased upward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .inception import InceptionV3

FEATURE_DIM = 32  # few samples per method: the covariance must stay estimable (bias grows with dim/count)
PROJECTION_SEED = 20_240_601
STATS_SIZE = 64  # every image is resized to this before the statistics, whatever the bundle's resolution
GRID = 4  # statistics are pooled over GRID x GRID cells
LEVELS = 4  # 64, 32, 16 and 8 px
# 1 / the spread (std over images, averaged over cells) of each group on 512 procedural faces
GAINS = {"mean": 7.0, "std": 22.0, "gradient": (30.0, 18.0, 11.0, 7.0)}
EXTRACTORS = ("stats", "regressor", "inception")
CAVEATS = {
    "stats": "Realism is a Fréchet distance on a fixed random projection of multi-scale colour and gradient "
             "statistics (not InceptionV3): it sees colour layout, holes and blur, not semantics; compare "
             "methods within one run, not with published FIDs.",
    "regressor": "Realism is a Fréchet distance on the bundle's own regressor trunk features (not "
                 "InceptionV3): not comparable across bundles, and the regressor was trained alongside the "
                 "generator it judges.",
    "inception": "Realism is an FID-style Fréchet distance on InceptionV3 pool3 features (2048-d) from the "
                 "weights given, but with only a few images per method in 2048 dimensions the distance is "
                 "strongly biased upward (compare methods against the FD floor of the same run), it is not "
                 "comparable with published FIDs (typically on 50,000 images), and small images (e.g. 64 px) "
                 "are upsampled to 299x299, far from the photographs Inception was trained on.",
}


@dataclass(frozen=True)
class Gaussian:
    mean: np.ndarray  # [D]
    cov: np.ndarray  # [D, D]
    count: int
    centred: np.ndarray | None = None  # [count, D] the samples minus their mean, when fit from samples


def fit(features: np.ndarray) -> Gaussian:
    """Mean and (unbiased) covariance of features [N, D], keeping the centred samples."""
    features = np.asarray(features, np.float64)
    if len(features) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 samples per set, got {len(features)}")
    mean = features.mean(axis=0)
    return Gaussian(mean, np.cov(features, rowvar=False), len(features), features - mean)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _cross_term(a: Gaussian, b: Gaussian) -> float:
    """tr((C_a C_b)^1/2): the sum of the square roots of the eigenvalues of the symmetric C_a^1/2 C_b C_a^1/2
    (same spectrum), which stays real and exact for singular covariances (fewer samples than dimensions)
    where a general matrix square root goes complex. With C = X^T X / (n - 1) for the centred samples X,
    that spectrum is also the squared singular values of X_a X_b^T / sqrt((n_a - 1)(n_b - 1)), an
    [n_a, n_b] matrix: used when it is smaller than a covariance, since few samples in many dimensions
    (2048 for InceptionV3) would otherwise pay two O(D^3) eigendecompositions per distance."""
    if a.centred is not None and b.centred is not None and a.count * b.count <= len(a.mean) ** 2:
        singular = np.linalg.svd(a.centred @ b.centred.T, compute_uv=False)
        return float(singular.sum() / np.sqrt((a.count - 1) * (b.count - 1)))
    root = _sqrt_psd(a.cov)
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(root @ b.cov @ root), 0, None)).sum())


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    """|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^1/2), clipped at 0 against rounding."""
    distance = np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov) + np.trace(b.cov) - 2 * _cross_term(a, b)
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


@dataclass
class InceptionFeatures:
    """The "inception" extractor: uint8 [N, R, R, 3] -> InceptionV3 pool3 [N, 2048]; `weights` (the file
    name) and `variant` ("pytorch-fid" or "torchvision") say which network made the numbers."""

    network: InceptionV3  # on its device, in eval mode
    weights: str
    batch: int

    @property
    def variant(self) -> str:
        return self.network.variant

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from .inception import pool3_features

        return pool3_features(self.network, images, batch=self.batch)


def inception_features(weights_path: str | Path, device: str = "cpu", batch: int = 16) -> InceptionFeatures:
    """The "inception" extractor of a weights file (loaded and checked now: FileNotFoundError, ValueError)."""
    from .inception import load_inception

    return InceptionFeatures(load_inception(weights_path, device=device), Path(weights_path).name, batch)
