"""The Engine base class: what every backend (ort, trt, torch) shares.

The public calls: `run` (the low-level batch call on model-size arrays), `composite` and `inpaint` (real
images at their own size, through runtime.edits exactly as the gRPC server does), `generate` and `sample`.
It validates inputs (ValueError saying what was expected), splits any batch into chunks of at most
`max_batch`, turns seeds into Gaussian z, and is a context manager. A backend implements three methods,
each called with at most `max_batch` samples of already validated, C-contiguous arrays:
  - `_compose(images uint8 [n,R,R,3], masks uint8 [n,R,R,1], realism float32 [n]) -> (uint8 [n,R,R,3],
    float32 [n,*latent_shape])`   (the composer graph)
  - `_generate(latents float32 [n,*latent_shape]) -> uint8 [n,R,R,3]`   (the generator graph)
  - `_sample_latents(z float32 [n,z_dim], truncation float32 [n]) -> float32 [n,*latent_shape]`   (sampler)
and, when it holds resources, `_release()` (called once by close()).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from . import edits
from .bundle import Bundle

MAX_SEED = 2**32 - 1  # numpy.random.RandomState accepts seeds in [0, 2**32)


def parse_device(device: str) -> str:
    """"cpu", "cuda" or "cuda:N" -> "cpu" or "cuda:N"."""
    text = str(device).strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda":
        return "cuda:0"
    if text.startswith("cuda:") and text[5:].isdigit():
        return f"cuda:{int(text[5:])}"
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def device_index(device: str) -> int:
    """The N of "cuda:N" (0 for "cpu")."""
    return int(device.split(":")[1]) if ":" in device else 0


class Engine:
    backend: str = ""
    providers: list[str] | None = None  # set by the ort backend

    def __init__(self, bundle: Bundle, device: str, precision: str, max_batch: int | None = None):
        manifest = bundle.manifest
        self.bundle = bundle
        self.manifest = manifest
        self.name = manifest["name"]
        self.version = manifest["version"]
        self.resolution = bundle.resolution
        self.latent_shape = bundle.latent_shape
        self.z_dim = bundle.z_dim
        self.device = device
        self.precision = precision
        self.max_batch = int(max_batch or manifest["max_batch"])
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self.closed = False

    # ---- the public API ----

    def run(self, images: np.ndarray, masks: np.ndarray, realism: float | np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """Completes the unknown parts (mask 0) of `images`: (uint8 [N,R,R,3], float32 latents [N,*L])."""
        r = self.resolution
        images = _checked(images, "images", np.uint8, (r, r, 3))
        if isinstance(masks, np.ndarray) and masks.ndim == 3:
            masks = masks[..., None]
        masks = _checked(masks, "masks", np.uint8, (r, r, 1), "[N,R,R,1] or [N,R,R]")
        if len(masks) != len(images):
            raise ValueError(f"masks has {len(masks)} entries but images has {len(images)}")
        realism = self._per_sample(realism, len(images), "realism", default=0.0)
        if np.any((realism < 0) | (realism > 1)):
            raise ValueError(f"realism must lie in [0, 1], got values from {realism.min()} to "
                             f"{realism.max()}")
        return self._in_chunks(self._compose, (self._no_images(), self._no_latents()), images, masks, realism)

    def composite(self, layers: Sequence, size: str = edits.CANVAS, realism: float = 0.0,
                  preserve_known: bool = False, feather: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Composes real images of any size: the layers are pasted in order onto a canvas the size of the
        first, the model fills and blends the collage, and the result comes back at the canvas size
        (size="model": R x R). Each layer is an image (uint8 array [H,W,3], [H,W] or RGBA [H,W,4], or a
        PIL image), a tuple (image, mask) or (image, mask, (x, y)), or a compose.Layer; a mask is bool or
        uint8 [H,W] (True / 255 = known); without one the image's alpha, else the whole layer, is known.
        preserve_known pastes the known pixels back over the result (feathered by `feather` pixels;
        None = 1/32 of the shorter side). Returns (image uint8 [H,W,3], latent float32 [*latent_shape]):
        exactly what the gRPC Composite answers."""
        layers = [edits.as_layer(spec, f"layers[{index}]") for index, spec in enumerate(layers)]
        return self._edit(layers, size, realism, preserve_known, feather)

    def inpaint(self, image, mask=None, size: str = edits.CANVAS, realism: float = 0.0,
                preserve_known: bool = False, feather: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fills the pixels of `image` (any size) that `mask` marks unknown (False / 0); without a mask the
        image's alpha channel is the mask, and an image without one raises edits.MaskRequired (a
        ValueError). Options and result as in composite."""
        return self._edit([edits.inpaint_layer(image, mask)], size, realism, preserve_known, feather)

    def _edit(self, layers: list, size: str, realism: float, preserve_known: bool, feather: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
        edits.check_size(size)
        edit = edits.prepare(layers, self.resolution)
        images, latents = self.run(edit.image[None], edit.mask[None], realism)
        return edits.finish(edit, images[0], size, preserve_known, feather), latents[0]

    def generate(self, latents: np.ndarray) -> np.ndarray:
        """Images uint8 [N,R,R,3] for latents float32 [N,*latent_shape]."""
        latents = _checked(latents, "latents", np.float32, self.latent_shape)
        return self._in_chunks(self._generate, self._no_images(), latents)

    def sample(self, seeds: Sequence[int], truncation: float | np.ndarray = 1.0
               ) -> tuple[np.ndarray, np.ndarray]:
        """Random images from seeds: z for seed s is RandomState(s).standard_normal(z_dim) (the reference
        samplers' convention), truncated toward the average latent. Returns (images, latents)."""
        seeds = list(seeds)
        bad = [seed for seed in seeds if isinstance(seed, bool) or not isinstance(seed, int | np.integer)
               or not 0 <= seed <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must be integers in [0, 2**32), got {bad[:5]}")
        z = np.zeros((len(seeds), self.z_dim), np.float32)
        for row, seed in enumerate(seeds):
            z[row] = np.random.RandomState(seed).standard_normal(self.z_dim)
        truncation = self._per_sample(truncation, len(seeds), "truncation", default=1.0)
        latents = self._in_chunks(self._sample_latents, self._no_latents(), z, truncation)
        return self.generate(latents), latents

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._release()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name} {self.version}: backend={self.backend} "
                f"device={self.device} precision={self.precision} max_batch={self.max_batch}>")

    @property
    def concurrency(self) -> int:
        """Calls that may usefully run at once (from different threads); the Batcher keeps this many
        engine calls in flight. 1 unless a backend holds several instances."""
        return 1

    # ---- backend hooks ----

    def _compose(self, images: np.ndarray, masks: np.ndarray, realism: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _generate(self, latents: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _sample_latents(self, z: np.ndarray, truncation: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _release(self) -> None:
        """Frees what the backend holds (sessions, contexts, device memory)."""

    # ---- helpers ----

    def _per_sample(self, value, count: int, what: str, default: float) -> np.ndarray:
        """None, a number or an array [count] -> finite float32 [count]."""
        array = np.asarray(default if value is None else value, dtype=np.float32)
        if array.ndim == 0:
            array = np.full(count, array, np.float32)
        if array.shape != (count,):
            raise ValueError(f"{what} must be a number or an array of shape [{count}], "
                             f"got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what} must be finite")
        return array

    def _no_images(self) -> np.ndarray:
        return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)

    def _no_latents(self) -> np.ndarray:
        return np.zeros((0, *self.latent_shape), np.float32)

    def _in_chunks(self, step: Callable, empty, *arrays: np.ndarray):
        """Runs `step` on slices of at most max_batch samples and concatenates what it returns (`empty` for
        an empty batch, without calling it)."""
        if self.closed:
            raise RuntimeError(f"{self!r} is closed")
        count = len(arrays[0])
        if count == 0:
            return empty
        parts = [step(*(np.ascontiguousarray(a[start:start + self.max_batch]) for a in arrays))
                 for start in range(0, count, self.max_batch)]
        if isinstance(parts[0], tuple):
            return tuple(np.concatenate(column) for column in zip(*parts, strict=True))
        return np.concatenate(parts)


def _checked(array, what: str, dtype, sample_shape: tuple, shape_text: str | None = None) -> np.ndarray:
    """`array` as a numpy array [N, *sample_shape] of `dtype`, or a ValueError saying what was expected."""
    expected = shape_text or "[N," + ",".join(str(d) for d in sample_shape) + "]"
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{what} must be a numpy array {np.dtype(dtype).name} {expected}, "
                         f"got {type(array).__name__}")
    if array.dtype != dtype:
        raise ValueError(f"{what} must have dtype {np.dtype(dtype).name}, got {array.dtype} "
                         f"(shape {expected})")
    if array.ndim != len(sample_shape) + 1 or tuple(array.shape[1:]) != tuple(sample_shape):
        raise ValueError(f"{what} must have shape {expected}, got {list(array.shape)}")
    return array
