"""One browser's layers and the collage an edit makes of them (numpy, no torch, no web framework).

A layer's source pixels arrive once (an opened file, a procedural face, a sample); its painted mask arrives
whenever it changed; every edit then places each layer on a square canvas: a size in pixels and a top-left
corner. `Session.collage(edit)` validates all of that against the service's limits and returns the
`compose.Layer`s, in paint order, for the runtime's shared composition path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import compose
from ..service.admission import echo
from ..service.codec import Limits

MAX_SOURCE_SIDE = 512  # layers are kept at most this many pixels a side: masks travel with every stroke
CANVAS_SIDES = (64, 128, 256, 512)  # output sizes the page offers (the model's own size is always allowed)
MAX_SCALE = 3  # a layer is placed at most this many canvas sides wide or tall (the page's 300 %)
# What one tab may hold, whatever the service's limits: source pixels (RGB + mask, 4 bytes each), and placed
# pixels (the resized copies kept between edits): 16 full-size layers each, ~17 MB.
MAX_HELD_PIXELS = 16 * MAX_SOURCE_SIDE**2
MAX_PLACED_PIXELS = 16 * MAX_SOURCE_SIDE**2


class EditError(ValueError):
    """An edit or upload the studio refuses; str(error) is shown to the user."""


@dataclass(eq=False)
class SourceLayer:
    """A layer's pixels at source size, its painted mask, and the last placement's resized copies."""

    image: np.ndarray  # uint8 [h, w, 3]
    mask: np.ndarray  # uint8 [h, w], >= 128 = this layer contributes the pixel
    origin: dict = field(default_factory=dict)  # {"face": seed}, {"sample": seed, ...} or {"file": name}
    _placed: tuple | None = None  # (height, width, image, mask) resized for the last edit

    def placed(self, height: int, width: int, mask_changed: bool) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask) resized to height x width, reusing the last resize while neither changed."""
        cached = self._placed
        if cached is None or cached[:2] != (height, width):
            image = compose.resize_image(self.image, height, width)
            self._placed = (height, width, image, compose.resize_mask(self.mask, height, width))
        elif mask_changed:
            self._placed = (height, width, cached[2], compose.resize_mask(self.mask, height, width))
        return self._placed[2], self._placed[3]


def fit_source(image: np.ndarray) -> np.ndarray:
    """An uploaded image shrunk (area averaging) to at most MAX_SOURCE_SIDE a side, aspect kept."""
    height, width = image.shape[:2]
    scale = MAX_SOURCE_SIDE / max(height, width)
    if scale >= 1:
        return image
    return compose.resize_image(image, max(1, round(height * scale)), max(1, round(width * scale)))


def placed_pixels(edit: dict, max_layers: int) -> tuple[int, int]:
    """(pixels of the layers as placed, canvas side) an edit asks for, read leniently from its header
    before anything is validated (what admission charges; `Session.collage` refuses what is malformed)."""
    layers = edit.get("layers")
    placed = 0
    for placement in layers[:max_layers] if isinstance(layers, list) else ():
        sizes = (placement.get("width"), placement.get("height")) if isinstance(placement, dict) else ()
        if len(sizes) == 2 and all(type(n) is int and n > 0 for n in sizes):
            placed += sizes[0] * sizes[1]
    size = edit.get("size")
    side = size if type(size) is int and 0 < size <= max(CANVAS_SIDES) else max(CANVAS_SIDES)
    return min(placed, MAX_PLACED_PIXELS), side


