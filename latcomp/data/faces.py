"""Procedural cartoon faces with pixel-exact part labels, cheap enough to render inside a training loop.

How a face is made:
  1. `_sample_params` draws every random choice from `numpy.random.default_rng(seed)` in size-free units
     (fractions of the canvas, or of the head radii), so one seed is the same face at every size.
  2. `_draw` paints a *fine* label map (iris, sclera, lip, teeth, ...) on a canvas `SUPERSAMPLE` times the
     output size with Pillow. Shapes are polygons in a head-local frame (origin at the head centre, x right,
     y down) that are rotated and shifted into the canvas, so head pose never needs image resampling.
  3. `_compose` colours the fine labels through per-face palettes and box-filters them down with Pillow
     (antialiasing), then applies smooth numpy shading (skin light and falloff, hair strands and sheen) and a
     background gradient at output resolution. Each output pixel's part is the majority coarse label of the
     same box, so image and part map come from one drawing and agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

PARTS = ("background", "skin", "hair", "eyes", "brows", "nose", "mouth", "glasses", "clothes")
SUPERSAMPLE = 4

# Fine label -> coarse part. Fine labels only exist to give sub-parts their own colour.
_FINE = (
    ("background", "background"),
    ("clothes", "clothes"),
    ("neck", "skin"),
    ("ear", "skin"),
    ("face", "skin"),
    ("hair", "hair"),
    ("sclera", "eyes"),
    ("iris", "eyes"),
    ("pupil", "eyes"),
    ("glint", "eyes"),
    ("lid", "eyes"),
    ("brow", "brows"),
    ("nose", "nose"),
    ("nostril", "nose"),
    ("lip", "mouth"),
    ("mouth_in", "mouth"),
    ("teeth", "mouth"),
    ("frame", "glasses"),
)
_F = {name: i for i, (name, _) in enumerate(_FINE)}
_FINE_TO_PART = np.array([PARTS.index(part) for _, part in _FINE], dtype=np.uint8)
# Which shading field multiplies each fine label: 0 none, 1 skin, 2 hair.
_SHADE_GROUP = np.zeros(len(_FINE), dtype=np.uint8)
_SHADE_GROUP[[_F["ear"], _F["face"], _F["nose"], _F["lip"]]] = 1
_SHADE_GROUP[_F["hair"]] = 2

_SKIN_RAMP = np.array(  # light -> deep; skin tone = a point on this piecewise-linear ramp
    [(255, 228, 208), (241, 194, 167), (224, 172, 138), (198, 134, 96), (160, 102, 70), (118, 74, 50),
     (84, 55, 40)], dtype=np.float64)
_HAIR = (  # name, rgb, weight
    ("black", (28, 24, 24), 0.18), ("dark brown", (58, 40, 28), 0.18), ("brown", (105, 72, 45), 0.14),
    ("light brown", (150, 110, 72), 0.08), ("blond", (214, 178, 110), 0.10),
    ("platinum", (232, 218, 180), 0.03),
    ("auburn", (122, 48, 28), 0.06), ("red", (190, 92, 42), 0.06), ("grey", (150, 148, 145), 0.07),
    ("white", (222, 222, 216), 0.03), ("blue", (48, 88, 200), 0.015), ("pink", (228, 108, 168), 0.015),
    ("purple", (118, 58, 168), 0.01), ("green", (58, 158, 98), 0.01),
)
_HAIR_STYLES = (("bald", 0.07), ("buzz", 0.09), ("short", 0.2), ("side part", 0.15), ("fringe", 0.14),
                ("long", 0.2), ("bun", 0.07), ("curly", 0.08))
_EYES = (("dark brown", (58, 34, 20)), ("brown", (108, 64, 30)), ("hazel", (128, 108, 50)),
         ("green", (78, 120, 62)), ("blue", (66, 118, 190)), ("light blue", (118, 160, 210)),
         ("grey", (118, 128, 134)))
_EXPRESSIONS = (("neutral", 0.3), ("smile", 0.3), ("grin", 0.15), ("open", 0.1), ("frown", 0.15))
_LIPSTICK = ((172, 22, 42), (212, 92, 132), (112, 32, 62))
_FRAMES = ((20, 20, 22), (70, 45, 30), (125, 72, 32), (200, 166, 72), (190, 192, 200), (170, 32, 42),
           (40, 60, 150))
GLASSES_PROBABILITY = 0.25


@dataclass(frozen=True, eq=False)
class Face:
    image: np.ndarray  # [H, W, 3] uint8
    parts: np.ndarray  # [H, W] uint8, label i is PARTS[i]
    params: dict = field(default_factory=dict)  # what was drawn, in size-free units


def _pick(rng: np.random.Generator, table):
    """Index into a table of (..., weight) rows by weight."""
    weights = np.array([row[-1] for row in table], dtype=np.float64)
    return int(rng.choice(len(table), p=weights / weights.sum()))


def _jitter(rng, rgb, amount):
    return np.clip(np.asarray(rgb, dtype=np.float64) + rng.uniform(-amount, amount, 3), 0, 255)


def _random_color(rng, saturation=(0.2, 0.7), value=(0.35, 0.95)):
    """A colour from HSV ranges, so backgrounds/clothes are neither grey mud nor neon by accident."""
    h, s, v = rng.uniform(0, 6), rng.uniform(*saturation), rng.uniform(*value)
    k = (np.array([5.0, 3.0, 1.0]) + h) % 6
    return 255 * v * (1 - s * np.clip(np.minimum(k, 4 - k), 0, 1))


def _sample_params(rng: np.random.Generator) -> dict:
    """All random choices of one face. Head radii rx, ry and centre are fractions of the canvas; feature
    sizes are fractions of rx (horizontal) or ry (vertical), which keeps features inside the head."""
    u = rng.uniform
    rx = u(0.19, 0.245)
    ry = rx * u(1.15, 1.38)
    p: dict = {}
    p["head"] = dict(cx=0.5 + u(-0.04, 0.04), cy=0.46 + u(-0.02, 0.03), rx=rx, ry=ry, jaw=u(0.5, 0.88),
                     angle=float(np.clip(rng.normal(0, 0.06), -0.15, 0.15)), yaw=u(-1, 1))
    tone = u(0, len(_SKIN_RAMP) - 1)
    lo = min(int(tone), len(_SKIN_RAMP) - 2)
    p["skin"] = _jitter(rng, _SKIN_RAMP[lo] + (tone - lo) * (_SKIN_RAMP[lo + 1] - _SKIN_RAMP[lo]), 6)
    p["light"] = (u(-0.8, 0.8), u(-0.9, -0.2))  # light from above, left or right
    p["blush"] = u(0, 0.25) if rng.random() < 0.4 else 0.0

    name, rgb, _ = _HAIR[_pick(rng, _HAIR)]
    p["hair"] = dict(color_name=name, color=_jitter(rng, np.array(rgb) * u(0.9, 1.1), 8),
                     style=_HAIR_STYLES[_pick(rng, _HAIR_STYLES)][0], volume=(u(1.05, 1.14), u(1.06, 1.16)),
                     side=u(0.1, 0.35), hairline=u(0.46, 0.66), fringe=u(0.16, 0.3),
                     part_side=float(rng.choice([-1, 1])), length=u(1.2, 2.3), width=u(1.0, 1.3),
                     middle=bool(rng.random() < 0.65), curl_phase=u(0, 2 * np.pi),
                     curl_size=(u(1.35, 1.6), u(1.0, 1.2)), bun=u(0.3, 0.42), strand_phase=u(0, 2 * np.pi))
    natural = name not in ("blue", "pink", "purple", "green", "grey", "white")
    brow_rgb = np.array(rgb) * 0.75 if natural else _jitter(rng, (55, 42, 34), 15)
    p["brows"] = dict(color=np.clip(brow_rgb, 0, 255), thickness=u(0.035, 0.08), angle=u(-0.12, 0.25),
                      arch=u(0.0, 0.05), gap=u(0.07, 0.15), length=u(1.1, 1.4))
    eye_name, eye_rgb = _EYES[int(rng.integers(len(_EYES)))]
    p["eyes"] = dict(color_name=eye_name, color=_jitter(rng, eye_rgb, 10), v=u(-0.1, 0.04),
                     spacing=u(0.36, 0.46), a=u(0.15, 0.21), b=u(0.38, 0.56), iris=u(0.8, 0.98),
                     gaze=u(-0.3, 0.3), tilt=u(-0.1, 0.12))
    p["nose"] = dict(length=u(0.33, 0.5), width=u(0.1, 0.18), tip=u(0.5, 1.0), bridge=u(0.2, 0.5))
    expression = _EXPRESSIONS[_pick(rng, _EXPRESSIONS)][0]
    lip = p["skin"] * 0.72 + np.array([170.0, 62, 72]) * 0.28
    if rng.random() < 0.12:
        lip = _jitter(rng, _LIPSTICK[int(rng.integers(len(_LIPSTICK)))], 12)
    p["mouth"] = dict(expression=expression, color=lip, drop=u(0.17, 0.27), width=u(0.22, 0.34),
                      upper=u(0.035, 0.065), lower=u(0.05, 0.09), curve=u(0.05, 0.11), open=u(0.07, 0.14))
    p["ears"] = dict(size=u(0.85, 1.15))
    p["background"] = dict(top=_random_color(rng), bottom=_random_color(rng),
                           gradient=bool(rng.random() < 0.6), direction=u(-0.6, 0.6))
    p["clothes"] = dict(color=_random_color(rng, (0.1, 0.8), (0.15, 0.9)), width=u(2.1, 2.7))
    p["glasses"] = None
    if rng.random() < GLASSES_PROBABILITY:
        p["glasses"] = dict(shape=str(rng.choice(["round", "square", "wide"])), scale=u(1.35, 1.7),
                            height=u(0.7, 1.0), thickness=u(0.06, 0.1),
                            color=_jitter(rng, _FRAMES[int(rng.integers(len(_FRAMES)))], 8))
    return p


def _ellipse(cx, cy, rx, ry, t0=0.0, t1=2 * np.pi, n=40, power=2.0):
    """Points on an ellipse (or a superellipse when power > 2: rounded rectangle) from angle t0 to t1."""
    t = np.linspace(t0, t1, n)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / power
    return np.stack([cx + rx * np.sign(c) * np.abs(c) ** e, cy + ry * np.sign(s) * np.abs(s) ** e], axis=1)


class _Painter:
    """Draws head-local polygons into the fine label image: rotate by the head angle, then shift."""

    def __init__(self, size: int, cx: float, cy: float, angle: float):
        self.size = size
        self.image = Image.new("P", (size, size), _F["background"])
        self.draw = ImageDraw.Draw(self.image)
        self.center = np.array([cx, cy])
        c, s = np.cos(angle), np.sin(angle)
        self.rot = np.array([[c, -s], [s, c]])

    def _place(self, points):
        return (np.asarray(points) @ self.rot.T + self.center).ravel().tolist()

    def polygon(self, points, label: str):
        self.draw.polygon(self._place(points), fill=_F[label])

    def line(self, points, label: str, width: float, closed: bool = False):
        points = np.asarray(points)
        if closed:
            points = np.concatenate([points, points[:1]])
        self.draw.line(self._place(points), fill=_F[label], width=max(1, round(width)), joint="curve")


def _hair_cap(p, rx, ry):
    """Hair in front of the head: the top arc of an enlarged head ellipse closed by a style's hairline."""
    h = p["hair"]
    style = h["style"]
    hx, hy = rx * h["volume"][0], ry * h["volume"][1]
    dy = 0.04 * ry  # hair sits a little higher than the skull
    side, hairline = h["side"], h["hairline"]
    if style == "buzz":
        hx, hy, side = rx * 1.025, ry * 1.03, 0.05
    elif style == "bun":
        hx, hy, hairline = rx * 1.05, ry * 1.06, hairline + 0.08
    elif style == "long":
        side = 0.6 + 1.2 * h["side"]
    xs = np.linspace(0.82, -0.82, 15) * rx  # hairline from the right temple to the left one
    t = xs / rx
    if style == "fringe" or (style == "long" and not h["middle"]):
        ys = (-h["fringe"] + 0.06 * t**2 + 0.015 * np.sin(23 * t)) * ry
    elif style == "side part":
        ys = (-0.68 + 0.42 * np.clip((h["part_side"] * t + 0.3) / 1.1, 0, 1)) * ry
    elif style == "long":
        ys = (-0.66 + 0.5 * np.abs(t) ** 1.2) * ry
    else:
        ys = (-hairline + 0.3 * t**2) * ry
    arc = _ellipse(0, -dy, hx, hy, np.pi - side, 2 * np.pi + side, n=36)
    y_end = arc[-1, 1]
    # The hair's inner edge runs just inside the face outline from the sideburn up to the temple.
    k = 0.9
    inner_y = np.linspace(y_end, ys[0], 6)
    inner_x = k * rx * np.sqrt(np.clip(1 - (inner_y / (k * ry)) ** 2, 0.05, 1))
    right = np.stack([inner_x, inner_y], axis=1)
    left = np.stack([-inner_x[::-1], inner_y[::-1]], axis=1)
    return np.concatenate([arc, right, np.stack([xs, ys], axis=1), left])


