"""The evaluation's pictures (Pillow, like the benchmarks' in latcomp.report): the trade-off plot and the image grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..report import BACKGROUND, COLORS, GRID, INK, load_font, nice_ticks, text_size, tick_label


def marker_radius(time_ms: float) -> float:
    """4 px at 0.01 ms, +3 px per decade of time per image (a log scale: times span six decades)."""
    return 4 + 3 * max(0.0, math.log10(max(time_ms, 1e-2)) + 2)


def _scatter_panel(title: str, methods: dict, color_of: dict, width: int, height: int,
                   fd_floor: float | None) -> Image.Image:
    font, small, bold = load_font(13), load_font(11), load_font(14)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 66, width - 20, 30, height - 46
    title_w, _ = text_size(draw, title, bold)
    draw.text(((width - title_w) // 2, 6), title, fill=INK, font=bold)
    xs = [m["masked_l1"] for m in methods.values()]
    ys = [m["fd"] for m in methods.values()] + ([fd_floor] if fd_floor is not None else [])
    xticks, yticks = nice_ticks(max(xs) * 1.1), nice_ticks(max(ys) * 1.1)

    def px(x):
        return left + x / xticks[-1] * (right - left)

    def py(y):
        return bottom - y / yticks[-1] * (bottom - top)

    for tick in yticks:
        draw.line([(left, py(tick)), (right, py(tick))], fill=GRID)
        w, h = text_size(draw, tick_label(tick), small)
        draw.text((left - 6 - w, py(tick) - h / 2 - 2), tick_label(tick), fill=INK, font=small)
    for tick in xticks:
        draw.line([(px(tick), top), (px(tick), bottom)], fill=GRID)
        w, _ = text_size(draw, tick_label(tick), small)
        draw.text((px(tick) - w / 2, bottom + 5), tick_label(tick), fill=INK, font=small)
    draw.rectangle([left, top, right, bottom], outline=INK)
    if fd_floor is not None:  # what real images score at this sample count
        y = py(fd_floor)
        for x in range(left, right, 8):
            draw.line([(x, y), (min(x + 4, right), y)], fill=INK)
        draw.text((right - 110, y - 14), "real images (floor)", fill=INK, font=small)
    xlabel, ylabel = "masked L1 to the input (known pixels)", "FD to real images"
    w, _ = text_size(draw, xlabel, font)
    draw.text(((left + right - w) / 2, bottom + 22), xlabel, fill=INK, font=font)
    w, h = text_size(draw, ylabel, font)
    label = Image.new("RGB", (w + 4, h + 6), BACKGROUND)
    ImageDraw.Draw(label).text((2, 0), ylabel, fill=INK, font=font)
    label = label.rotate(90, expand=True)
    image.paste(label, (4, int((top + bottom - label.height) / 2)))
    # largest markers first, so quick methods stay visible on top of slow ones
    ordered = sorted(methods.items(), key=lambda item: -item[1]["time_ms"])
    for name, m in ordered:
        x, y, r = px(m["masked_l1"]), py(m["fd"]), marker_radius(m["time_ms"])
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color_of[name], outline=INK)
    placed: list[tuple[float, float, float, float]] = []
    for name, m in ordered:  # labels after all markers, each moved down or up until it overlaps no other
        x, y, r = px(m["masked_l1"]), py(m["fd"]), marker_radius(m["time_ms"])
        w, h = text_size(draw, name, small)
        left_edge = min(x + r + 3, right - w - 2)
        for shift in (0, 13, -13, 26, -26, 39, -39, 52, -52):
            box = (left_edge, y - 7 + shift, left_edge + w, y - 7 + shift + h + 2)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        draw.text(box[:2], name, fill=INK, font=small)
    return image


def _legend(methods: dict, color_of: dict, width: int) -> Image.Image:
    small = load_font(11)
    rows = math.ceil(len(methods) / 2)
    image = Image.new("RGB", (width, 18 * rows + 30), BACKGROUND)
    draw = ImageDraw.Draw(image)
    column = (width - 32) // 2
    for index, (name, m) in enumerate(methods.items()):
        x, y = 16 + (index % 2) * column, 4 + 18 * (index // 2)
        draw.ellipse([x, y + 2, x + 10, y + 12], fill=color_of[name], outline=INK)
        draw.text((x + 16, y), f"{name} ({m['time_ms']:.3g} ms/image)", fill=INK, font=small)
    draw.text((16, 18 * rows + 10), "marker area grows with the time per image (log scale; the legend gives "
              "the first panel's times); lower left is better", fill=INK, font=small)
    return image


def tradeoff_plot(panels: Sequence[tuple[str, dict, float | None]], path: str | Path,
                  panel_width: int = 560, panel_height: int = 420) -> Path:
    """One scatter panel per (title, {method: {masked_l1, fd, time_ms}}, fd_floor), side by side, with a
    shared legend; a method has the same colour in every panel."""
    names = list(dict.fromkeys(name for _, methods, _ in panels for name in methods))
    color_of = {name: COLORS[i % len(COLORS)] for i, name in enumerate(names)}
    images = [_scatter_panel(title, methods, color_of, panel_width, panel_height, floor)
              for title, methods, floor in panels]
    legend = _legend(panels[0][1], color_of, panel_width * len(images))
    chart = Image.new("RGB", (panel_width * len(images), panel_height + legend.height), BACKGROUND)
    for index, image in enumerate(images):
        chart.paste(image, (index * panel_width, 0))
    chart.paste(legend, (0, panel_height))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.save(path, format="PNG", optimize=True)
    return path


def image_grid(columns: dict[str, np.ndarray], path: str | Path, rows: int = 6, cell: int = 96) -> Path:
    """Rows of the same inputs, one column per {label: uint8 images [N, R, R, 3]}, labelled on top; images
    are enlarged by an integer factor (nearest) to at least `cell` px so small bundles stay legible."""
    font = load_font(11)
    rows = min(rows, *(len(images) for images in columns.values()))
    resolution = next(iter(columns.values())).shape[1]
    scale = max(1, -(-cell // resolution))
    side, pad, header = resolution * scale, 4, 20
    width, height = len(columns) * (side + pad) + pad, header + rows * (side + pad) + pad
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for c, (label, images) in enumerate(columns.items()):
        x = pad + c * (side + pad)
        w, _ = text_size(draw, label, font)
        text = label if w <= side else label[: max(1, len(label) * side // w - 1)] + "."
        draw.text((x, 4), text, fill=INK, font=font)
        for r in range(rows):
            tile = Image.fromarray(images[r]).resize((side, side), Image.Resampling.NEAREST)
            canvas.paste(tile, (x, header + r * (side + pad)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG", optimize=True)
    return path
