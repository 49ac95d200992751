"""NullEngine: a real Engine that computes nothing, for measuring the serving path on its own.

`latcomp serve --backend null` and `latcomp bench serve --backend null` (alias `--engine null`) serve a
bundle with it: the server decodes, batches, pastes back and encodes exactly as with a real engine, but
each engine call returns at once (the composite answers its own input image, latents and samples are
zeros, all correctly shaped). What the benchmark then measures is the server's own ceiling. It is a
benchmarking tool: its images are not edits.
"""

from __future__ import annotations

import numpy as np

from .bundle import Bundle
from .engine import Engine


class NullEngine(Engine):
    backend = "null"

    def __init__(self, bundle: Bundle, device: str = "cpu", max_batch: int | None = None):
        super().__init__(bundle, device, "fp32", max_batch)

    def _latents(self, count: int) -> np.ndarray:
        return np.zeros((count, *self.latent_shape), np.float32)

    def _compose(self, images: np.ndarray, masks: np.ndarray, realism: np.ndarray):
        return images, self._latents(len(images))

    def _generate(self, latents: np.ndarray) -> np.ndarray:
        return np.zeros((len(latents), self.resolution, self.resolution, 3), np.uint8)

    def _sample_latents(self, z: np.ndarray, truncation: np.ndarray) -> np.ndarray:
        return self._latents(len(z))
