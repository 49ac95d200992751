"""The studio's WebSocket messages: a JSON header, optionally followed by binary parts.

A text frame is a JSON object. A binary frame is

    uint32 little-endian n | n bytes of UTF-8 JSON header | part 0 | part 1 | ...

where header["parts"] lists the byte length of each part (pixels travel raw: RGB or one byte a pixel, row
major, no per-frame encoding cost). static/studio.js holds the same two functions for the page.
"""

from __future__ import annotations

import json
import struct


class WireError(ValueError):
    """A frame that does not follow the format above."""


def pack(header: dict, parts: tuple[bytes, ...] | list[bytes] = ()) -> bytes:
    text = json.dumps({**header, "parts": [len(part) for part in parts]}).encode()
    return b"".join((struct.pack("<I", len(text)), text, *parts))


def unpack(frame: bytes) -> tuple[dict, list[bytes]]:
    if len(frame) < 4:
        raise WireError("binary frame shorter than its 4-byte header length")
    (length,) = struct.unpack_from("<I", frame)
    if length > len(frame) - 4:
        raise WireError(f"header length {length} runs past the frame ({len(frame)} bytes)")
    header = parse_header(frame[4 : 4 + length])
    sizes = header.get("parts", [])
    if not isinstance(sizes, list) or not all(isinstance(n, int) and n >= 0 for n in sizes):
        raise WireError("header.parts must be a list of byte counts")
    if 4 + length + sum(sizes) != len(frame):
        raise WireError(f"parts of {sum(sizes)} bytes do not fill the frame ({len(frame) - 4 - length} left)")
    parts, offset = [], 4 + length
    for size in sizes:
        parts.append(frame[offset : offset + size])
        offset += size
    return header, parts


def parse_header(data: bytes | str) -> dict:
    try:
        header = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WireError(f"header is not JSON ({error})") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise WireError('header must be a JSON object with a "type"')
    return header
