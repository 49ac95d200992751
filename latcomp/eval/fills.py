"""Model-free fills of the unknown pixels (numpy): the baselines every learned method has to beat.

All take images uint8 [N, R, R, 3] (anything under the hole is ignored) and masks uint8 [N, R, R]
(>= 128 = known) and return uint8 [N, R, R, 3] with the known pixels untouched:
  - `collage_fill`: the input as the regressor receives it, holes black;
  - `mean_fill`: holes painted with the mean colour of the image's known pixels;
  - `diffusion_fill`: the membrane (Laplace) interpolation of the hole from its border, i.e. a Poisson fill
    with a zero guidance field, the classical "smooth blend" of image editing.
"""

from __future__ import annotations

import numpy as np

from .inpainting import collage_fill, mean_fill

JACOBI_ITERATIONS = 40  # per pyramid level; the coarse level's solution is already close


def _pull(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 sums of weighted colour and of weight: [N, h, w, 3], [N, h, w] -> [N, h/2, w/2, ...]."""
    n, h, w = weights.shape
    summed = (values * weights[..., None]).reshape(n, h // 2, 2, w // 2, 2, 3).sum(axis=(2, 4))
    weight = weights.reshape(n, h // 2, 2, w // 2, 2).sum(axis=(2, 4))
    return summed / np.maximum(weight, 1e-12)[..., None], weight


def _relax(guess: np.ndarray, values: np.ndarray, known: np.ndarray, iterations: int) -> np.ndarray:
    """Jacobi sweeps of Laplace's equation on the unknown pixels; known pixels hold their values, and the
    image border reflects (no flux), so the fill depends on the hole's border only."""
    u = np.where(known[..., None], values, guess)
    for _ in range(iterations):
        padded = np.pad(u, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        neighbours = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:])
        u = np.where(known[..., None], values, neighbours / 4)
    return u


def _membrane(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Coarse-to-fine Laplace fill: pull known colours down a pyramid (a coarse pixel is known when any of
    its fine pixels is), solve the coarsest level from the mean, then upsample as the next level's guess
    and relax. Jacobi alone would need O(R^2) sweeps to carry colour across a large hole."""
    weights = known.astype(np.float64)
    if weights.shape[1] % 2 or weights.shape[2] % 2 or weights.shape[1] <= 4:
        count = np.maximum(weights.sum(axis=(1, 2)), 1)[:, None]  # [N, 1]
        mean = (values * weights[..., None]).sum(axis=(1, 2)) / count
        guess = np.broadcast_to(mean[:, None, None, :], values.shape)
        return _relax(guess, values, known, JACOBI_ITERATIONS)
    coarse_values, coarse_weights = _pull(values, weights)
    coarse = _membrane(coarse_values, coarse_weights > 0)
    guess = coarse.repeat(2, axis=1).repeat(2, axis=2)  # [N, h, w, 3]
    return _relax(guess, values, known, JACOBI_ITERATIONS)


def diffusion_fill(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    known = masks >= 128  # [N, R, R]
    filled = _membrane(images.astype(np.float64), known)
    # an image with no known pixel at all has nothing to diffuse: mid grey
    filled[~known.any(axis=(1, 2))] = 127.5
    return np.where(known[..., None], images, np.clip(np.round(filled), 0, 255)).astype(np.uint8)


__all__ = ["collage_fill", "diffusion_fill", "mean_fill"]
