"""Building model inputs from parts and putting results back (numpy and Pillow, no torch).

Images are uint8 [H, W, 3] RGB; masks are uint8 [H, W] with 255 = known and 0 = to be filled (any value
>= 128 counts as known). The flow of one edit:

    layers --paste_layers--> canvas + union mask --to_model--> R x R input --engine--> R x R result
    result --resize_image--> output size --paste_known (optional)--> output
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

KNOWN = 128  # mask values >= KNOWN are known pixels


@dataclass
class Layer:
    """One part of a collage: pixels, which of them are known (None = all), and where they go."""

    image: np.ndarray  # uint8 [h, w, 3]
    mask: np.ndarray | None = None  # uint8 [h, w], 255 = known
    x: int = 0  # canvas column of the layer's left edge (may be negative)
    y: int = 0  # canvas row of the layer's top edge (may be negative)


def known(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: which pixels a uint8 mask marks as known."""
    return mask >= KNOWN


def paste_layers(layers: Sequence[Layer]) -> tuple[np.ndarray, np.ndarray]:
    """Pastes layers in order onto a canvas the size of the first layer.

    Later layers cover earlier ones where their own mask is known; parts outside the canvas are clipped.
    Returns (canvas uint8 [H, W, 3], union mask uint8 [H, W] in {0, 255}); canvas pixels no layer
    covers are 0.
    """
    if not layers:
        raise ValueError("paste_layers needs at least one layer")
    height, width = layers[0].image.shape[:2]
    canvas = np.zeros((height, width, 3), np.uint8)
    union = np.zeros((height, width), bool)
    for layer in layers:
        h, w = layer.image.shape[:2]
        top, left = max(layer.y, 0), max(layer.x, 0)
        bottom, right = min(layer.y + h, height), min(layer.x + w, width)
        if bottom <= top or right <= left:
            continue  # entirely off the canvas
        src = np.s_[top - layer.y : bottom - layer.y, left - layer.x : right - layer.x]
        dst = np.s_[top:bottom, left:right]
        if layer.mask is None:
            canvas[dst] = layer.image[src]
            union[dst] = True
        else:
            cover = known(layer.mask[src])
            np.copyto(canvas[dst], layer.image[src], where=cover[..., None])
            union[dst] |= cover
    return canvas, union.astype(np.uint8) * 255


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _resize_axis(image: PILImage.Image, size: tuple[int, int]) -> PILImage.Image:
    """One axis changes: BOX (exact area averaging) where it shrinks, BILINEAR (half-pixel centres) where
    it grows. Pillow applies one filter to both axes, so resize_image does the axes one at a time."""
    grows = size[0] > image.width or size[1] > image.height
    return image.resize(size, PILImage.Resampling.BILINEAR if grows else PILImage.Resampling.BOX)


def _resize_channel(channel: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] -> uint8 [height, width]. The axis whose pass leaves the smaller intermediate goes first
    (rows first on a 1 x 16M canvas would grow it to R x 16M before the columns shrink it)."""
    image = PILImage.fromarray(channel)
    if height * image.width <= image.height * width:  # rows first
        return np.asarray(_resize_axis(_resize_axis(image, (image.width, height)), (width, height)))
    return np.asarray(_resize_axis(_resize_axis(image, (width, image.height)), (width, height)))


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [height, width, C]: area averaging to shrink, bilinear to grow (Pillow), per
    axis. Channels are resized one by one: Pillow would premultiply an RGBA image's colours by its alpha."""
    if image.shape[:2] == (height, width):
        return image.copy()
    channels = [_resize_channel(np.ascontiguousarray(image[..., c]), height, width)
                for c in range(image.shape[2])]
    return np.stack(channels, axis=-1)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] -> uint8 [height, width] in {0, 255}: resampled like an image, then thresholded."""
    binary = known(mask).astype(np.uint8) * 255
    if mask.shape == (height, width):
        return binary
    return (_resize_channel(binary, height, width) >= KNOWN).astype(np.uint8) * 255


def to_model(canvas: np.ndarray, mask: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The engine's inputs for one canvas: (image uint8 [R, R, 3], mask uint8 [R, R, 1]).

    A non-square canvas is stretched to the square model input (and stretched back by resize_image on the
    way out); unknown pixels are zeroed so what the model sees does not depend on what lies under holes.
    """
    image = resize_image(canvas, resolution, resolution)
    model_mask = resize_mask(mask, resolution, resolution)
    image[~known(model_mask)] = 0
    return image, model_mask[..., None]


def _box_sum(array: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Sum over a (2*radius+1) window along axis (0 or 1), edges extended (the image border is not a hole)."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius + 1, radius)  # one more in front, so window i is sums[i + 2r + 1] - sums[i]
    sums = np.cumsum(np.pad(array, pad, mode="edge"), axis=axis, dtype=array.dtype)
    window, length = 2 * radius + 1, array.shape[axis]
    if axis == 0:
        return sums[window : window + length] - sums[:length]
    return sums[:, window : window + length] - sums[:, :length]


def feather_alpha(mask: np.ndarray, width: int) -> np.ndarray:
    """float32 [H, W] weights of the known pixels: 1 deep inside the known region, ramping to 0 at its edge.

    Two box blurs of radius ~width/2 make a tent of half-width ~width; 2*blur - 1 is then 0 on a straight
    edge and 1 at `width` pixels inside it, and 0 everywhere outside the known region. The blurs are
    integer window sums, so "deep inside" is exactly 1.
    """
    inside = known(mask)
    if width <= 0:
        return inside.astype(np.float32)
    radius = max(1, (width + 1) // 2)
    total = (2 * radius + 1) ** 4  # the largest window sum
    sums = inside.astype(np.int32 if total < 2**31 else np.int64)
    for _ in range(2):
        sums = _box_sum(_box_sum(sums, radius, 0), radius, 1)
    blurred = sums.astype(np.float32) / np.float32(total)
    return np.clip(2 * blurred - 1, 0, 1) * inside


def default_feather(height: int, width: int) -> int:
    return max(1, round(min(height, width) / 32))


def paste_known(
    result: np.ndarray, image: np.ndarray, mask: np.ndarray, feather: int | None = None
) -> np.ndarray:
    """Puts the known pixels of image (mask 255) back over result, blending across a feathered edge.

    All three at the same size: result, image uint8 [H, W, 3], mask uint8 [H, W]; feather in pixels
    (None: default_feather, 0: hard edge).
    """
    if result.shape != image.shape or mask.shape != image.shape[:2]:
        raise ValueError(f"paste_known: result {result.shape}, image {image.shape}, mask {mask.shape} differ")
    width = default_feather(*mask.shape) if feather is None else feather
    alpha = feather_alpha(mask, width)[..., None]
    blend = result.astype(np.float32)
    blend += alpha * (image.astype(np.float32) - blend)
    return _to_uint8(blend)