def _integer(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EditError(f"{what}: expected an integer, got {echo(value)}")
    if value != int(value) or not low <= value <= high:
        raise EditError(f"{what}: {echo(value)} is not an integer in [{low}, {high}]")
    return int(value)


def _number(value, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise EditError(f"{what}: {echo(value)} is not a number in [{low}, {high}]")
    return float(value)


@dataclass(frozen=True)
class EditOptions:
    size: int  # the square canvas side, which is also the output size
    realism: float
    preserve_known: bool


class Session:
    """The layers of one connection, keyed by the ids the page gives them."""

    def __init__(self, limits: Limits, resolution: int):
        self.limits = limits
        self.resolution = resolution
        self.layers: dict[str, SourceLayer] = {}
        self.last_collage: tuple[np.ndarray, np.ndarray] | None = None  # (canvas, mask) of the last edit

    def _pixels_held(self) -> int:
        return sum(layer.image.shape[0] * layer.image.shape[1] for layer in self.layers.values())

    def add(self, layer_id, image: np.ndarray, mask: np.ndarray | None, origin: dict) -> SourceLayer:
        if not isinstance(layer_id, str) or not 0 < len(layer_id) <= 64:
            raise EditError(f"layer id: expected a short string, got {echo(layer_id)}")
        if layer_id not in self.layers and len(self.layers) >= self.limits.max_layers:
            raise EditError(f"at most {self.limits.max_layers} layers")
        image = fit_source(image)
        if mask is None:
            mask = np.full(image.shape[:2], 255, np.uint8)
        elif mask.shape != image.shape[:2]:
            mask = compose.resize_mask(mask, *image.shape[:2])
        self.layers.pop(layer_id, None)
        budget = min(MAX_HELD_PIXELS, self.limits.max_total_pixels)
        if self._pixels_held() + image.shape[0] * image.shape[1] > budget:
            raise EditError(f"the layers would hold more than {budget} pixels in all: remove a layer first")
        layer = SourceLayer(np.ascontiguousarray(image), np.ascontiguousarray(mask), origin)
        self.layers[layer_id] = layer
        return layer

    def remove(self, layer_id) -> None:
        if self.layers.pop(layer_id, None) is None:
            raise EditError(f"unknown layer {echo(layer_id)}")

    def options(self, edit: dict) -> EditOptions:
        size = _integer(edit.get("size"), "size", 1, max(CANVAS_SIDES))
        if size not in (*CANVAS_SIDES, self.resolution):
            raise EditError(f"size: {size} is not one of {sorted({*CANVAS_SIDES, self.resolution})}")
        realism = _number(edit.get("realism", 0.0), "realism", 0.0, 1.0)
        return EditOptions(size, realism, bool(edit.get("preserve_known", False)))

    def collage(self, edit: dict, masks: list[bytes]) -> tuple[EditOptions, list[compose.Layer]]:
        """An edit message -> (options, the layers to paste in order, the first an empty canvas).

        edit["layers"]: [{"id", "x", "y", "width", "height", "mask": index into masks or absent,
        "mask_rect": [x, y, width, height] or absent}], bottom first; a mask part is the layer's painted
        mask at source size, one byte a pixel (>= 128 = known): all of it, or only the rectangle given.
        """
        options = self.options(edit)
        placements = edit.get("layers")
        if not isinstance(placements, list):
            raise EditError("layers: expected a list")
        if len(placements) > self.limits.max_layers:
            raise EditError(f"layers: {len(placements)} layers exceed the limit of {self.limits.max_layers}")
        side = options.size
        blank = np.zeros((side, side, 3), np.uint8)
        layers = [compose.Layer(blank, np.zeros((side, side), np.uint8))]  # the canvas: nothing known yet
        total = 0
        reach = MAX_SCALE * side  # how large a layer may be, and how far outside the canvas it may sit
        budget = min(MAX_PLACED_PIXELS, self.limits.max_total_pixels)
        for index, placement in enumerate(placements):
            what = f"layers[{index}]"
            if not isinstance(placement, dict) or placement.get("id") not in self.layers:
                raise EditError(f"{what}: unknown layer")
            source = self.layers[placement["id"]]
            width = _integer(placement.get("width"), f"{what}.width", 1, reach)
            height = _integer(placement.get("height"), f"{what}.height", 1, reach)
            x = _integer(placement.get("x"), f"{what}.x", -reach, reach)
            y = _integer(placement.get("y"), f"{what}.y", -reach, reach)
            total += width * height
            if width * height > self.limits.max_pixels or total > budget:
                raise EditError(f"{what}: the placed layers exceed {budget} pixels in all")
            changed = placement.get("mask") is not None
            if changed:
                number = _integer(placement["mask"], f"{what}.mask", 0, len(masks) - 1)
                self._update_mask(source, masks[number], placement.get("mask_rect"), what)
            image, mask = source.placed(height, width, changed)
            layers.append(compose.Layer(image, mask, x, y))
        return options, layers

    @staticmethod
    def _update_mask(source: SourceLayer, data: bytes, rect, what: str) -> None:
        """The layer's mask replaced whole (rect None), or in the rectangle [x, y, width, height]."""
        height, width = source.mask.shape
        if rect is None:
            x, y, w, h = 0, 0, width, height
        elif not isinstance(rect, list) or len(rect) != 4:
            raise EditError(f"{what}.mask_rect: expected [x, y, width, height]")
        else:
            x = _integer(rect[0], f"{what}.mask_rect x", 0, width - 1)
            y = _integer(rect[1], f"{what}.mask_rect y", 0, height - 1)
            w = _integer(rect[2], f"{what}.mask_rect width", 1, width - x)
            h = _integer(rect[3], f"{what}.mask_rect height", 1, height - y)
        if len(data) != w * h:
            raise EditError(f"{what}.mask: {len(data)} bytes, expected {w}x{h} = {w * h}")
        source.mask[y : y + h, x : x + w] = np.frombuffer(data, np.uint8).reshape(h, w)
