"""A folder of images as a square-image dataset (numpy + Pillow; no torch, so serving code can use it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..compose import resize_image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> "RGB". Transparent images are composited over `background` (dropping alpha
    would expose whatever colour the transparent pixels happen to hold); 16/32-bit greyscale is rescaled."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(flat, rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is `size`, then crop the centre size x size. The resize is the serving
    path's (compose.resize_image: area averaging down, bilinear up), so the regressor trains on images
    downsampled exactly as the photos it is served."""
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = Image.fromarray(resize_image(np.asarray(image), new_h, new_w))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


class ImageFolder:
    """Images under `root` (recursively, sorted by relative path, so the order is the same on every
    machine), each returned as uint8 [size, size, 3] RGB."""

    def __init__(self, root: str | Path, size: int, flip: bool = False,
                 extensions: tuple[str, ...] = EXTENSIONS):
        self.root = Path(root)
        self.size = int(size)
        self.flip = flip
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist or is not a directory")
        found = (p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in self.extensions)
        self.paths = sorted(found, key=lambda p: p.relative_to(self.root).as_posix())
        if not self.paths:
            raise FileNotFoundError(f"no images in {str(self.root)!r} (searched recursively for extensions "
                                    f"{', '.join(self.extensions)})")

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Image `index` as uint8 [size, size, 3]; mirrored left-right with probability 1/2 when the
        folder was made with flip=True and an `rng` is given."""
        path = self.paths[index]  # IndexError for out-of-range indices, as a sequence should
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # camera JPEGs store rotation as a tag
            array = np.asarray(resize_center_crop(to_rgb(image), self.size))
        if self.flip and rng is not None and rng.random() < 0.5:
            array = array[:, ::-1]
        return np.ascontiguousarray(array)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.load(index)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, size={self.size}, {len(self)} images)"
