"""`latcomp eval`: the paper's composition protocol on unseen procedural faces (and an image folder), every
method scored by masked L1, realism (FD) and time, plus the hole-filling report against naive fills."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def _positive(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _methods(text: str) -> tuple[str, ...]:
    from .protocol import parse_methods

    try:
        return parse_methods(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _torch_engine(args: argparse.Namespace, engine):
    """The torch backend's engine for the optimisers and regressor features (the open one if it is)."""
    from ..runtime import open_bundle

    if engine.backend == "torch":
        return engine
    return open_bundle(args.bundle, backend="torch", device=args.device)


def _inception(args: argparse.Namespace):
    """The "inception" extractor of --inception-weights (loaded and checked now, before any heavy work), or
    None without it; ValueError, FileNotFoundError for conflicting options or a missing or wrong file."""
    if args.inception_weights is None:
        if args.features == "inception":
            raise ValueError("--features inception needs --inception-weights PATH (see docs/EVAL.md)")
        return None
    if args.features not in (None, "inception"):
        raise ValueError(f"--features {args.features} and --inception-weights exclude each other: the "
                         "weights select the inception features")
    try:
        from .realism import inception_features

        return inception_features(args.inception_weights, device=args.device)
    except ImportError:
        raise ValueError("--inception-weights needs torch (pip install 'latcomp[train]')") from None


def _features(args: argparse.Namespace, torch_engine, inception) -> tuple[Callable, dict]:
    """The extractor and the report's "features" block."""
    from .realism import CAVEATS, FEATURE_DIM, regressor_features, stats_features

    if inception is not None:
        from .inception import POOL3_DIM

        return inception, {"extractor": "inception", "dim": POOL3_DIM, "caveat": CAVEATS["inception"],
                           "weights": inception.weights, "variant": inception.variant}
    extractor = args.features or "stats"
    block = {"extractor": extractor, "dim": FEATURE_DIM, "caveat": CAVEATS[extractor]}
    if extractor == "regressor":
        return regressor_features(torch_engine.composer.regressor, device=torch_engine.device), block
    return stats_features, block


def _evaluate(args: argparse.Namespace, engine, torch_engine, settings, progress, inception
              ) -> tuple[dict, dict]:
    """The report (without header) and the grids' columns {name: {label: images}}."""
    from ..data.folder import ImageFolder
    from .inpainting import evaluate_inpainting
    from .inversion import Inverter
    from .protocol import Runner, evaluate_protocol
    from .tasks import face_collages, face_inpainting, face_reference, folder_tasks

    inverter = None
    if torch_engine is not None and any(m in ("adam", "lbfgs", "hybrid") for m in settings.methods):
        composer = torch_engine.composer
        inverter = Inverter(composer.generator, composer.latent_avg, device=torch_engine.device)
    runner = Runner(engine, inverter, settings)
    extract, features = _features(args, torch_engine, inception)
    size = engine.resolution
    report: dict = {
        "bundle": engine.name, "version": engine.version, "backend": engine.backend, "device": engine.device,
        "resolution": size, "samples": args.samples, "seed": args.seed, "parts_from": args.parts_from,
        "settings": settings.as_dict(),
        "features": features,
    }
    section, results = evaluate_protocol(
        runner, face_collages(args.samples, size, args.parts_from, args.seed),
        face_inpainting(args.samples, size, args.seed), face_reference(args.real, size, args.seed), extract,
        progress)
    report.update(section)
    grids = {"faces": _grid_columns(results["composition"])}
    if args.folder:
        folder = ImageFolder(args.folder, size)
        composition, inpainting, reference = folder_tasks(folder, args.samples, args.parts_from, args.seed,
                                                          args.real)
        section, results = evaluate_protocol(runner, composition, inpainting, reference, extract, progress)
        report["folder"] = {"path": str(Path(args.folder).resolve()), "images": len(folder), **section}
        grids["folder"] = _grid_columns(results["composition"])
    report["masks"] = evaluate_inpainting(engine, count=args.samples, seed=args.seed,
                                          realism=settings.realism)["masks"]
    return report, grids


def _grid_columns(result) -> dict:
    """The grid's columns: the inputs, then every method's results (the collage method is the input)."""
    columns = {"input": result.task.inputs}
    columns.update({name: output.images for name, output in result.outputs.items() if name != "collage"})
    return columns


def cmd_eval(args: argparse.Namespace) -> int:
    from ..report import Progress, machine_line, run_header, write_json, write_text
    from ..runtime import BundleError, open_bundle
    from .figures import image_grid, tradeoff_plot
    from .inpainting import markdown
    from .protocol import OPTIMISED, Settings, markdown_section

    try:
        inception = _inception(args)
    except (ValueError, OSError, RuntimeError) as error:  # OSError: a missing file; RuntimeError: --device
        print(f"latcomp eval: {error}", file=sys.stderr)
        return 2
    settings = Settings(methods=args.methods, steps=args.steps, lr=args.lr, loss=args.loss, batch=args.batch,
                        realism=args.realism)
    needs_torch = any(m in OPTIMISED for m in settings.methods) or args.features == "regressor"
    progress = Progress("eval", enabled=not args.quiet)
    try:
        engine = open_bundle(args.bundle, backend=args.backend, device=args.device)
    except (BundleError, ValueError, RuntimeError) as error:
        print(f"latcomp eval: {error}", file=sys.stderr)
        return 2
    with engine:
        torch_engine = None
        try:
            torch_engine = _torch_engine(args, engine) if needs_torch else None
            report, grids = _evaluate(args, engine, torch_engine, settings, progress, inception)
        except (BundleError, ValueError, FileNotFoundError, ImportError) as error:
            print(f"latcomp eval: {error}", file=sys.stderr)
            return 2
        finally:
            if torch_engine is not None and torch_engine is not engine:
                torch_engine.close()
    result = {**run_header("eval"), **report}
    summary = _markdown(result, markdown, markdown_section, machine_line)
    if args.json:
        write_json(args.json, result)
    if args.markdown:
        write_text(args.markdown, summary + "\n")
    if args.plot:
        panels = [("faces: composition", result["methods"], result["real"]["fd_floor"]),
                  ("faces: inpainting", result["inpainting"]["methods"], result["real"]["fd_floor"])]
        if "folder" in result:
            folder = result["folder"]
            panels += [("folder: composition", folder["methods"], folder["real"]["fd_floor"]),
                       ("folder: inpainting", folder["inpainting"]["methods"], folder["real"]["fd_floor"])]
        tradeoff_plot(panels, args.plot)
    if args.grid:
        grid = Path(args.grid)
        image_grid(grids["faces"], grid, rows=args.grid_rows)
        if "folder" in grids:
            folder_grid = grid.with_name(f"{grid.stem}-folder{grid.suffix}")
            image_grid(grids["folder"], folder_grid, rows=args.grid_rows)
    print(summary)
    return 0


