"""`latcomp eval`: how well a bundle completes held-out procedural faces, against naive fills."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_eval(args: argparse.Namespace) -> int:
    from ..runtime import BundleError, open_bundle
    from .inpainting import evaluate_inpainting, markdown

    try:
        engine = open_bundle(args.bundle, backend=args.backend)
    except (BundleError, ValueError) as error:
        print(f"latcomp eval: {error}", file=sys.stderr)
        return 2
    with engine:
        report = evaluate_inpainting(engine, count=args.samples, seed=args.seed, realism=args.realism)
    report.update({"bundle": engine.name, "version": engine.version, "backend": engine.backend})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


def register(commands) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="hole-filling error of a bundle on held-out procedural faces vs naive fills",
        description="Renders held-out procedural faces (seeds never used in training), hides pixels with "
        "the paper's masks, rectangles, or nothing (full), runs the bundle and reports the mean absolute "
        "error (0-1 scale) inside the holes, over the known pixels and overall, with the mean-colour fill "
        "and the bare collage as baselines, plus the time per image.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evaluate.add_argument("bundle", nargs="?", help="bundle directory (default: the shipped bundle)")
    evaluate.add_argument("--samples", type=int, default=64, help="faces per mask kind")
    evaluate.add_argument("--seed", type=int, default=0, help="which held-out faces and masks")
    evaluate.add_argument("--realism", type=float, default=0.0, help="the composer's realism knob (0..1)")
    evaluate.add_argument("--backend", default="auto", choices=("auto", "ort", "trt", "torch"))
    evaluate.add_argument("--json", help="also write the report as JSON here")
    evaluate.set_defaults(run=cmd_eval)
