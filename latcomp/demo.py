"""`latcomp demo`: the whole path once, offline: a server on a bundle, a composite and an inpaint over gRPC.

Parts of three procedural faces (hair, skin and background from one, eyes and brows from a second, nose and
mouth from a third) are sent as Composite layers; a fourth face with a hole is sent to Inpaint. The images
that come back are written to OUT at their true size, with one summary sheet (demo.png) to look at, whose
tiles are enlarged with nearest-neighbour sampling so a 64 px model's pixels stay visible as pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .data import faces
from .data.masks import part_mask, rectangle_mask
from .imaging import gray_to_rgb, grid, save_png

# Which face lends which parts to the collage (the paper's composition task on our faces).
LAYERS = (("background", "clothes", "skin", "hair"), ("eyes", "brows"), ("nose", "mouth"))


def collage_layers(seeds: tuple[int, int, int], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) per layer: the whole face image, known only on the parts it lends."""
    rng = np.random.default_rng(0)  # part_mask draws only when `keep` is not given
    layers = []
    for seed, keep in zip(seeds, LAYERS, strict=True):
        face = faces.render(seed, size)
        layers.append((face.image, part_mask(rng, face.parts, keep=keep)))
    return layers


def hole_image(seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(original, image with the hole greyed, mask) for the inpainting request."""
    original = faces.render(seed, size).image
    mask = rectangle_mask(np.random.default_rng(seed), size)
    shown = np.where(mask[..., None] > 0, original, 128).astype(np.uint8)
    return original, shown, mask


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """`image` `scale` times larger, each pixel a scale x scale block (for display, never resampled)."""
    height, width = image.shape[:2]
    larger = Image.fromarray(image).resize((width * scale, height * scale), Image.Resampling.NEAREST)
    return np.asarray(larger)


def run_demo(out: Path, bundle: str | None, backend: str, seeds: tuple[int, ...],
             sheet_scale: int = 4) -> dict:
    from .runtime import open_bundle
    from .service.client import Client
    from .service.server import ServerConfig, ServerThread

    engine = open_bundle(bundle, backend=backend)
    size = engine.resolution
    layers = collage_layers(seeds[:3], size)
    original, shown, mask = hole_image(seeds[3], size)
    with ServerThread(engine, ServerConfig(host="127.0.0.1", port=0, metrics_port=0)) as server, \
            Client(server.target) as client:
        composite = client.composite(layers, return_input=True)
        inpaint = client.inpaint(shown, mask)
    engine.close()

    collage = composite.input
    tiles = np.stack([*(image for image, _ in layers), collage, composite.image,
                      shown, gray_to_rgb(mask), inpaint.image, original])
    sheet = grid(np.stack([enlarge(tile, sheet_scale) for tile in tiles]), columns=5, padding=4)
    written = {
        "composite_input.png": collage, "composite_result.png": composite.image,
        "inpaint_input.png": shown, "inpaint_mask.png": mask, "inpaint_result.png": inpaint.image,
        "demo.png": sheet,
    }
    for name, image in written.items():
        save_png(out / name, image)
    return {
        "server": server.target, "bundle": engine.name, "backend": engine.backend, "resolution": size,
        "sheet_scale": sheet_scale,
        "composite_ms": composite.timing, "inpaint_ms": inpaint.timing,
        "files": sorted(str(out / name) for name in written),
    }


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        if args.sheet_scale < 1:
            raise ValueError(f"--sheet-scale must be at least 1, got {args.sheet_scale}")
        report = run_demo(Path(args.out), args.bundle, args.backend, tuple(args.seeds), args.sheet_scale)
    except Exception as error:  # a missing bundle, a port that cannot be bound: say it in one line
        print(f"latcomp demo: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str))
    print(f"look at {Path(args.out) / 'demo.png'}: three faces lending parts, the collage, the composite; "
          "a face with a hole, its mask, the inpainting, the original (the model works at "
          f"{report['resolution']} px; each tile is shown {args.sheet_scale}x larger, nearest-neighbour)")
    return 0


def register(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="serve a bundle, send a composite and an inpaint of procedural faces, save the images",
        description="The main job end to end, offline and on the CPU: open BUNDLE (default: the shipped "
        "model), serve it over gRPC on 127.0.0.1, send a Composite of parts cut from three procedural faces "
        "and an Inpaint of a fourth face with a hole, and write what came back to OUT (demo.png is a summary "
        "sheet). Prints the server's queue and compute times.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--bundle", help="bundle directory (default: the bundle shipped with latcomp)")
    demo.add_argument("--backend", default="auto", choices=("auto", "ort", "trt", "torch"),
                      help="engine the demo's server runs")
    demo.add_argument("--out", default="demo_out", help="where the images are written")
    demo.add_argument("--seeds", type=int, nargs=4, default=(3, 14, 15, 92), metavar="SEED",
                      help="faces: hair/skin/background, eyes/brows, nose/mouth, and the face to inpaint")
    demo.add_argument("--sheet-scale", type=int, default=4, metavar="N",
                      help="demo.png shows each image N times larger (nearest-neighbour, for display; the "
                      "other files keep the model's size)")
    demo.set_defaults(run=cmd_demo)