def _markdown(result: dict, masks_markdown, markdown_section, machine_line) -> str:
    lines = [f"## latcomp eval: {result['bundle']} {result['version']} ({result['resolution']} px, backend "
             f"{result['backend']}, {result['device']})", "",
             f"Machine: {machine_line(result['machine'])}", "",
             markdown_section(result, "Procedural faces"), ""]
    if "folder" in result:
        lines += [markdown_section(result["folder"], f"Folder {result['folder']['path']}"), ""]
    features = result["features"]
    if features["extractor"] == "inception":
        lines += [f"Features: InceptionV3 pool3 ({features['variant']} weights, {features['weights']}).", ""]
    lines += [f"Note: {features['caveat']}", "",
              "### Hole filling against naive fills (the bundle only)", "", masks_markdown(result)]
    return "\n".join(lines)


def register(commands) -> None:
    from .inversion import LOSSES
    from .realism import EXTRACTORS

    evaluate = commands.add_parser(
        "eval",
        help="the paper's composition protocol: regressor vs optimisation vs naive fills",
        description="Builds collages from the part maps of several unseen procedural faces (eyes from one, "
        "mouth from another, ...) and hides pixels of unseen faces with the paper's masks, completes them "
        "with every method (the bundle's regressor, the regressor without a mask, Adam and L-BFGS latent "
        "optimisation, the hybrid, and naive fills), and reports per method the masked L1 to the input over "
        "its known pixels (0-1 scale), the Fréchet distance of the results to unseen real images and the "
        "time per image. The hole-filling error against naive fills follows. See docs/EVAL.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evaluate.add_argument("bundle", nargs="?", help="bundle directory (default: the shipped bundle)")
    evaluate.add_argument("--samples", type=_positive(2), default=64,
                          help="collages, masked faces and faces per mask kind")
    evaluate.add_argument("--seed", type=int, default=0, help="which held-out faces and masks")
    evaluate.add_argument("--parts-from", type=_positive(2), default=4, help="faces each collage is cut from")
    evaluate.add_argument("--real", type=_positive(2), default=256,
                          help="unseen real images the realism of every method is measured against")
    evaluate.add_argument("--folder", metavar="DIR", help="also evaluate on a folder of real images "
                          "(region collages, since a folder has no part maps)")
    methods = evaluate.add_argument_group("methods")
    methods.add_argument("--methods", type=_methods, default="all",
                         help="comma-separated subset of regressor, regressor_no_mask, adam, lbfgs, hybrid, "
                         "collage, mean_fill, diffusion_fill")
    methods.add_argument("--steps", type=_positive(0), default=100,
                         help="generator evaluations per image for each optimiser (adam, lbfgs, hybrid)")
    methods.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate")
    methods.add_argument("--loss", choices=LOSSES, default="l2", help="the optimisers' masked pixel loss")
    methods.add_argument("--batch", type=_positive(1), default=16, help="images optimised together")
    methods.add_argument("--realism", type=float, default=0.0, help="the composer's realism knob (0..1)")
    methods.add_argument("--backend", default="auto", choices=("auto", "ort", "trt", "torch"),
                         help="engine for the regressor methods (the optimisers always use torch)")
    methods.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    realism = evaluate.add_argument_group("realism")
    realism.add_argument("--features", choices=EXTRACTORS, default=None,
                         help="Fréchet distance features: colour/gradient statistics (the default), the "
                         "bundle's regressor, or InceptionV3 pool3 (2048-d, FID-style, the default with "
                         "--inception-weights)")
    realism.add_argument("--inception-weights", metavar="PATH",
                         help="InceptionV3 weights for FID-style realism: pytorch-fid's "
                         "pt_inception-2015-12-05-6726825d.pth or torchvision's "
                         "inception_v3_google-0cc3c7bd.pth (.pth or .safetensors; not shipped, see "
                         "docs/EVAL.md)")
    out = evaluate.add_argument_group("output (the Markdown summary always goes to stdout)")
    out.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    out.add_argument("--markdown", metavar="PATH", help="write the Markdown summary to a file too")
    out.add_argument("--plot", metavar="PATH", help="write the trade-off plot (PNG)")
    out.add_argument("--grid", metavar="PATH", help="write the image grid (PNG; -folder suffix for a folder)")
    out.add_argument("--grid-rows", type=_positive(1), default=6, help="collages in the grid")
    out.add_argument("--quiet", action="store_true", help="no progress on stderr")
    evaluate.set_defaults(run=cmd_eval)
