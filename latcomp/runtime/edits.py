"""Edits of real images at their own size: the one path from any-size layers (or an image with a hole) to the
model's square input and back. `Engine.composite` / `Engine.inpaint` and the gRPC server both go through it.

    layers --prepare--> canvas + union mask (the first layer's size) --> model input, R x R (stretched)
    engine.run --> result, R x R --finish--> the canvas size (default) or R x R --> known pixels pasted back

Images are uint8 arrays [H, W, 3] (or [H, W] gray, [H, W, 4] RGBA) or PIL images; masks are bool or uint8
arrays [H, W] (or [H, W, 1]) or PIL images, True / >= 128 = known. An RGBA image's alpha is its mask when
none is given. numpy and Pillow only (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PILImage

from .. import compose

CANVAS = "canvas"  # the output has the canvas's size: the first layer's, or the inpainted image's
MODEL = "model"  # the output is the model's R x R input size
SIZES = (CANVAS, MODEL)


class MaskRequired(ValueError):
    """An inpaint got neither a mask nor an image with an alpha channel: there is nothing to fill."""


@dataclass
class Edit:
    """One prepared edit: the canvas at its own size and what the model sees."""

    canvas: np.ndarray  # uint8 [H, W, 3], the layers pasted together (0 where no layer is known)
    canvas_mask: np.ndarray  # uint8 [H, W], 255 = known
    image: np.ndarray  # uint8 [R, R, 3], the canvas stretched to the model's size, unknown pixels 0
    mask: np.ndarray  # uint8 [R, R, 1]

    def output_shape(self, size: str) -> tuple[int, int]:
        """(height, width) of the result for `size`."""
        return self.canvas.shape[:2] if check_size(size) == CANVAS else self.image.shape[:2]


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"size must be 'canvas' (the image's own size) or 'model' (R x R), got {size!r}")
    return size


def prepare(layers: Sequence[compose.Layer], resolution: int) -> Edit:
    """Pastes the layers onto the canvas (the first layer's size) and makes the model's R x R input."""
    canvas, canvas_mask = compose.paste_layers(layers)
    image, mask = compose.to_model(canvas, canvas_mask, resolution)
    return Edit(canvas, canvas_mask, image, mask)


def finish(edit: Edit, result: np.ndarray, size: str = CANVAS, preserve_known: bool = False,
           feather: int | None = None) -> np.ndarray:
    """The model's R x R result at the output size, with the known pixels pasted back when asked
    (feather: edge width in output pixels, None = compose.default_feather, 0 = hard edge)."""
    if check_size(size) == CANVAS:
        result = compose.resize_image(result, *edit.canvas.shape[:2])
        known_image, known_mask = edit.canvas, edit.canvas_mask
    else:
        known_image, known_mask = edit.image, edit.mask[..., 0]
    if preserve_known:
        result = compose.paste_known(result, known_image, known_mask, feather)
    return result


# ---- arrays and PIL images in, checked -----------------------------------------------------------------


def as_uint8(picture: Any, what: str) -> np.ndarray:
    """A PIL image or an array as uint8 (bool -> 0/255); TypeError for any other dtype."""
    array = np.asarray(picture)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise TypeError(f"{what} must be uint8 (or a bool mask), got {array.dtype}")
    return array


def split_alpha(image: Any) -> tuple[Any, np.ndarray | None]:
    """An RGBA (LA, PA) array or PIL image -> (RGB array, alpha uint8 [H,W]); anything else as it is, None."""
    if isinstance(image, PILImage.Image) and (image.mode in ("RGBA", "LA", "PA") or
                                              (image.mode == "P" and "transparency" in image.info)):
        image = np.asarray(image.convert("RGBA"))  # as the server reads a PNG: a palette's transparency too
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3]), np.ascontiguousarray(image[..., 3])
    return image, None


def image_and_alpha(image: Any, what: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB uint8 [H,W,3], alpha uint8 [H,W] or None) from an array ([H,W,3], [H,W], [H,W,4]) or PIL image."""
    image, alpha = split_alpha(image)
    if isinstance(image, PILImage.Image):
        image = image.convert("RGB")
    array = as_uint8(image, what)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(f"{what} must be an image [H,W,3], [H,W] or [H,W,4], got shape {list(array.shape)}")
    return np.ascontiguousarray(array), alpha


def as_mask(mask: Any, shape: tuple[int, int], what: str = "mask") -> np.ndarray:
    """uint8 [H, W] (255 = known) from a bool/uint8 array [H, W] or [H, W, 1] or a PIL image, of `shape`."""
    if isinstance(mask, PILImage.Image):
        mask = mask.convert("L")
    array = as_uint8(mask, what)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.shape != tuple(shape):
        raise ValueError(f"{what} must have the image's shape [{shape[0]},{shape[1]}] (or [H,W,1]), "
                         f"got {list(array.shape)}")
    return np.ascontiguousarray(array)


def layer_parts(spec: Any) -> tuple[Any, Any | None, int, int]:
    """(image, mask, x, y) of a layer given as a compose.Layer, a tuple (image[, mask[, (x, y)]]) or a bare
    image (the forms Engine.composite and the gRPC clients take)."""
    if isinstance(spec, compose.Layer):
        return spec.image, spec.mask, spec.x, spec.y
    if isinstance(spec, tuple):
        x, y = spec[2] if len(spec) > 2 else (0, 0)
        return spec[0], spec[1] if len(spec) > 1 else None, int(x), int(y)
    return spec, None, 0, 0


def as_layer(spec: Any, what: str = "layer") -> compose.Layer:
    """A layer in any form layer_parts takes -> a checked compose.Layer.
    A layer without a mask uses its image's alpha, else every pixel of it is known."""
    image, mask, x, y = layer_parts(spec)
    rgb, alpha = image_and_alpha(image, f"{what} image")
    if mask is not None:
        alpha = as_mask(mask, rgb.shape[:2], f"{what} mask")
    return compose.Layer(rgb, alpha, int(x), int(y))


def inpaint_layer(image: Any, mask: Any | None) -> compose.Layer:
    """The one layer of an inpaint: the mask given, else the image's alpha; MaskRequired without either."""
    layer = as_layer((image, mask), "inpaint")
    if layer.mask is None:
        raise MaskRequired("inpaint needs a mask (255 or True = known, 0 = fill) or an image with an alpha "
                           "channel marking the pixels to fill")
    return layer
