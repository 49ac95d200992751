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
from .archs import ARCHS


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


def _info_checkpoint(args: argparse.Namespace) -> dict:
    try:
        from .nets import describe, load
    except ImportError as error:  # the serving install (.[cpu]) has no torch
        raise ImportError(f"describing a checkpoint needs torch ({error}): pip install -e '.[train]'") \
            from None

    overrides = {"resolution": args.resolution} if args.resolution else {}
    with tempfile.TemporaryDirectory() as scratch:
        path = _example_checkpoint(Path(scratch)) if args.example else Path(args.path)
        model = load(path, arch=args.arch, **overrides)
    source = "built-in example (random weights)" if args.example else str(path)
    return {"file": source, **describe(model)}


def _info_bundle(path: Path) -> dict:
    from .runtime import read_bundle

    manifest = read_bundle(path).manifest
    keys = ("name", "version", "resolution", "latent_shape", "z_dim", "max_batch", "mask_convention")
    info = {"bundle": str(path), **{key: manifest.get(key) for key in keys}}
    info["generator"] = manifest["generator"]["arch"]
    info["regressor"] = manifest["regressor"]["arch"]
    info["graphs"] = sorted(manifest["graphs"])
    info["plans"] = [plan["file"] for plan in manifest.get("plans", [])]
    return info


def cmd_info(args: argparse.Namespace) -> int:
    """A checkpoint file, a bundle directory or a running server: whichever was named; nothing named: the
    bundle shipped with latcomp."""
    try:
        if args.server:
            from .service.cli import server_info

            info = server_info(args.server, tls_ca=args.tls_ca)
        elif args.path is None and not args.example:
            from .runtime.bundle import DEFAULT_BUNDLE

            info = {"shipped_bundle": str(DEFAULT_BUNDLE), **_info_bundle(DEFAULT_BUNDLE)}
            del info["bundle"]
        elif args.path and Path(args.path).is_dir():
            info = _info_bundle(Path(args.path))
        else:
            info = _info_checkpoint(args)
    except Exception as error:  # every failure here is the user's input; say it in one line
        where = args.server or args.path or "example"
        print(f"latcomp info: {where}: {getattr(error, 'details', None) or error}", file=sys.stderr)
        return 2
    _print_info(info, args.json)
    return 0


# Subpackages whose `cli.register(commands)` adds further commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "latcomp.training.cli",
    "latcomp.export.cli",
    "latcomp.export.tensorrt_build",
    "latcomp.service.cli",
    "latcomp.bench.cli",
    "latcomp.eval.cli",
    "latcomp.demo",
    "latcomp.examples",
    "latcomp.studio.cli",
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's --help line ends with its default, unless its help already states one or the option
    is required; a flag's default reads "off"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        positional = not action.option_strings and action.nargs not in ("?", "*")
        if positional or action.required or action.default is argparse.SUPPRESS or "default" in text.lower():
            return text
        if action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction):
            return f"{text} (default: off)"  # store_true / store_false / store_const: not given
        return super()._get_help_string(action)


def _use_formatter(parser: argparse.ArgumentParser) -> None:
    """HelpFormatter for the parser and every (sub)command under it, however its module registered it."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _use_formatter(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latcomp",
        description="Real-time, label-free image composition with GANs (latent-space regression).",
    )
    parser.add_argument("--version", action="version", version=f"latcomp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = commands.add_parser(
        "info",
        help="describe a checkpoint, a bundle or a running server",
        description="Describe a generator or regressor checkpoint (.pt/.pth/.ckpt/.safetensors): "
        "architecture, resolution, latent shape, parameter count and, for regressors, the mask "
        "convention; or a bundle directory (verified: checksums, format version); or the model a running "
        "server holds (--server); with nothing named, the bundle shipped with latcomp and its path. Says why "
        "when it cannot. Checkpoints are read with torch.load(weights_only=True): a pickle that would run "
        "code is refused.",
    )
    source = info.add_mutually_exclusive_group()
    source.add_argument("path", nargs="?", help="checkpoint file or bundle directory (default: the shipped "
                        "bundle)")
    source.add_argument("--example", action="store_true", help="describe a small built-in example generator")
    source.add_argument("--server", metavar="HOST:PORT", help="ask a running `latcomp serve` (token from "
                        "env LATCOMP_AUTH_TOKEN)")
    info.add_argument("--tls-ca", help="with --server: CA certificate (PEM) of a TLS server")
    info.add_argument(
        "--arch",
        choices=ARCHS,
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
    _use_formatter(parser)
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
