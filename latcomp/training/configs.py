"""Training configurations: one dataclass per command, turned into flags by `latcomp.training.cli`.

Kept free of torch so that building the command line (and `latcomp --help`) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..archs import ENCODER_ARCHS, GENERATOR_ARCHS


@dataclass
class GANConfig:
    out: str
    data: str = "faces"  # "faces" (procedural) or an image folder
    size: int = 64
    steps: int = 20_000
    batch_size: int = 32
    style_dim: int = 128
    n_mlp: int = 4
    channel_base: int = 2048  # width at resolution r: min(channel_max, channel_base // r)
    channel_max: int = 128
    lr: float = 0.002
    r1_gamma: float | None = None  # None: 0.0002 * size^2 / batch_size (StyleGAN2-ADA's heuristic)
    d_reg_every: int = 16
    mixing: float = 0.9
    ema_kimg: float = 10.0  # EMA half-life in thousands of images (ramped up over the first steps)
    dataset_size: int = 20_000  # procedural faces rendered once and cached
    seed: int = 0
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 25
    device: str = "cpu"

    HELP: ClassVar[dict[str, str]] = {
        "data": "'faces' for procedural faces, or an image folder",
        "size": "image resolution (power of two)",
        "steps": "total optimisation steps (a resumed run continues up to this number)",
        "batch_size": "images per optimisation step",
        "style_dim": "z and w width",
        "n_mlp": "mapping network depth",
        "channel_base": "generator/discriminator width at resolution r is min(channel-max, channel-base / r)",
        "channel_max": "widest layer of the generator and the discriminator",
        "lr": "Adam learning rate of both networks",
        "r1_gamma": "R1 weight; default 0.0002 * size^2 / batch-size",
        "d_reg_every": "lazy regularisation interval for R1",
        "mixing": "style-mixing probability",
        "ema_kimg": "EMA half-life in thousands of images",
        "dataset_size": "number of procedural faces rendered (cached under --out)",
        "seed": "random seed (weights, data order, noise)",
        "log_every": "steps between lines of OUT/log.jsonl",
        "sample_every": "steps between sample grids",
        "checkpoint_every": "steps between checkpoints",
        "device": "torch device, e.g. cpu or cuda",
    }

    def channels(self) -> dict[int, int]:
        resolutions = [2**i for i in range(2, self.size.bit_length())]
        return {res: min(self.channel_max, self.channel_base // res) for res in resolutions}


@dataclass
class RegressorConfig:
    generator: str
    out: str
    arch: str | None = None
    regressor_arch: str | None = None
    init_regressor: str | None = None
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    widths: tuple[int, ...] = (32, 64, 128, 256)
    input_size: int | None = None
    steps: int = 20_000
    batch_size: int = 16
    lr: float = 1e-4
    masks: str = "paper"
    real_images: str | None = None
    real_fraction: float = 0.25
    losses: str = "latent:1,pixel:1,lpips:1"
    lpips_weights: tuple[str, ...] = ()
    loss_plugins: tuple[str, ...] = ()
    grad_clip: float | None = None
    amp: str = "bf16"
    val_every: int = 500
    val_size: int = 64
    log_every: int = 25
    seed: int = 0
    device: str = "cpu"

    HELP: ClassVar[dict[str, str]] = {
        "generator": "the fixed generator: a published StyleGAN2/ProGAN checkpoint or our .safetensors",
        "out": "run directory (created)",
        "arch": "generator architecture; None: detected from the file",
        "regressor_arch": "regressor; None: stylegan-encoder for StyleGAN2, progan-encoder for ProGAN",
        "init_regressor": "start from the weights of this regressor .safetensors (same architecture) instead "
        "of a random initialisation; the optimiser starts fresh",
        "blocks": "BasicBlocks per ResNet stage (the paper: 3 4 6 3 = ResNet-34 for StyleGAN2, "
        "2 2 2 2 = ResNet-18 for ProGAN)",
        "widths": "channels per ResNet stage (the paper: 64 128 256 512)",
        "input_size": "StyleGAN encoder input size; None: the generator's resolution",
        "steps": "total optimisation steps (a resumed run continues up to this number)",
        "batch_size": "samples per step and process (DDP: the global batch is this times the world size)",
        "lr": "Adam learning rate (betas 0.5, 0.999)",
        "masks": "mask strategy mixture, e.g. 'paper' or 'paper:0.5,rect:0.2,brush:0.2,parts:0.1' "
        "('parts' applies only to real images that come with part maps: --real-images faces)",
        "real_images": "mix in real images: an image folder, or 'faces' for procedural faces with part maps",
        "real_fraction": "share of each batch taken from --real-images (image losses only)",
        "losses": "weighted loss terms name:weight; built in: latent, pixel, lpips (off without "
        "--lpips-weights)",
        "lpips_weights": "LPIPS files: a torchvision vgg16/alexnet state_dict, optionally plus the LPIPS "
        "linear-layer file (vgg.pth/alex.pth); see latcomp/training/lpips.py",
        "loss_plugins": "Python modules imported first, to register extra losses for --losses",
        "grad_clip": "clip the gradient norm to this value; None: no clipping",
        "amp": "autocast precision on CUDA (CPU always runs fp32)",
        "val_every": "steps between validations (fixed seeds; best.pt, regressor.safetensors, samples)",
        "val_size": "validation samples",
        "log_every": "steps between log records",
        "seed": "seed of the regressor's initialisation and of every training draw",
        "device": "torch device, e.g. cpu or cuda (under torchrun each process takes cuda:LOCAL_RANK)",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "arch": GENERATOR_ARCHS, "regressor_arch": ENCODER_ARCHS, "amp": ("bf16", "fp16", "off"),
    }


@dataclass
class FinetuneConfig:
    generator: str
    regressor: str
    image: str
    out: str
    mask: str | None = None
    arch: str | None = None
    steps: int = 50
    batch_size: int = 4
    lr: float = 1e-4
    masks: str = "paper"
    losses: str = "pixel:1,lpips:1"
    lpips_weights: tuple[str, ...] = ()
    seed: int = 0
    device: str = "cpu"

    HELP: ClassVar[dict[str, str]] = {
        "generator": "the generator the regressor was trained for",
        "regressor": "the trained regressor (e.g. OUT/regressor.safetensors of `latcomp train`)",
        "image": "the real image (center-cropped and resized to the generator's resolution)",
        "out": "where the tuned regressor is written (.safetensors)",
        "mask": "optional mask image (white = known): only these pixels are trusted, e.g. a collage's holes "
        "are excluded; None: the whole image",
        "arch": "generator architecture; None: detected from the file",
        "steps": "optimisation steps",
        "batch_size": "masks per step (copies of the image, each under a fresh mask)",
        "lr": "Adam learning rate (betas 0.5, 0.999)",
        "masks": "mask strategy mixture for the per-step masks ('parts' does not apply)",
        "losses": "weighted image loss terms name:weight (pixel, lpips, or registered ones)",
        "lpips_weights": "LPIPS files (see `latcomp train --help`); without them the lpips term is off",
        "seed": "seed of the per-step masks",
        "device": "torch device",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"arch": GENERATOR_ARCHS}
