"""What the benchmarks (latcomp.bench) and the evaluation (latcomp.eval) write: machine description,
statistics, progress lines, JSON, Markdown tables and PNG plots drawn with Pillow.

Plots are drawn with Pillow (already a dependency of the serving path) rather than matplotlib, so that
benchmarking a deployed server needs nothing more than `pip install latcomp`: a chart here is a few
panels of lines with axes, ticks, labels and a legend, which is all a report needs. `load_font`,
`text_size`, the colours and the tick helpers are public for figures of their own (latcomp.eval.figures).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LIBRARIES = (
    "latcomp",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "torch",
    "tensorrt",
    "grpcio",
    "protobuf",
    "pillow",
)


# ---- machine and run description ------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpus() -> list[dict]:
    """[{index, name, memory_mib, driver}] from nvidia-smi (no CUDA library is loaded); [] without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = "--query-gpu=index,name,memory.total,driver_version"
    try:
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in done.stdout.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            memory = int(parts[2]) if parts[2].isdigit() else None
            found.append({"index": int(parts[0]), "name": parts[1], "memory_mib": memory, "driver": parts[3]})
    return found


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide the numbers (without importing them)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict:
    from .runtime.ort_engine import physical_cores

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "physical_cores": physical_cores(),
        "memory_gb": _memory_gb(),
        "gpus": gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def run_header(benchmark: str) -> dict:
    """The fields every result JSON starts with: what ran, where and when."""
    program = Path(sys.argv[0])
    # `python -m latcomp` runs latcomp/__main__.py; show the command as it was typed
    start = (
        ["python", "-m", program.parent.name] if program.name == "__main__.py" else [program.name or "python"]
    )
    argv = [*start, *sys.argv[1:]]
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(argv),
        "machine": machine_info(),
    }


def machine_line(machine: dict) -> str:
    cores = f"{machine['physical_cores']} physical / {machine['usable_cores']} usable cores"
    gpu = ", ".join(g["name"] for g in machine["gpus"]) or "no GPU"
    libraries = ", ".join(f"{name} {version}" for name, version in machine["libraries"].items())
    return f"{machine['cpu']} ({cores}), {gpu}; {libraries}"


# ---- statistics -----------------------------------------------------------------------------------------


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": ..., "mean", "min", "max"} of `values` (linear interpolation); all None when empty."""
    if len(values) == 0:
        return dict.fromkeys([f"p{p}" for p in points] + ["mean", "min", "max"])
    array = np.asarray(values, np.float64)
    found = np.percentile(array, list(points))
    stats = {f"p{p}": float(value) for p, value in zip(points, found, strict=True)}
    stats.update(mean=float(array.mean()), min=float(array.min()), max=float(array.max()))
    return stats


def thinned(values: Sequence[float], limit: int = 1000) -> list[float]:
    """At most `limit` sorted values, evenly spaced in rank (enough to draw a CDF)."""
    ordered = np.sort(np.asarray(values, np.float64))
    if len(ordered) > limit:
        ordered = ordered[np.linspace(0, len(ordered) - 1, limit).round().astype(int)]
    return [round(float(v), 4) for v in ordered]


def si(value: float | None, unit: str = "", digits: int = 3) -> str:
    """1.23e9 -> '1.23 G' + unit; None -> '-'."""
    if value is None or not math.isfinite(value):
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}".rstrip()


