"""`latcomp export`: a generator + regressor pair of checkpoints -> a bundle directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..archs import ENCODER_ARCHS, GENERATOR_ARCHS
from .quantize import INT8_MIN_PSNR_DB
from .synthetic import NAMES as SYNTHETIC_NAMES


def _load_pair(args: argparse.Namespace):
    from ..nets import load

    generator = load(args.generator, arch=args.arch_generator)
    regressor = load(args.regressor, arch=args.arch_regressor)
    if regressor.arch == "progan-encoder":
        # its stem depends on the generator resolution it was trained for, which the weights cannot tell
        wanted = args.resolution or generator.resolution
        if regressor.resolution != wanted:
            regressor = load(args.regressor, arch="progan-encoder", resolution=wanted)
    return generator, regressor


def _summary(path: Path, manifest: dict) -> str:
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    lines = [f"wrote {path} ({manifest['name']} {manifest['version']}, {total / 1e6:.1f} MB): "
             + ", ".join(sorted(manifest["files"]))]
    for graph, metrics in manifest["parity"].items():
        shown = [f"{key}={value}" for key, value in metrics.items() if key != "passed"]
        lines.append(f"  parity {graph}: " + " ".join(shown))
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(f"latcomp export: {message}", file=sys.stderr, flush=True)


def cmd_export(args: argparse.Namespace) -> int:
    from ..nets import CheckpointError
    from .bundle import export_bundle
    from .parity import ParityError

    if bool(args.synthetic) == bool(args.generator or args.regressor):
        print("latcomp export: give --generator and --regressor, or --synthetic NAME", file=sys.stderr)
        return 2
    if args.synthetic and (args.arch_generator or args.arch_regressor or args.resolution or args.metrics):
        print("latcomp export: --synthetic builds its own pair; --arch-*, --resolution and --metrics do not "
              "apply", file=sys.stderr)
        return 2
    options = {"max_batch": args.max_batch, "fp16": not args.no_fp16, "int8": args.int8,
               "overwrite": args.overwrite, "log": _progress}
    try:
        if args.synthetic:
            from .synthetic import synthetic_bundle

            path = synthetic_bundle(args.synthetic, args.out, **options)
        else:
            if not (args.generator and args.regressor):
                raise ValueError("give both --generator and --regressor")
            generator, regressor = _load_pair(args)
            training = json.loads(Path(args.metrics).read_text()) if args.metrics else {}
            path = export_bundle(generator, regressor, args.out, name=args.name or Path(args.out).name,
                                 version=args.bundle_version, provenance={"training": training}, **options)
    except (CheckpointError, ParityError, FileExistsError, ValueError, OSError) as error:
        print(f"latcomp export: {error}", file=sys.stderr)
        return 2
    print(_summary(path, json.loads((path / "latcomp.json").read_text())))
    if args.triton:
        from .triton import write_triton_repository

        model = write_triton_repository(path, args.triton, max_batch=args.max_batch,
                                        instances=args.triton_instances, kind=args.triton_kind)
        print(f"wrote the Triton model repository entry {model}")
    return 0


def register(commands) -> None:
    export = commands.add_parser(
        "export",
        help="export a generator + regressor pair as a bundle (ONNX graphs, parity report, manifest)",
        description="Fuse a regressor and a generator into one ONNX graph (uint8 image + mask + realism -> "
        "uint8 image + latent), export the generator and sampler graphs beside it and an FP16 composer, "
        "check every graph against the torch modules, and write the bundle directory with its manifest "
        "(latcomp.json: sha256 of every file, parity, provenance). Nothing is written if parity fails.",
    )
    export.add_argument("--generator", help="generator checkpoint (.pt/.pth/.safetensors)")
    export.add_argument("--regressor", help="regressor (encoder) checkpoint")
    export.add_argument("--synthetic", choices=SYNTHETIC_NAMES, metavar="NAME",
                        help="instead of checkpoints: random weights in one of the paper's layouts, for "
                        f"benchmarks and memory checks ({', '.join(SYNTHETIC_NAMES)}; StyleGAN2 with the "
                        "ResNet-34 regressor, ProGAN with ResNet-18)")
    export.add_argument("--out", required=True, help="bundle directory to create")
    export.add_argument("--name", help="bundle name (default: the directory name)")
    export.add_argument("--bundle-version", default="1", help="version recorded in the manifest (default: 1)")
    export.add_argument("--max-batch", type=int, default=16, help="engines' batch limit (default: 16)")
    export.add_argument("--no-fp16", action="store_true", help="skip the FP16 composer graph")
    export.add_argument("--int8", action="store_true",
                        help="also write an INT8 composer for CPUs (static QDQ, calibrated on the "
                        "generator's own samples and the training masks; refused below "
                        f"{INT8_MIN_PSNR_DB:g} dB PSNR against the torch modules); opened with precision "
                        "int8")
    export.add_argument("--arch-generator", choices=GENERATOR_ARCHS, help="default: detected from the keys")
    export.add_argument("--arch-regressor", choices=ENCODER_ARCHS, help="default: detected from the keys")
    export.add_argument("--resolution", type=int,
                        help="generator resolution a ProGAN encoder was trained for "
                        "(default: the generator's)")
    export.add_argument("--metrics", help="JSON file of training metrics to record in the provenance")
    export.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    export.add_argument("--triton", metavar="DIR",
                        help="also write a Triton model repository for the bundle (DIR/composer: "
                        "config.pbtxt with dynamic batching, the ONNX composer and its weights)")
    export.add_argument("--triton-kind", choices=("gpu", "cpu"), default="gpu",
                        help="Triton instance kind; gpu adds the TensorRT FP16 accelerator (default: gpu)")
    export.add_argument("--triton-instances", type=int, default=1,
                        help="model instances per device in the Triton config (default: 1)")
    export.set_defaults(run=cmd_export)
