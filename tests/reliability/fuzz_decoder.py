"""Coverage-guided fuzz target of the request decoder (atheris, `pip install -e ".[fuzz]"`):

    python tests/reliability/fuzz_decoder.py -atheris_runs=100000 [CORPUS_DIR]

Each input becomes one request, either parsed as a wire message (CompositeRequest, InpaintRequest or
SampleRequest) or built from the bytes: layers with random, truncated, bit-flipped or size-lying PNG / JPEG
/ WebP bytes or raw pixels, extreme sizes and offsets, and any output options. The server's own decoding
(`ComposerServer._prepare`: validation, decoding, pasting, resizing to the model) and encoding of an answer
(`ComposerServer._finish`, with a stand-in model output) must either succeed or raise
codec.InvalidArgument, which the server answers as INVALID_ARGUMENT. Any other exception would reach the
client as UNKNOWN (or INTERNAL): atheris reports it as a crash with the input that caused it.

`check(data)` is the property on one input, without atheris: tests/reliability/test_fuzz.py also drives it
with hypothesis.
"""

from __future__ import annotations

import contextlib
import io
import struct
import sys
from types import SimpleNamespace


def _instrumented():
    """Run as the fuzzer: atheris instruments latcomp and Pillow (its decoders) as they are imported."""
    if __name__ != "__main__":
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["latcomp", "PIL"])


with _instrumented():
    import numpy as np
    from PIL import Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401 - instrumented

    from latcomp import compose  # noqa: F401 - instrumented
    from latcomp.service import codec
    from latcomp.service.proto import pb
    from latcomp.service.server import ComposerServer

RESOLUTION = 32  # the small test bundle's
# a server configured with --max-pixels 65536 (small, so that each input decodes in milliseconds)
LIMITS = codec.Limits(max_pixels=1 << 16, max_layers=8, max_total_pixels=1 << 18)
_SERVER = SimpleNamespace(limits=LIMITS, engine=SimpleNamespace(resolution=RESOLUTION))
_MODES = ("RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK")
_FORMATS = ("PNG", "JPEG", "WEBP")
_INT32 = (-(2**31), 2**31 - 1)