def fixed(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---- files ----------------------------------------------------------------------------------------------


def write_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub Markdown table; `align` has one letter per column, 'l' or 'r' (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class Progress:
    """Progress on stderr: one rewritten line on a terminal, one line per `done` otherwise."""

    def __init__(self, prefix: str, stream=None, enabled: bool = True):
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._width = 0

    def update(self, text: str) -> None:
        """Transient status (shown on terminals only)."""
        if self.tty:
            line = f"[{self.prefix}] {text}"
            self.stream.write("\r" + line.ljust(self._width))
            self.stream.flush()
            self._width = len(line)

    def done(self, text: str) -> None:
        """A finished step (always shown)."""
        if not self.enabled:
            return
        line = f"[{self.prefix}] {text}"
        self.stream.write(("\r" + line.ljust(self._width) if self.tty else line) + "\n")
        self.stream.flush()
        self._width = 0


# ---- plots (Pillow) -------------------------------------------------------------------------------------

COLORS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
INK, GRID, BACKGROUND = (40, 40, 40), (225, 225, 225), (255, 255, 255)


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    markers: bool = True


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    xlog2: bool = False  # log2 x axis ticked at the data's x values (batch sizes, concurrency levels)
    ymax: float | None = None  # None: from the data


def load_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled FreeType font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2, 2.5 or 5 times a power of ten) up to at least `high`."""
    if not high > 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(math.ceil(high / step - 1e-9)) + 1)]


def tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return si(value, digits=3).replace(" ", "")
    return f"{value:.3g}"


def text_size(draw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _draw_panel(panel: Panel, width: int, height: int, color_of: dict[str, tuple]):
    from PIL import Image, ImageDraw

    font, small, bold = load_font(13), load_font(11), load_font(14)
    legend_rows = math.ceil(len(panel.series) / 2)
    legend_h = 18 * legend_rows + 8
    image = Image.new("RGB", (width, height + legend_h), BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 66, width - 16, 30, height - 46
    title_w, _ = text_size(draw, panel.title, bold)
    draw.text(((width - title_w) // 2, 6), panel.title, fill=INK, font=bold)

    points = [
        (x, y)
        for s in panel.series
        for x, y in zip(s.x, s.y, strict=True)
        if y is not None and math.isfinite(y)
    ]
    xs = sorted({x for x, _ in points}) or [1.0]
    ymax = panel.ymax if panel.ymax is not None else max((y for _, y in points), default=1.0) * 1.05
    yticks = nice_ticks(ymax)
    ytop = yticks[-1]

    if panel.xlog2:
        xticks = xs
        lo, hi = math.log2(min(xs)), math.log2(max(xs))
        span = (hi - lo) or 1.0

        def px(x):
            return left + (math.log2(x) - lo) / span * (right - left) if hi > lo else (left + right) / 2
    else:
        xticks = nice_ticks(max(xs))
        xtop = xticks[-1]

        def px(x):
            return left + x / xtop * (right - left)

    def py(y):
        return bottom - y / ytop * (bottom - top)

    for tick in yticks:  # horizontal grid and y tick labels
        y = py(tick)
        draw.line([(left, y), (right, y)], fill=GRID)
        label = tick_label(tick)
        w, h = text_size(draw, label, small)
        draw.text((left - 6 - w, y - h / 2 - 2), label, fill=INK, font=small)
    for tick in xticks:
        x = px(tick)
        draw.line([(x, top), (x, bottom)], fill=GRID)
        label = tick_label(tick)
        w, _ = text_size(draw, label, small)
        draw.text((x - w / 2, bottom + 5), label, fill=INK, font=small)
    draw.rectangle([left, top, right, bottom], outline=INK)

    w, _ = text_size(draw, panel.xlabel, font)
    draw.text(((left + right - w) / 2, bottom + 22), panel.xlabel, fill=INK, font=font)
    w, h = text_size(draw, panel.ylabel, font)
    label = Image.new("RGB", (w + 4, h + 6), BACKGROUND)
    ImageDraw.Draw(label).text((2, 0), panel.ylabel, fill=INK, font=font)
    label = label.rotate(90, expand=True)
    image.paste(label, (4, int((top + bottom - label.height) / 2)))

    for series in panel.series:
        color = color_of[series.label]
        line = [
            (px(x), py(y))
            for x, y in zip(series.x, series.y, strict=True)
            if y is not None and math.isfinite(y) and (not panel.xlog2 or x > 0)
        ]
        if len(line) > 1:
            draw.line(line, fill=color, width=2, joint="curve")
        if series.markers:
            for x, y in line:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)

    column_w = (width - 2 * 16) // 2
    for index, series in enumerate(panel.series):  # legend: two columns under the axes
        x = 16 + (index % 2) * column_w
        y = height + 2 + 18 * (index // 2)
        draw.line([(x, y + 7), (x + 22, y + 7)], fill=color_of[series.label], width=3)
        draw.text((x + 28, y), series.label, fill=INK, font=small)
    return image


def line_chart(
    panels: Sequence[Panel], path: str | Path, panel_width: int = 520, panel_height: int = 360
) -> None:
    """Writes the panels side by side as one PNG; a label has the same colour in every panel."""
    from PIL import Image

    labels = list(dict.fromkeys(s.label for panel in panels for s in panel.series))
    color_of = {label: COLORS[i % len(COLORS)] for i, label in enumerate(labels)}
    images = [_draw_panel(panel, panel_width, panel_height, color_of) for panel in panels]
    chart = Image.new("RGB", (panel_width * len(images), max(i.height for i in images)), BACKGROUND)
    for index, image in enumerate(images):
        chart.paste(image, (index * panel_width, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.save(path, format="PNG", optimize=True)