def _hair_back(p, rx, ry):
    """Polygons of hair behind the head (long, curly, bun); empty for other styles."""
    h = p["hair"]
    if h["style"] == "long":
        hx, hy = rx * h["volume"][0], ry * h["volume"][1]
        top = _ellipse(0, -0.04 * ry, hx, hy, np.pi, 2 * np.pi, n=24)
        bottom_y = ry * h["length"]
        xs = np.linspace(1, -1, 9) * hx * h["width"]
        bottom = np.stack([xs, bottom_y + 0.04 * ry * np.cos(7 * xs / rx)], axis=1)
        return [np.concatenate([top, bottom])]
    if h["style"] == "curly":
        t = np.linspace(0, 2 * np.pi, 72)
        r = 1 + 0.06 * np.sin(11 * t + h["curl_phase"])
        sx, sy = h["curl_size"]
        return [np.stack([sx * rx * r * np.cos(t), -0.15 * ry + sy * ry * r * np.sin(t)], axis=1)]
    if h["style"] == "bun":
        r = h["bun"] * rx
        return [_ellipse(0, -1.04 * ry - 0.6 * r, r, r, n=24)]
    return []


def _face_outline(rx, ry, jaw):
    """Head ellipse whose lower half narrows toward the chin by `jaw`."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    lower = np.clip(np.sin(t), 0, 1)
    return np.stack([rx * np.cos(t) * (1 - (1 - jaw) * lower**2), ry * np.sin(t)], axis=1)


def _band(xs, top, bottom):
    """Polygon between two curves over the same xs (lips, brows, mouth opening)."""
    return np.concatenate([np.stack([xs, top], axis=1), np.stack([xs[::-1], bottom[::-1]], axis=1)])


def _draw_eye(pen, p, ex, ey, sx):
    """Almond sclera, iris and pupil, catch-light, upper lid line, then the brow above.
    sx: -1 for the left eye, +1 for the right one."""
    e, br = p["eyes"], p["brows"]
    a = e["a"] * p["head"]["rx"] * pen.size
    b = e["b"] * a
    ry = p["head"]["ry"] * pen.size
    c, s = np.cos(-sx * e["tilt"]), np.sin(-sx * e["tilt"])  # outer corners up for positive tilt
    rot = np.array([[c, -s], [s, c]])

    def at(points):
        return np.asarray(points) @ rot.T + (ex, ey)

    x = np.linspace(-1, 1, 16)
    upper = -b * (1 - x**2) ** 0.8
    pen.polygon(at(_band(x * a, upper, 0.8 * b * (1 - x**2) ** 0.9)), "sclera")
    ri = e["iris"] * 0.9 * b  # <= b keeps the iris (nearly) inside the almond
    gx = (0.4 * e["gaze"] + 0.15 * p["head"]["yaw"]) * (a - ri)
    pen.polygon(at(_ellipse(gx, 0.1 * b, ri, ri, n=20)), "iris")
    pen.polygon(at(_ellipse(gx, 0.1 * b, 0.45 * ri, 0.45 * ri, n=14)), "pupil")
    pen.polygon(at(_ellipse(gx + 0.35 * ri, -0.25 * ri, 0.2 * ri, 0.2 * ri, n=8)), "glint")
    pen.line(at(np.stack([x * a * 1.05, upper - 0.05 * b], 1)), "lid", width=0.28 * b)

    # Brow: a tapered, arched band above the eye; `angle` raises its outer end.
    t = np.linspace(0, 1, 8)
    bx = ex + sx * (0.95 * (br["length"] * 2 * t - 0.85) - 0.1) * a
    by = ey - b - br["gap"] * ry - br["arch"] * ry * 4 * t * (1 - t) - br["angle"] * a * t
    th = br["thickness"] * ry * (1 - 0.5 * t)
    pen.polygon(_band(bx, by - th / 2, by + th / 2), "brow")


def _draw_nose(pen, p, nx, top_y, tip_y):
    """A soft wedge from the bridge to a round tip, with two nostrils."""
    n = p["nose"]
    w = n["width"] * p["head"]["rx"] * pen.size
    tip = n["tip"] * w * 0.7
    bridge = n["bridge"] * w
    wedge = [(-bridge, top_y), (bridge, top_y), (w, tip_y - 0.2 * tip), (0.6 * w, tip_y + 0.5 * tip),
             (-0.6 * w, tip_y + 0.5 * tip), (-w, tip_y - 0.2 * tip)]
    pen.polygon(np.array(wedge) + (nx, 0), "nose")
    pen.polygon(_ellipse(nx, tip_y, tip, 0.8 * tip, n=16), "nose")
    for sx in (-1, 1):
        pen.polygon(_ellipse(nx + sx * 0.45 * w, tip_y + 0.35 * tip, 0.22 * w, 0.14 * w, n=10), "nostril")


def _draw_mouth(pen, p, mx, my):
    """Lips around a midline curved by the expression; open expressions show the inside and teeth."""
    m = p["mouth"]
    rx, ry = p["head"]["rx"] * pen.size, p["head"]["ry"] * pen.size
    expression = m["expression"]
    half = m["width"] * rx * (0.75 if expression == "open" else 1.0)
    bend = {"smile": 1.0, "grin": 1.2, "frown": -0.6, "neutral": 0.1, "open": 0.0}[expression]
    curve = bend * m["curve"] * ry
    gap = {"grin": 0.55, "open": 1.0}.get(expression, 0.0) * m["open"] * ry
    x = np.linspace(-1, 1, 17)
    xs = mx + x * half
    bulge = (1 - x**2) ** 0.7
    mid = my + curve * (1 - x**2)  # corners stay at my, the centre sinks for a smile
    inner_top, inner_bottom = mid - 0.3 * gap * bulge, mid + 0.7 * gap * bulge
    pen.polygon(_band(xs, inner_top - (m["upper"] * ry * bulge + 0.004 * ry),
                      inner_bottom + m["lower"] * ry * bulge + 0.004 * ry), "lip")
    if gap > 0:
        pen.polygon(_band(xs, inner_top, inner_bottom), "mouth_in")
        k = slice(3, 14)
        pen.polygon(_band(xs[k], inner_top[k], (inner_top + 0.45 * gap * bulge)[k]), "teeth")
    else:
        pen.line(np.stack([xs, mid], 1), "mouth_in", width=0.012 * ry + 1)


def _draw_glasses(pen, p, eye_xs, ey):
    g = p["glasses"]
    rx = p["head"]["rx"] * pen.size
    fa = p["eyes"]["a"] * rx * g["scale"]
    fb = fa * g["height"] * (0.75 if g["shape"] == "wide" else 1.0)
    power = 2.0 if g["shape"] == "round" else 5.0  # superellipse: rounded rectangle
    width = g["thickness"] * rx
    for sx, ex in zip((-1, 1), eye_xs, strict=True):
        pen.line(_ellipse(ex, ey, fa, fb, n=40, power=power), "frame", width, closed=True)
        arm = [(ex + sx * fa, ey - 0.3 * fb), (sx * 0.99 * rx, ey - 0.35 * fb)]  # to the ear
        pen.line(arm, "frame", width)
    mid = 0.5 * (eye_xs[0] + eye_xs[1])
    inner = 0.5 * (eye_xs[1] - eye_xs[0]) - fa
    bridge = [(mid - inner, ey - 0.3 * fb), (mid, ey - 0.45 * fb), (mid + inner, ey - 0.3 * fb)]
    pen.line(bridge, "frame", width)


def _draw(p: dict, size: int) -> Image.Image:
    """Paint the fine label map of face `p` on a size x size canvas (mode "P", index = fine label),
    back to front."""
    hd = p["head"]
    rx, ry = hd["rx"] * size, hd["ry"] * size
    pen = _Painter(size, hd["cx"] * size, hd["cy"] * size, hd["angle"])
    turn = hd["yaw"] * 0.08 * rx  # features slide sideways when the head turns (nose and mouth more)

    pen.polygon(_ellipse(0, 2.35 * ry, p["clothes"]["width"] * rx, 1.15 * ry), "clothes")
    for back in _hair_back(p, rx, ry):
        pen.polygon(back, "hair")
    neck = [(-0.45 * rx, 0.5 * ry), (0.45 * rx, 0.5 * ry), (0.52 * rx, 1.5 * ry), (-0.52 * rx, 1.5 * ry)]
    pen.polygon(neck, "neck")
    eye_y = p["eyes"]["v"] * ry
    nose_y = eye_y + p["nose"]["length"] * ry
    if p["hair"]["style"] not in ("long", "curly"):
        er = p["ears"]["size"]
        for sx in (-1, 1):
            ear = _ellipse(sx * 0.97 * rx, 0.5 * (eye_y + nose_y), 0.16 * rx * er, 0.26 * ry * er, n=20)
            pen.polygon(ear, "ear")
    pen.polygon(_face_outline(rx, ry, hd["jaw"]), "face")
    if p["hair"]["style"] != "bald":
        pen.polygon(_hair_cap(p, rx, ry), "hair")
    eye_xs = [sx * p["eyes"]["spacing"] * rx + turn for sx in (-1, 1)]
    for sx, ex in zip((-1, 1), eye_xs, strict=True):
        _draw_eye(pen, p, ex, eye_y, sx)
    _draw_nose(pen, p, 2 * turn, eye_y + 0.1 * ry, nose_y)
    _draw_mouth(pen, p, 1.3 * turn, min(nose_y + p["mouth"]["drop"] * ry, 0.78 * ry))
    if p["glasses"] is not None:
        _draw_glasses(pen, p, eye_xs, eye_y)
    return pen.image


def _part_palettes(factor: int) -> list[bytes]:
    """Palettes that turn fine labels into per-part sample counts: image k holds parts 3k..3k+2 in its
    R, G, B bands with value factor**2 per sample, so a `reduce(factor)` box average is exactly the count."""
    unit = factor * factor
    palettes = []
    for k in range(0, len(PARTS), 3):
        pal = np.zeros((256, 3), dtype=np.uint8)
        for band in range(3):
            pal[: len(_FINE), band] = unit * (_FINE_TO_PART == k + band)
        palettes.append(pal.tobytes())
    return palettes


_PART_PALETTES = _part_palettes(SUPERSAMPLE)


def _box(canvas: Image.Image, palette: np.ndarray | bytes, factor: int) -> np.ndarray:
    """Colour the fine label canvas through `palette` and box-filter it down: [n, n, 3] float32."""
    canvas.putpalette(palette if isinstance(palette, bytes) else palette.astype(np.uint8).tobytes())
    return np.asarray(canvas.convert("RGB").reduce(factor), dtype=np.float32)


def _compose(p: dict, canvas: Image.Image, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Fine label canvas -> (image [n, n, 3] uint8, parts [n, n] uint8).

    Flat colours are box-filtered per shading group at canvas resolution (antialiasing), and the smooth
    shading fields are applied afterwards at output resolution, which is 16x cheaper and visually the same."""
    n = canvas.size[0] // factor
    counts = np.concatenate([_box(canvas, pal, factor) for pal in _PART_PALETTES], axis=2)[..., : len(PARTS)]
    # Most frequent part per box; ties go to the higher label so thin small parts (frames) survive.
    parts = (len(PARTS) - 1 - counts[..., ::-1].argmax(axis=2)).astype(np.uint8)
    fraction = counts / float(factor * factor)  # [n, n, P]

    lut = np.zeros((256, 3), dtype=np.float64)
    skin = p["skin"]
    lut[_F["clothes"]] = p["clothes"]["color"]
    lut[_F["neck"]] = skin * 0.78
    lut[_F["ear"]] = skin * 0.94
    lut[_F["face"]] = skin
    lut[_F["hair"]] = p["hair"]["color"]
    lut[_F["sclera"]] = (238, 234, 228)
    lut[_F["iris"]] = p["eyes"]["color"]
    lut[_F["pupil"]] = (14, 12, 12)
    lut[_F["glint"]] = (252, 252, 252)
    lut[_F["lid"]] = np.minimum(skin * 0.25, 60)
    lut[_F["brow"]] = p["brows"]["color"]
    lut[_F["nose"]] = skin * 0.9
    lut[_F["nostril"]] = skin * 0.45
    lut[_F["lip"]] = p["mouth"]["color"]
    lut[_F["mouth_in"]] = (70, 22, 26)
    lut[_F["teeth"]] = (240, 236, 222)
    if p["glasses"] is not None:
        lut[_F["frame"]] = p["glasses"]["color"]
    lut = np.round(lut)
    group = np.zeros(256, dtype=np.uint8)
    group[: len(_FINE)] = _SHADE_GROUP
    flat, skin_rgb, hair_rgb = (_box(canvas, lut * (group == g)[:, None], factor) for g in range(3))

    # Shading in the head frame: u, v are head-local coordinates in units of the head radii.
    hd = p["head"]
    ys, xs = _grid(n)
    dx, dy = xs - np.float32(hd["cx"]), ys - np.float32(hd["cy"])
    c, s = np.float32(np.cos(hd["angle"])), np.float32(np.sin(hd["angle"]))
    u = (c * dx + s * dy) / np.float32(hd["rx"])  # [n, n]
    v = (c * dy - s * dx) / np.float32(hd["ry"])
    lx, ly = p["light"]
    r2 = np.minimum(u * u + v * v, 1.3)
    skin_shade = (1.04 + 0.12 * (lx * u + ly * v) - 0.22 * r2 * r2)[..., None]
    if p["blush"]:
        cheek = np.exp(-((np.abs(u) - 0.5) ** 2 + (v - 0.25) ** 2) * 30) * p["blush"]
        skin_shade = skin_shade * np.stack([np.ones_like(cheek), 1 - cheek, 1 - cheek], axis=2)
    h = p["hair"]
    strands = np.sin(26 * u + 7 * v + h["strand_phase"]) * np.sin(9 * v - 3 * u)
    hair_shade = (1.0 + 0.08 * strands - 0.12 * np.clip(v, 0, 2))[..., None]
    # Additive sheen, so dark hair gets a visible highlight too.
    sheen = 70 * np.exp(-(((v + 0.75) / 0.2) ** 2 + ((u - 0.3 * lx) / 0.6) ** 2))

    bg = p["background"]
    top, bottom = bg["top"].astype(np.float32), bg["bottom"].astype(np.float32)
    if bg["gradient"]:
        t = np.clip((ys - 0.5) + bg["direction"] * (xs - 0.5) + 0.5, 0, 1)[..., None]
        bg_rgb = top + t * (bottom - top)
    else:
        bg_rgb = top
    image = (flat + skin_rgb * skin_shade + hair_rgb * hair_shade + (sheen * fraction[..., 2])[..., None]
             + fraction[..., :1] * bg_rgb)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), parts


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Output pixel centres as fractions of the canvas: [n, 1] (y) and [1, n] (x)."""
    c = (np.arange(n, dtype=np.float32) + 0.5) / n
    return c[:, None], c[None, :]


def render(seed: int, size: int = 64) -> Face:
    """The face of `seed` at size x size: deterministic, and the same face (up to resolution) at any size."""
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    params = _sample_params(np.random.default_rng(seed))
    image, parts = _compose(params, _draw(params, size * SUPERSAMPLE), SUPERSAMPLE)
    return Face(image=image, parts=parts, params=params)


def render_batch(seeds, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Faces of several seeds: (images [N, H, W, 3] uint8, parts [N, H, W] uint8)."""
    faces = [render(int(seed), size) for seed in seeds]
    return np.stack([f.image for f in faces]), np.stack([f.parts for f in faces])