class Reader:
    """Turns fuzzer bytes into choices (zeros once the bytes run out)."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, count: int) -> bytes:
        chunk = self.data[self.at : self.at + count]
        self.at += len(chunk)
        return chunk.ljust(count, b"\0")

    def int(self, low: int, high: int) -> int:
        span = high - low + 1
        size = max(1, (span.bit_length() + 7) // 8)
        return low + int.from_bytes(self.take(size), "little") % span

    def choice(self, options):
        return options[self.int(0, len(options) - 1)]

    def flag(self) -> bool:
        return bool(self.int(0, 1))

    def float(self) -> float:
        return struct.unpack("<f", self.take(4))[0]  # any float32: NaN, inf, subnormal, ...

    def rest(self, limit: int) -> bytes:
        return self.take(self.int(0, limit))

    def size(self) -> int:
        """Mostly small, sometimes extreme: zero, negative, huge."""
        kind = self.int(0, 7)
        if kind == 0:
            return self.int(*_INT32)
        if kind == 1:
            return self.choice((0, -1, 1, 255, 256, 65535, 65536, 1 << 20, 2**31 - 1))
        return self.int(1, 40)


def _encoded(reader: Reader) -> bytes:
    """A small valid PNG/JPEG/WebP, then maybe truncated, bit-flipped or lying about its size."""
    if reader.int(0, 7) == 0:
        return reader.rest(256)  # plain garbage
    mode, image_format = reader.choice(_MODES), reader.choice(_FORMATS)
    width, height = reader.int(1, 24), reader.int(1, 24)
    pixels = np.frombuffer(reader.take(width * height * 3), np.uint8).reshape(height, width, 3)
    picture = Image.fromarray(pixels)
    try:
        picture = picture.convert(mode)
    except ValueError:
        pass
    buffer = io.BytesIO()
    try:
        picture.save(buffer, format=image_format)
    except (OSError, ValueError, KeyError):  # a mode this format cannot store
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    for _ in range(reader.int(0, 3)):
        action = reader.int(0, 3)
        if action == 0 and data:
            data[reader.int(0, len(data) - 1)] = reader.int(0, 255)
        elif action == 1:
            del data[reader.int(0, len(data)) :]  # truncated
        elif action == 2 and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
            data[16:24] = struct.pack(
                ">II", reader.int(0, 2**31 - 1), reader.int(0, 2**31 - 1)
            )  # header lies
        elif action == 3:
            data += reader.rest(64)
    return bytes(data)


def _raw(reader: Reader, channels: int):
    width, height = reader.size(), reader.size()
    if reader.int(0, 3) and 0 < width * height * channels <= 1 << 16:
        data = reader.take(width * height * channels)  # the right length
    else:
        data = reader.rest(512)
    return pb.RawPixels(width=width, height=height, data=data)


def _image(reader: Reader):
    kind = reader.int(0, 4)
    if kind == 0:
        return pb.Image()  # empty
    if kind <= 2:
        return pb.Image(encoded=_encoded(reader))
    return pb.Image(raw=_raw(reader, 3))


def _mask(reader: Reader):
    kind = reader.int(0, 5)
    if kind == 0:
        return None
    if kind == 1:
        return pb.Mask()
    if kind <= 3:
        return pb.Mask(encoded=_encoded(reader))
    return pb.Mask(raw=_raw(reader, 1))


def _output(reader: Reader):
    """Mostly valid options (so that requests get through to the encoder), a quarter anything at all."""
    if reader.int(0, 3):
        options = pb.OutputOptions(
            format=reader.int(0, 3), jpeg_quality=reader.int(0, 100), realism=reader.int(0, 255) / 255,
            return_latent=reader.flag(), return_input=reader.flag(), preserve_known=reader.flag(),
            size=reader.int(0, 2),
        )  # fmt: skip
        if reader.flag():
            options.feather_px = reader.int(0, 1024)
        return options
    options = pb.OutputOptions(
        format=reader.int(-1, 5),
        jpeg_quality=reader.choice((0, 1, 50, 100, 101, -1, reader.int(*_INT32))),
        return_latent=reader.flag(),
        return_input=reader.flag(),
        preserve_known=reader.flag(),
        realism=reader.choice((0.0, 0.5, 1.0, reader.float())),
        size=reader.int(-1, 4),
    )
    if reader.flag():
        options.feather_px = reader.choice((0, 1, 7, 1024, 1025, -1, reader.int(*_INT32)))
    return options


def build_request(data: bytes) -> tuple[str, object]:
    """(kind, request message) from fuzzer bytes."""
    reader = Reader(data)
    mode = reader.int(0, 9)
    if mode == 0:  # the bytes as a wire message
        kind = reader.choice(("composite", "inpaint", "sample"))
        message = {"composite": pb.CompositeRequest, "inpaint": pb.InpaintRequest, "sample": pb.SampleRequest}
        request = message[kind]()
        try:
            request.ParseFromString(data[reader.at :])
        except Exception:  # noqa: BLE001 - not a valid message: grpc itself would refuse it
            return kind, message[kind]()
        return kind, request
    if mode == 1:
        request = pb.SampleRequest(seed=reader.int(0, 2**64 - 1), output=_output(reader))
        if reader.flag():
            request.truncation = reader.float()
        return "sample", request
    if mode <= 4:
        request = pb.InpaintRequest(output=_output(reader))
        if reader.int(0, 7):
            request.image.CopyFrom(_image(reader))
        mask = _mask(reader)
        if mask is not None:
            request.mask.CopyFrom(mask)
        return "inpaint", request
    request = pb.CompositeRequest(output=_output(reader))
    for _ in range(reader.int(0, 5)):
        layer = request.layers.add(offset_x=reader.choice((0, 5, -5, reader.int(*_INT32))))
        layer.offset_y = reader.choice((0, 5, -5, reader.int(*_INT32)))
        if reader.int(0, 7):
            layer.image.CopyFrom(_image(reader))
        mask = _mask(reader)
        if mask is not None:
            layer.mask.CopyFrom(mask)
    return "composite", request


def check(data: bytes) -> str:
    """The property on one input: returns "ok" or "invalid"; any other exception is a bug."""
    kind, request = build_request(data)
    try:
        job = ComposerServer._prepare(_SERVER, kind, request, RESOLUTION)
    except codec.InvalidArgument:
        return "invalid"
    if kind == "sample":
        return "ok"  # the engine's part; the sampling itself is fuzzed through the server in test_fuzz.py
    # a stand-in for the model's answer: the input itself, and a latent
    response = ComposerServer._finish(_SERVER, job, job.image, np.zeros((8, 64), np.float32))
    assert response.image.WhichOneof("data") is not None
    return "ok"


def main() -> None:
    import atheris

    # whole requests from the first input on (libFuzzer would otherwise start from a few bytes)
    defaults = [flag for flag in ("-max_len=4096", "-len_control=0")
                if not any(arg.startswith(flag.split("=")[0] + "=") for arg in sys.argv)]  # fmt: skip
    atheris.Setup([*sys.argv, *defaults], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
