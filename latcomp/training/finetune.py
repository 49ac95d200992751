"""`latcomp finetune`: adapt a copy of the regressor to ONE real image (the paper's per-image adaptation).

A regressor trained on generated images reconstructs a real photo only approximately. Tuning a copy of E
for a few dozen steps on that image alone, with fresh random masks each step (so it learns the image,
not one particular mask), makes G(E(any masked version of it)) faithful, which later edits of that image
rely on. Only image losses apply: a real image has no latent target.

E stays in eval mode: its BatchNorm layers keep the running statistics of training (a batch of one
image under different masks would give meaningless batch statistics), while its weights still move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from tqdm import tqdm

from ..data.folder import resize_center_crop, to_rgb
from ..data.masks import MaskMixture
from ..nets import save
from ..nets.tensors import images_from_uint8, masks_from_uint8
from .configs import FinetuneConfig
from .losses import LossBatch, LossSetup, Objective, masked_mean
from .regressor import BETAS, load_generator, load_regressor


def read_image(path: str | Path, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: EXIF-rotated, RGB, short side resized to `size`, centre crop."""
    with Image.open(path) as image:
        return np.array(resize_center_crop(to_rgb(ImageOps.exif_transpose(image)), size))  # a writable copy


def read_mask(path: str | Path, size: int) -> np.ndarray:
    """uint8 [size, size], 255 = known (pixels >= 128 of the greyscale image), cropped like the image."""
    with Image.open(path) as image:
        grey = np.asarray(resize_center_crop(to_rgb(ImageOps.exif_transpose(image)), size).convert("L"))
    return np.where(grey >= 128, 255, 0).astype(np.uint8)


@torch.no_grad()
def reconstruction_error(regressor: nn.Module, generator: nn.Module, image: torch.Tensor,
                         valid: torch.Tensor) -> float:
    """MAE on a 0-1 scale over the valid pixels of G(E(image with only the valid pixels shown))."""
    recon = generator(regressor(regressor.make_input(image, valid)))
    return masked_mean((recon.clamp(-1, 1) - image).abs(), valid).item() / 2


def finetune(config: FinetuneConfig, quiet: bool = False) -> dict[str, float]:
    """Tunes and saves the regressor; returns reconstruction errors before and after, and the last losses."""
    if Path(config.out).suffix != ".safetensors":
        raise ValueError(f"--out must name a .safetensors file, got {config.out}")
    device = torch.device(config.device)
    generator = load_generator(config.generator, config.arch).to(device)
    regressor = load_regressor(config.regressor, generator).to(device).eval()
    size = generator.resolution
    image = images_from_uint8(read_image(config.image, size)[None]).to(device)  # [1, 3, R, R]
    known = read_mask(config.mask, size) if config.mask else np.full((size, size), 255, np.uint8)
    valid = masks_from_uint8(known[None]).to(device)  # [1, 1, R, R]
    mixture = MaskMixture.from_spec(config.masks)
    mixture.probabilities(with_parts=False)  # a real photo has no part map
    setup = LossSetup(generator.arch, device, tuple(config.lpips_weights))
    objective = Objective.from_spec(config.losses, setup)
    if "latent" in objective.terms:
        raise ValueError("--losses: 'latent' does not apply here (a real image has no latent target)")
    if not quiet:
        for note in objective.notes:
            tqdm.write(note)

    regressor.requires_grad_(True)
    optim = torch.optim.Adam(regressor.parameters(), lr=config.lr, betas=BETAS)
    before = reconstruction_error(regressor, generator, image, valid)
    batch_image = image.expand(config.batch_size, -1, -1, -1)  # [B, 3, R, R]
    batch_valid = valid.expand(config.batch_size, -1, -1, -1)  # [B, 1, R, R]
    values: dict[str, float] = {}
    for step in tqdm(range(config.steps), disable=quiet, unit="step", desc="finetune"):
        rngs = [np.random.default_rng([config.seed, step, i]) for i in range(config.batch_size)]
        fresh = [mixture(rng, size) for rng in rngs]
        masks = masks_from_uint8(np.stack(fresh)).to(device) * batch_valid  # hide nothing the image lacks
        pred = regressor(regressor.make_input(batch_image, masks))
        loss, values = objective(LossBatch(pred, None, generator(pred), batch_image, batch_valid))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    regressor.requires_grad_(False)
    after = reconstruction_error(regressor, generator, image, valid)
    save(config.out, regressor)
    return {"mae_before": before, "mae_after": after, **values}
