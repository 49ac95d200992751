"""Real images for GAN training: procedural faces (rendered once, cached) or an image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data import faces


class ImageSource:
    """`batch(rng, n)` -> uint8 [n, size, size, 3], each image flipped left-right with probability 1/2."""

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def batch(self, rng: np.random.Generator, n: int) -> np.ndarray:
        indices = rng.integers(0, len(self), n)
        flips = rng.random(n) < 0.5
        images = [self.image(i) for i in indices]
        return np.stack([im[:, ::-1] if flip else im for im, flip in zip(images, flips, strict=True)])


class FaceSource(ImageSource):
    """`count` procedural faces with seeds 0..count-1, rendered once and cached as .npy under `cache`."""

    def __init__(self, size: int, count: int, cache: Path):
        path = Path(cache) / f"faces_{size}px_{count}.npy"
        if path.is_file():
            self.images = np.load(path, mmap_mode="r")
        else:
            rendered = np.stack([faces.render(seed, size).image
                                 for seed in tqdm(range(count), desc="rendering faces", unit="face")])
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, rendered)
            self.images = rendered

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        return self.images[index]


class FolderSource(ImageSource):
    def __init__(self, root: str | Path, size: int):
        from ..data.folder import ImageFolder

        self.folder = ImageFolder(root, size)

    def __len__(self) -> int:
        return len(self.folder)

    def image(self, index: int) -> np.ndarray:
        return self.folder[index]


def open_source(data: str, size: int, count: int, cache: Path) -> ImageSource:
    """"faces" for procedural faces, else the path of an image folder."""
    return FaceSource(size, count, cache) if data == "faces" else FolderSource(data, size)
