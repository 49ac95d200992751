"""Wire <-> numpy: request decoding with validation and limits, response encoding (numpy, Pillow, no torch).

Server side: decode_* and output_spec raise InvalidArgument with a message naming the field and what is
wrong; the server answers INVALID_ARGUMENT with it. Encoded images are opened lazily and their header size
is checked against the pixel limit BEFORE any pixel is decoded (the decompression-bomb guard); only PNG,
JPEG and WebP decoders are allowed.
Client side: image_message / mask_message build wire messages from arrays, PIL images or file paths, and
image_array / latent_array read responses.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image as PILImage

from .. import compose
from ..runtime import edits
from .proto import pb

DECODERS = ("PNG", "JPEG", "WEBP")
JPEG_MAX_SIDE = 65535  # the JPEG format's own limit
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_LAYERS = 64


class InvalidArgument(ValueError):
    """A request field is malformed; str(error) is the message sent back to the client."""


@dataclass(frozen=True)
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS  # per image or mask
    max_layers: int = DEFAULT_MAX_LAYERS  # per composite
    max_total_pixels: int = 4 * DEFAULT_MAX_PIXELS  # decoded pixels across one request's layers


# ---- server: decoding ---------------------------------------------------------------------------------


def _check_size(what: str, width: int, height: int, limits: Limits) -> None:
    if width < 0 or height < 0:
        raise InvalidArgument(f"{what}: negative size {width}x{height}")
    if width == 0 or height == 0:
        raise InvalidArgument(f"{what}: zero size {width}x{height}")
    if width * height > limits.max_pixels:
        raise InvalidArgument(
            f"{what}: {width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}"
        )


def _decode_raw(what: str, raw: Any, channels: int, limits: Limits) -> np.ndarray:
    _check_size(what, raw.width, raw.height, limits)
    expected = raw.width * raw.height * channels
    data = raw.data  # each read of a bytes field makes a new bytes object: read it once
    if len(data) != expected:
        raise InvalidArgument(
            f"{what}: raw data has {len(data)} bytes, expected width*height*{channels} = {expected}"
        )
    # a read-only view of those bytes, no copy: the collage copies what it uses
    shape = (raw.height, raw.width, 3) if channels == 3 else (raw.height, raw.width)
    return np.frombuffer(data, np.uint8).reshape(shape)


def _open_encoded(what: str, data: bytes, limits: Limits) -> PILImage.Image:
    """Opens and decodes an encoded image after checking its header size against the limits; data that
    ends before the image does (which Pillow fills with black or gray rows) is refused."""
    if not data:
        raise InvalidArgument(f"{what}: encoded image is empty (0 bytes)")
    try:
        image = PILImage.open(io.BytesIO(data), formats=DECODERS)
    except PILImage.DecompressionBombError:
        raise InvalidArgument(f"{what}: image too large (a decompression bomb)") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for garbage input
        raise InvalidArgument(f"{what}: not a decodable PNG, JPEG or WebP image") from None
    _check_size(what, image.width, image.height, limits)
    if image.format == "JPEG":
        return _decode_jpeg(what, data)
    try:
        image.load()
    except Exception as error:  # noqa: BLE001 - truncated or corrupt pixel data
        raise InvalidArgument(f"{what}: corrupt {image.format} data ({_reason(error)})") from None
    if image.format == "PNG":
        _check_png_complete(what, data, image)
    return image


def _reason(error: BaseException) -> str:
    """A decoder's complaint, safe to send: one short line, no object reprs or addresses."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return "unreadable data" if " at 0x" in text or "<" in text else text[:100]


def _decode_jpeg(what: str, data: bytes) -> PILImage.Image:
    """A JPEG decoded strictly (libjpeg-turbo): premature ends and corrupt scans are errors, not gray rows."""
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except Exception as error:  # noqa: BLE001 - ValueError for corrupt or truncated data
        raise InvalidArgument(f"{what}: corrupt or truncated JPEG data ({_reason(error)})") from None
    return PILImage.fromarray(pixels)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel


def _check_png_complete(what: str, data: bytes, image: PILImage.Image) -> None:
    """Refuses a PNG whose image data inflates to fewer bytes than its header declares: Pillow accepts a
    zlib stream that ends early and leaves the missing rows black."""
    width, height, depth, colour, interlace = struct.unpack(">IIBBxxB", data[16:29])
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    passes = [(width, height)] if not interlace else [
        ((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy)
        for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                               (1, 0, 2, 2), (0, 1, 1, 2))
    ]  # fmt: skip
    expected = sum(h * (1 + (w * bits + 7) // 8) for w, h in passes if w and h)
    inflate, inflated, offset = zlib.decompressobj(), 0, 8
    while offset + 8 <= len(data) and inflated < expected:
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IDAT":
            chunk = data[offset + 8 : offset + 8 + length]
            while chunk and inflated < expected:  # in pieces: never more than 1 MiB inflated at once
                inflated += len(inflate.decompress(chunk, 1 << 20))
                chunk = inflate.unconsumed_tail
        elif kind == b"IEND":
            break
        offset += 12 + length
    if inflated < expected:
        raise InvalidArgument(
            f"{what}: truncated PNG data ({inflated} of the {expected} bytes its {width}x{height} header "
            "declares)"
        )


def _header_size(what: str, message: Any, limits: Limits) -> tuple[int, int]:
    """(width, height) of a pb.Image/pb.Mask from its raw fields or its encoded header, without decoding
    ((0, 0) when there is none: decoding reports what is wrong)."""
    kind = message.WhichOneof("data")
    if kind == "raw":
        width, height = message.raw.width, message.raw.height
    elif kind == "encoded":
        try:
            with PILImage.open(io.BytesIO(message.encoded), formats=DECODERS) as image:
                width, height = image.size
        except Exception:  # noqa: BLE001
            return 0, 0
    else:
        return 0, 0
    _check_size(what, width, height, limits)
    return width, height


def request_sizes(kind: str, request: Any, limits: Limits) -> tuple[int, tuple[int, int]]:
    """(decoded pixels of all images and masks, (height, width) of the canvas) of an edit request, from
    headers only: what admission charges before anything is decoded."""
    if kind == "sample":
        return 0, (0, 0)
    if kind == "composite":
        if len(request.layers) > limits.max_layers:
            count = len(request.layers)
            raise InvalidArgument(f"layers: {count} layers exceed the limit of {limits.max_layers}")
        parts = [(f"layers[{i}]", layer) for i, layer in enumerate(request.layers)]
    else:
        parts = [("inpaint", request)]
    pixels, canvas = 0, (0, 0)
    for what, part in parts:
        width, height = _header_size(f"{what}.image", part.image, limits)
        pixels += width * height
        if part.HasField("mask"):
            mask_width, mask_height = _header_size(f"{what}.mask", part.mask, limits)
            pixels += mask_width * mask_height
        if canvas == (0, 0):
            canvas = (height, width)
    return pixels, canvas


def decode_image(what: str, message: Any, limits: Limits) -> tuple[np.ndarray, np.ndarray | None]:
    """pb.Image -> (rgb uint8 [H,W,3], alpha uint8 [H,W] or None: an encoded image's alpha channel)."""
    kind = message.WhichOneof("data")
    if kind is None:
        raise InvalidArgument(f"{what}: image is empty (set encoded or raw)")
    if kind == "raw":
        return _decode_raw(what, message.raw, 3, limits), None
    image = _open_encoded(what, message.encoded, limits)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    try:
        if has_alpha:
            rgba = np.asarray(image.convert("RGBA"))
            return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
        return np.asarray(image.convert("RGB")).copy(), None
    except Exception as error:  # noqa: BLE001 - e.g. a pixel mode Pillow cannot convert
        raise InvalidArgument(f"{what}: unsupported {image.mode} pixels ({_reason(error)})") from None


def decode_mask(what: str, message: Any, limits: Limits) -> np.ndarray:
    """pb.Mask -> uint8 [H,W] (255 = known)."""
    kind = message.WhichOneof("data")
    if kind is None:
        raise InvalidArgument(f"{what}: mask is empty (set encoded or raw)")
    if kind == "raw":
        return _decode_raw(what, message.raw, 1, limits)
    image = _open_encoded(what, message.encoded, limits)
    try:
        return np.asarray(image.convert("L")).copy()
    except Exception as error:  # noqa: BLE001
        raise InvalidArgument(f"{what}: unsupported {image.mode} pixels ({_reason(error)})") from None


def _layer(what: str, image_msg: Any, mask_msg: Any | None, limits: Limits, x: int = 0, y: int = 0):
    image, alpha = decode_image(f"{what}.image", image_msg, limits)
    mask = alpha
    if mask_msg is not None:
        mask = decode_mask(f"{what}.mask", mask_msg, limits)
        if mask.shape != image.shape[:2]:
            raise InvalidArgument(
                f"{what}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
    return compose.Layer(image, mask, x, y)


def decode_layers(request: Any, limits: Limits) -> list[compose.Layer]:
    """CompositeRequest -> layers (validated; the first layer sets the canvas size)."""
    if not request.layers:
        raise InvalidArgument("layers: at least one layer is required")
    if len(request.layers) > limits.max_layers:
        raise InvalidArgument(f"layers: {len(request.layers)} layers exceed the limit of {limits.max_layers}")
    layers, total = [], 0
    for index, layer in enumerate(request.layers):
        what = f"layers[{index}]"
        if not layer.HasField("image"):
            raise InvalidArgument(f"{what}.image is missing")
        mask = layer.mask if layer.HasField("mask") else None
        decoded = _layer(what, layer.image, mask, limits, layer.offset_x, layer.offset_y)
        total += decoded.image.shape[0] * decoded.image.shape[1]
        if total > limits.max_total_pixels:
            raise InvalidArgument(f"layers: more than {limits.max_total_pixels} pixels in all")
        layers.append(decoded)
    return layers


def decode_inpaint(request: Any, limits: Limits) -> compose.Layer:
    if not request.HasField("image"):
        raise InvalidArgument("image is missing")
    return _layer("inpaint", request.image, request.mask if request.HasField("mask") else None, limits)


@dataclass(frozen=True)
class OutputSpec:
    format: int  # pb.ImageFormat value, never UNSPECIFIED
    jpeg_quality: int
    return_latent: bool
    return_input: bool
    preserve_known: bool
    realism: float
    size: str  # edits.CANVAS (the default) or edits.MODEL
    feather: int | None  # pixels; None = compose.default_feather


def output_spec(options: Any) -> OutputSpec:
    """Validates OutputOptions."""
    if not math.isfinite(options.realism) or not 0.0 <= options.realism <= 1.0:
        raise InvalidArgument(f"output.realism: {options.realism} is outside [0, 1]")
    if not 0 <= options.jpeg_quality <= 100:
        raise InvalidArgument(f"output.jpeg_quality: {options.jpeg_quality} is outside 1..100 (0 = 90)")
    if options.format not in pb.ImageFormat.values():
        raise InvalidArgument(f"output.format: unknown value {options.format}")
    if options.size not in pb.OutputSize.values():
        raise InvalidArgument(f"output.size: unknown value {options.size}")
    feather = options.feather_px if options.HasField("feather_px") else None
    if feather is not None and not 0 <= feather <= 1024:
        raise InvalidArgument(f"output.feather_px: {feather} is outside 0..1024")
    return OutputSpec(
        format=options.format or pb.IMAGE_FORMAT_PNG,
        jpeg_quality=options.jpeg_quality or 90,
        return_latent=options.return_latent,
        return_input=options.return_input,
        preserve_known=options.preserve_known,
        realism=float(options.realism),
        size=edits.MODEL if options.size == pb.OUTPUT_SIZE_MODEL else edits.CANVAS,
        feather=feather,
    )


def check_output_size(spec: OutputSpec, height: int, width: int) -> None:
    """Refuses, before any work, an output size the requested format cannot hold."""
    if spec.format == pb.IMAGE_FORMAT_JPEG and max(height, width) > JPEG_MAX_SIDE:
        raise InvalidArgument(
            f"output.format: JPEG holds at most {JPEG_MAX_SIDE} pixels a side, the output would be "
            f"{width}x{height} (ask for PNG or RAW)"
        )


# ---- server: encoding ---------------------------------------------------------------------------------


def _encode(array: np.ndarray, image_format: int, quality: int) -> bytes:
    buffer = io.BytesIO()
    picture = PILImage.fromarray(array)
    if image_format == pb.IMAGE_FORMAT_JPEG:
        picture.save(buffer, format="JPEG", quality=quality)
    else:
        picture.save(buffer, format="PNG", compress_level=1)  # latency over size
    return buffer.getvalue()


def raw_pixels(array: np.ndarray) -> Any:
    """uint8 [H,W,3] or [H,W] -> pb.RawPixels."""
    height, width = array.shape[:2]
    return pb.RawPixels(width=width, height=height, data=np.ascontiguousarray(array, np.uint8).tobytes())


def _from_raw(raw: Any, channels: int) -> np.ndarray:
    return np.frombuffer(raw.data, np.uint8).reshape(raw.height, raw.width, channels).copy()


def encode_image(array: np.ndarray, spec: OutputSpec) -> Any:
    """uint8 [H,W,3] -> pb.Image in the requested format."""
    if spec.format == pb.IMAGE_FORMAT_RAW:
        return pb.Image(raw=raw_pixels(array))
    return pb.Image(encoded=_encode(array, spec.format, spec.jpeg_quality))


def encode_mask(mask: np.ndarray, spec: OutputSpec) -> Any:
    """uint8 [H,W] -> pb.Mask: raw when the output is raw, else PNG (lossless, whatever the image format)."""
    if spec.format == pb.IMAGE_FORMAT_RAW:
        return pb.Mask(raw=raw_pixels(mask))
    return pb.Mask(encoded=_encode(mask, pb.IMAGE_FORMAT_PNG, 0))


def encode_latent(latent: np.ndarray) -> Any:
    latent = np.ascontiguousarray(latent, dtype="<f4")
    return pb.Latent(shape=list(latent.shape), data=latent.tobytes())


# ---- client: building requests, reading responses -----------------------------------------------------

ImageLike = Any  # numpy array, PIL image, path (str / os.PathLike) or raw encoded bytes


def _encoded_bytes(source: Any) -> bytes | None:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        return Path(source).read_bytes()
    return None


def image_message(image: ImageLike) -> Any:
    """pb.Image from an array (uint8 [H,W,3] or [H,W] gray), a PIL image, a file path or encoded bytes.

    Files and bytes travel encoded as they are (the server decodes them; an RGBA PNG's alpha can serve as
    the mask); arrays travel raw.
    """
    data = _encoded_bytes(image)
    if data is not None:
        return pb.Image(encoded=data)
    if isinstance(image, PILImage.Image):
        image = image.convert("RGB")
    array = edits.as_uint8(image, "image")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image array must be [H,W,3] or [H,W], got {array.shape}"
                         " (split RGBA: edits.split_alpha)")
    return pb.Image(raw=raw_pixels(array))


def mask_message(mask: ImageLike) -> Any:
    """pb.Mask from an array (uint8/bool [H,W] or [H,W,1], 255/True = known), PIL image, path or bytes."""
    data = _encoded_bytes(mask)
    if data is not None:
        return pb.Mask(encoded=data)
    if isinstance(mask, PILImage.Image):
        mask = mask.convert("L")
    array = edits.as_uint8(mask, "mask")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"mask array must be [H,W] or [H,W,1], got {array.shape}")
    return pb.Mask(raw=raw_pixels(array))


def image_array(message: Any) -> np.ndarray | None:
    """pb.Image from a response -> uint8 [H,W,3] (None when unset)."""
    kind = message.WhichOneof("data")
    if kind is None:
        return None
    if kind == "raw":
        return _from_raw(message.raw, 3)
    return np.asarray(PILImage.open(io.BytesIO(message.encoded)).convert("RGB")).copy()


def mask_array(message: Any) -> np.ndarray | None:
    kind = message.WhichOneof("data")
    if kind is None:
        return None
    if kind == "raw":
        return _from_raw(message.raw, 1)[..., 0]
    return np.asarray(PILImage.open(io.BytesIO(message.encoded)).convert("L")).copy()


def latent_array(message: Any) -> np.ndarray | None:
    if not message.shape:
        return None
    return np.frombuffer(message.data, "<f4").reshape(tuple(message.shape)).astype(np.float32)
