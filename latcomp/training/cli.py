"""Training commands: `latcomp train-gan`, `latcomp train` (the regressor) and `latcomp finetune`."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import typing

from .configs import FinetuneConfig, GANConfig, RegressorConfig


def _flag_type(annotation) -> tuple[type, str | None]:
    """argparse (type, nargs) for a field's resolved type: X, X | None, tuple[X, ...] with X int/float/str."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is tuple:  # tuple[X, ...]
        return args[0], "+"
    if len(args) == 1:  # X | None
        return args[0], None
    if annotation in (int, float, str):
        return annotation, None
    raise TypeError(f"no command-line form for a field of type {annotation!r}")


def _add_dataclass_flags(parser: argparse.ArgumentParser, config_class, skip: tuple[str, ...] = ()) -> None:
    """One `--flag` per dataclass field, typed and defaulted from the field (a bool is --flag/--no-flag),
    help from the class's HELP table (every field needs one) and choices from its CHOICES table; a field
    without a default is a required flag."""
    helps = getattr(config_class, "HELP", {})
    choices = getattr(config_class, "CHOICES", {})
    types = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.name not in helps:
            raise KeyError(f"{config_class.__name__}.HELP has no entry for {field.name!r} (its {flag} help)")
        required = field.default is dataclasses.MISSING
        default = argparse.SUPPRESS if required else field.default
        if types[field.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                required=required, help=helps[field.name])
            continue
        kind, nargs = _flag_type(types[field.name])
        parser.add_argument(flag, type=kind, nargs=nargs, default=default, required=required,
                            choices=choices.get(field.name), help=helps[field.name])


def _config_from_args(config_class, args: argparse.Namespace):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)}
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler's or `kill`'s stop) takes the Ctrl-C path: save a checkpoint, then exit."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cmd_train_gan(args: argparse.Namespace) -> int:
    from .gan import GANTrainer

    _set_threads(args.threads)
    _stop_on_sigterm()
    trainer = GANTrainer(_config_from_args(GANConfig, args), resume=args.resume)
    try:
        losses = trainer.fit()
    except KeyboardInterrupt:
        print(f"stopped; resume with the same command plus --resume (checkpoint in {args.out})")
        return 130
    print(f"done at step {trainer.step}: {losses}; generator: {args.out}/generator.safetensors")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..nets import CheckpointError
    from .regressor import RegressorTrainer, close_distributed, init_distributed

    _set_threads(args.threads)
    _stop_on_sigterm()
    config = _config_from_args(RegressorConfig, args)
    init_distributed(config.device)
    try:
        try:
            trainer = RegressorTrainer(config, resume=args.resume)
        except (CheckpointError, ValueError, FileNotFoundError) as error:
            print(f"latcomp train: error: {error}", file=sys.stderr)
            return 2
        try:
            losses = trainer.fit()
        except KeyboardInterrupt:
            print(f"stopped; resume with the same command plus --resume (checkpoint in {args.out})")
            return 130
    finally:
        close_distributed()
    if trainer.is_main:
        shown = ", ".join(f"{key} {value:.4f}" for key, value in losses.items())
        print(f"done at step {trainer.step}: {shown}; best validation at step {trainer.best['step']} "
              f"(masked MAE {trainer.best['score']:.4f}): {args.out}/regressor.safetensors")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..nets import CheckpointError
    from .finetune import finetune

    _set_threads(args.threads)
    try:
        result = finetune(_config_from_args(FinetuneConfig, args))
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f"latcomp finetune: error: {error}", file=sys.stderr)
        return 2
    print(f"reconstruction MAE {result['mae_before']:.4f} -> {result['mae_after']:.4f}; "
          f"tuned regressor: {args.out}")
    return 0


def register(commands) -> None:
    gan = commands.add_parser(
        "train-gan",
        help="train our small StyleGAN2 on procedural faces or an image folder",
        description="Train a small StyleGAN2 (non-saturating logistic loss, lazy R1, style mixing, EMA "
        "generator, tracked mean w). Writes OUT/checkpoint.pt (everything needed to --resume), "
        "OUT/generator.safetensors (the EMA generator, what `latcomp train --generator` takes), "
        "OUT/samples/*.png grids and OUT/log.jsonl. Ctrl-C or SIGTERM saves a checkpoint before stopping.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_dataclass_flags(gan, GANConfig, skip=("out",))
    gan.add_argument("--out", required=True, help="run directory (created)")
    gan.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    gan.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    gan.set_defaults(run=cmd_train_gan)

    train = commands.add_parser(
        "train",
        help="train the latent regressor E for a fixed generator",
        description="Train the regressor E (masked image -> latent) for a fixed StyleGAN2 or ProGAN "
        "generator on generated samples (z ~ N(0, 1), masks from --masks), optionally mixed with real "
        "images. Losses: latent (cosine to z for ProGAN, MSE to w+ for StyleGAN2), pixel MSE of G(E(x)) "
        "against the whole image, LPIPS with user-supplied weights. Writes OUT/checkpoint.pt (last, to "
        "--resume), OUT/best.pt and OUT/regressor.safetensors (best by masked validation MAE), "
        "OUT/samples/*.png (input, mask, reconstruction, target) and OUT/log.jsonl. Multi-process: "
        "torchrun --nproc_per_node K -m latcomp train ... (gloo on CPU, nccl on CUDA).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_dataclass_flags(train, RegressorConfig)
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    train.set_defaults(run=cmd_train)

    tune = commands.add_parser(
        "finetune",
        help="adapt a copy of the regressor to one real image",
        description="Per-image adaptation: tune a copy of the regressor for a few dozen steps on ONE real "
        "image, under fresh random masks each step, so that G(E(masked image)) reproduces it faithfully "
        "for later edits. Saves the tuned regressor as .safetensors; prints the reconstruction error "
        "before and after.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_dataclass_flags(tune, FinetuneConfig)
    tune.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    tune.set_defaults(run=cmd_finetune)
