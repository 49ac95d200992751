"""`latcomp <command>`: the command-line front end.

Each subpackage that owns commands has a `cli` module with `register(commands)`, which adds its
subparsers; handlers import what they need when they run, so serving commands never import torch and
`latcomp --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

from . import __version__


def _print_info(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2))
        return
    width = max(len(key) for key in info)
    for key, value in info.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        print(f"{key:<{width}}  {shown}")


def _example_checkpoint(directory: Path) -> Path:
    """A small, randomly initialised StyleGAN2 saved the way rosinality's train.py saves (g_ema wrapping)."""
    import torch

    from .nets import StyleGAN2Generator

    torch.manual_seed(0)
    generator = StyleGAN2Generator(size=32, style_dim=64, n_mlp=2, channels={4: 64, 8: 64, 16: 32, 32: 16})
    path = directory / "example_stylegan2.pt"
    torch.save({"g_ema": generator.state_dict(), "latent_avg": generator.compute_w_avg()}, path)
    return path


def cmd_info(args: argparse.Namespace) -> int:
    from .nets import CheckpointError, describe, load

    overrides = {"resolution": args.resolution} if args.resolution else {}
    with tempfile.TemporaryDirectory() as scratch:
        path = _example_checkpoint(Path(scratch)) if args.example else Path(args.path)
        try:
            model = load(path, arch=args.arch, **overrides)
        except CheckpointError as error:
            print(f"latcomp info: {path}: {error}", file=sys.stderr)
            return 2
        info = {"file": str(path) if not args.example else "built-in example (random weights)"}
        info.update(describe(model))
    _print_info(info, args.json)
    return 0


# Subpackages whose `cli.register(commands)` adds further commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "latcomp.training.cli",
    "latcomp.export.cli",
    "latcomp.export.tensorrt_build",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latcomp",
        description="Real-time, label-free image composition with GANs (latent-space regression).",
    )
    parser.add_argument("--version", action="version", version=f"latcomp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = commands.add_parser(
        "info",
        help="describe a checkpoint: architecture, resolution, latent shape, parameters",
        description="Describe a generator or regressor checkpoint (.pt/.pth/.ckpt/.safetensors): "
        "architecture, resolution, latent shape, parameter count and, for regressors, the mask "
        "convention; or say why it cannot be read. Files are read with torch.load(weights_only=True): "
        "a pickle that would run code is refused.",
    )
    source = info.add_mutually_exclusive_group(required=True)
    source.add_argument("path", nargs="?", help="checkpoint file")
    source.add_argument("--example", action="store_true", help="describe a small built-in example generator")
    info.add_argument(
        "--arch",
        choices=["stylegan2", "progan", "progan-encoder", "stylegan-encoder"],
        help="architecture (default: detected from the key names)",
    )
    info.add_argument(
        "--resolution",
        type=int,
        help="generator resolution a ProGAN encoder was trained for (sets its stem; default 256)",
    )
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(run=cmd_info)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 1
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
