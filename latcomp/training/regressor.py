"""`latcomp train`: the latent regressor E for a fixed generator G (Chai et al. 2021).

Each step draws z ~ N(0, 1), renders x = G(latent) without gradients, hides part of x with a mask from the
strategy mixture and trains E to recover the latent from the visible part: a latent loss against the
true latent plus image losses between G(E(masked x)) and the whole x (see losses.py). Real images can be
mixed in; they have no latent, so only the image losses see them.

Every random draw of a step comes from numpy generators seeded by (seed, step, rank) (masks by
(seed, step, rank, sample)), so a resumed run continues exactly where the interrupted one stopped, and
each DDP process (`torchrun --nproc_per_node K -m latcomp train ...`) trains on its own samples.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..archs import DEFAULT_REGRESSOR, ENCODER_ARCHS, GENERATOR_ARCHS
from ..data.faces import render
from ..data.folder import ImageFolder
from ..data.masks import MaskMixture, paper_mask
from ..imaging import gray_to_rgb, grid, save_png
from ..nets import CheckpointError, ProGANEncoder, StyleGANEncoder, load, save
from ..nets.tensors import images_from_uint8, images_to_numpy, masks_from_uint8
from .checkpoints import load_checkpoint, restore_rng_states, rng_states, save_atomic
from .configs import RegressorConfig
from .logbook import Logbook
from .loop import run_steps
from .losses import LOSSES, LossBatch, LossSetup, Objective

BETAS = (0.5, 0.999)  # the paper's Adam settings
MASK_STREAM = 1  # seed-sequence tag separating per-sample mask generators from the step's generator
VAL_SEED = 2021  # validation draws do not depend on --seed, so runs with different seeds compare
SAMPLE_ROWS = 8


# ---- networks ----


def read_model(path: str | Path, **options) -> nn.Module:
    """`latcomp.nets.load`, with every failure on a corrupt file reported as a CheckpointError."""
    try:
        return load(path, **options)
    except CheckpointError:
        raise
    except Exception as error:  # torch's weights-only unpickler raises IndexError etc. on garbage bytes
        raise CheckpointError(f"cannot read {path} as a checkpoint: {type(error).__name__} {error}") from None


def load_generator(path: str | Path, arch: str | None = None) -> nn.Module:
    """A frozen generator; a regressor file or anything unreadable raises CheckpointError."""
    model = read_model(path, arch=arch)
    if model.arch not in GENERATOR_ARCHS:
        raise CheckpointError(f"{path} holds a {model.arch} regressor, not a generator; --generator takes a "
                              f"{' or '.join(GENERATOR_ARCHS)} checkpoint")
    return model.eval().requires_grad_(False)


def check_pair(regressor: nn.Module, generator: nn.Module) -> None:
    """E's latent must feed G: the same shape, a single w for StyleGAN2, or z in any shape for ProGAN."""
    shape, wanted = tuple(regressor.latent_shape), tuple(generator.latent_shape)
    fits = (shape == wanted or (generator.arch == "stylegan2" and shape == (generator.style_dim,))
            or (generator.arch == "progan" and math.prod(shape) == generator.z_dim))
    if not fits:
        raise CheckpointError(f"the {regressor.arch} predicts latents {list(shape)}, but the "
                              f"{generator.arch} generator takes {list(wanted)}")


def load_regressor(path: str | Path, generator: nn.Module) -> nn.Module:
    model = read_model(path)
    if model.arch not in ENCODER_ARCHS:
        raise CheckpointError(f"{path} holds a {model.arch} generator, not a regressor")
    if model.arch == "progan-encoder" and model.resolution != generator.resolution:
        model = read_model(path, resolution=generator.resolution)  # its stem depends on G's resolution
    check_pair(model, generator)
    return model


def build_regressor(config: RegressorConfig, generator: nn.Module) -> nn.Module:
    arch = config.regressor_arch or DEFAULT_REGRESSOR[generator.arch]
    blocks, widths = list(config.blocks), list(config.widths)
    if arch == "progan-encoder":
        regressor = ProGANEncoder(blocks=blocks, widths=widths, z_dim=generator.z_dim,
                                  resolution=generator.resolution)
    else:
        stylegan = generator.arch == "stylegan2"
        n_latent, style_dim = generator.latent_shape if stylegan else (1, generator.z_dim)
        regressor = StyleGANEncoder(blocks=blocks, widths=widths, n_latent=n_latent, style_dim=style_dim,
                                    input_size=config.input_size or generator.resolution)
    check_pair(regressor, generator)
    if config.init_regressor:
        start_from(regressor, config.init_regressor)
    return regressor


def start_from(regressor: nn.Module, path: str) -> None:
    """Copies the weights of a saved regressor of the same architecture (fine-tuning; the optimiser starts
    fresh). The architecture must match exactly: a silently partial load would train a different model."""
    source = load(path)
    if (source.arch, source.config) != (regressor.arch, regressor.config):
        raise ValueError(f"--init-regressor {path}: it is {source.arch} {source.config}, but this run builds "
                         f"{regressor.arch} {regressor.config}; pass matching --blocks/--widths/--input-size")
    regressor.load_state_dict(source.state_dict())


def as_regressor_latent(latent: torch.Tensor, regressor: nn.Module) -> torch.Tensor:
    """G's latent [N, *G.latent_shape] as E's target: StyleGAN2's w+ rows are all equal at truncation 1, so a
    single-w regressor targets row 0."""
    if latent.dim() == 3 and tuple(regressor.latent_shape) == (latent.shape[2],):
        return latent[:, 0]
    return latent.reshape(len(latent), *regressor.latent_shape)


# ---- data ----


class RealImages:
    """`batch(rng, n)` -> (uint8 [n, R, R, 3], part maps [n, R, R] or None), each flipped with chance 1/2.

    "faces": procedural faces rendered on the fly from random seeds, with their part maps (so "parts"
    masks apply); anything else: an image folder (no part maps)."""

    def __init__(self, spec: str, size: int):
        self.size = size
        self.folder = None if spec == "faces" else ImageFolder(spec, size)

    def batch(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.folder is None:
            faces = [render(int(seed), self.size) for seed in rng.integers(0, 2**31, n)]
            images, parts = np.stack([f.image for f in faces]), np.stack([f.parts for f in faces])
        else:
            indices = rng.integers(0, len(self.folder), n)
            images, parts = np.stack([self.folder[int(i)] for i in indices]), None
        flips = rng.random(n) < 0.5
        images[flips] = images[flips, :, ::-1]
        if parts is not None:
            parts[flips] = parts[flips, :, ::-1]
        return images, parts


# ---- distributed ----


def init_distributed(device: str) -> None:
    """Joins the process group torchrun describes in the environment (no-op for a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")


def close_distributed() -> None:
    if dist.is_initialized():
        # every rank first finishes talking: gloo aborts a process whose group goes away while a peer's last
        # collective is still in flight; a rank that failed or was stopped is not waited for long
        if dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=timedelta(seconds=60))
            except RuntimeError as error:
                print(f"rank {dist.get_rank()}: not every rank reached the end ({error})", file=sys.stderr)
        else:
            dist.barrier()
        dist.destroy_process_group()


# ---- training ----


class RegressorTrainer:
    def __init__(self, config: RegressorConfig, resume: bool = False):
        self.config = config
        self.out = Path(config.out)
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.is_main = self.rank == 0
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))

        self.generator = load_generator(config.generator, config.arch).to(self.device)
        self.resolution = self.generator.resolution
        self.mixture = MaskMixture.from_spec(config.masks)
        self.mixture.probabilities(with_parts=False)  # generated images have no part maps: fail now
        self.real = RealImages(config.real_images, self.resolution) if config.real_images else None
        self.n_real = round(config.real_fraction * config.batch_size) if self.real else 0
        if not 0 <= self.n_real <= config.batch_size:
            raise ValueError(f"--real-fraction must be in [0, 1], got {config.real_fraction}")

        for module in config.loss_plugins:
            importlib.import_module(module)
        setup = LossSetup(self.generator.arch, self.device, tuple(config.lpips_weights))
        self.objective = Objective.from_spec(config.losses, setup)
        self.latent_metric = LOSSES["latent"](setup)

        torch.manual_seed(config.seed)  # every rank builds the same initial regressor
        self.regressor = build_regressor(config, self.generator).to(self.device).train()
        self.model: nn.Module = self.regressor
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.regressor, device_ids=ids)
        self.optim = torch.optim.Adam(self.regressor.parameters(), lr=config.lr, betas=BETAS)
        self.amp_dtype = None
        if self.device.type == "cuda" and config.amp != "off":
            self.amp_dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
        # fp16 needs loss scaling against underflowing gradients; bf16 has fp32's range and does not
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

        self.step = 0
        self.best = {"step": -1, "score": math.inf}
        self.val_z, self.val_masks = self._validation_draws()
        if resume:
            self._resume(self.out / "checkpoint.pt")

    # ---- one step ----

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _step_randomness(self, step: int):
        config = self.config
        rng = np.random.default_rng([config.seed, step, self.rank])
        n_generated = config.batch_size - self.n_real
        z = torch.from_numpy(rng.standard_normal((n_generated, self.generator.z_dim), dtype=np.float32))
        real, parts = self.real.batch(rng, self.n_real) if self.n_real else (None, None)
        masks = []
        for i in range(config.batch_size):
            mask_rng = np.random.default_rng([config.seed, step, self.rank, MASK_STREAM, i])
            part_map = parts[i - n_generated] if parts is not None and i >= n_generated else None
            masks.append(self.mixture(mask_rng, self.resolution, part_map))
        real = images_from_uint8(real).to(self.device) if real is not None else None
        return z.to(self.device), real, masks_from_uint8(np.stack(masks)).to(self.device)

    @torch.no_grad()
    def _generate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [N, 3, R, R] float32, E's latent targets [N, *E.latent_shape])."""
        latent = self.generator.sample_latent(z)
        with self._autocast():
            images = self.generator(latent)
        return images.float(), as_regressor_latent(latent, self.regressor)

    def train_step(self, step: int) -> dict[str, float]:
        z, real, masks = self._step_randomness(step)
        images, target_latent = self._generate(z) if len(z) else (None, None)  # --real-fraction 1: none
        # real rows go last: target_latent covers the first rows only
        images = torch.cat([x for x in (images, real) if x is not None])
        with self._autocast():
            pred = self.model(self.regressor.make_input(images, masks))
            recon = self.generator(pred)
        loss, values = self.objective(LossBatch(pred, target_latent, recon, images))

        self.optim.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optim)
        else:
            loss.backward()
        if self.config.grad_clip:
            norm = nn.utils.clip_grad_norm_(self.regressor.parameters(), self.config.grad_clip)
            values["grad_norm"] = norm.item()
        if self.scaler is not None:
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.optim.step()
        return {"loss": loss.item(), **values}

    # ---- validation ----

    def _validation_draws(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed z and the paper's masks, independent of --seed and --masks so every run is scored alike."""
        rng = np.random.default_rng(VAL_SEED)
        shape = (self.config.val_size, self.generator.z_dim)
        z = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
        masks = np.stack([paper_mask(rng, self.resolution) for _ in range(self.config.val_size)])
        return z, masks_from_uint8(masks)

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], np.ndarray]:
        """Metrics (MAE on a 0-1 scale, full image vs G(E(input)); latent loss) and a sample grid, in fp32."""
        self.regressor.eval()
        sums = {"mae_masked": 0.0, "mae_full": 0.0, "latent": 0.0}
        rows = []
        for start in range(0, self.config.val_size, self.config.batch_size):
            z = self.val_z[start : start + self.config.batch_size].to(self.device)
            masks = self.val_masks[start : start + self.config.batch_size].to(self.device)
            latent = self.generator.sample_latent(z)
            images, target = self.generator(latent), as_regressor_latent(latent, self.regressor)
            for name, mask in (("masked", masks), ("full", torch.ones_like(masks))):
                pred = self.regressor(self.regressor.make_input(images, mask))
                recon = self.generator(pred)
                error = (recon.clamp(-1, 1) - images.clamp(-1, 1)).abs().mean(dim=(1, 2, 3)) / 2  # [N]
                sums[f"mae_{name}"] += error.sum().item()
                if name == "masked":
                    latent_loss = self.latent_metric(LossBatch(pred, target, recon, images))
                    sums["latent"] += latent_loss.item() * len(z)
                    if len(rows) < SAMPLE_ROWS:
                        rows.append((images * mask, mask, recon, images))
        self.regressor.train()
        metrics = {key: value / self.config.val_size for key, value in sums.items()}
        return metrics, self._sample_grid(rows)

    @staticmethod
    def _sample_grid(rows: list) -> np.ndarray:
        """One row per sample: input (hole grey), mask, reconstruction, target."""
        shown, masks, recons, targets = (torch.cat(parts)[:SAMPLE_ROWS] for parts in zip(*rows, strict=True))
        columns = [images_to_numpy(shown), gray_to_rgb((masks[:, 0] * 255).byte().cpu().numpy()),
                   images_to_numpy(recons), images_to_numpy(targets)]
        return grid(np.stack(columns, axis=1).reshape(-1, *columns[0].shape[1:]), columns=4)

    # ---- outputs ----

    def _state(self) -> dict:
        # "state_dict" plus "latcomp" metadata: `latcomp.nets.load` and `latcomp info` read this file too
        return {
            "latcomp": {"arch": self.regressor.arch, "config": self.regressor.config},
            "state_dict": self.regressor.state_dict(),
            "optimizer": self.optim.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "best": dict(self.best),
            "train_config": asdict(self.config),
            "rng": rng_states(),
        }

    def save(self, best: bool = False) -> None:
        """Writes OUT/checkpoint.pt; if `best`, also OUT/best.pt and OUT/regressor.safetensors (E alone)."""
        state = self._state()
        save_atomic(state, self.out / "checkpoint.pt")
        if best:
            save_atomic(state, self.out / "best.pt")
            save(self.out / "regressor.safetensors", self.regressor)

    def _resume(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        state = load_checkpoint(path)
        if state["latcomp"]["config"] != self.regressor.config:
            raise ValueError(f"--resume: {path} holds a regressor {state['latcomp']['config']}, but the "
                             f"flags build {self.regressor.config}")
        self.regressor.load_state_dict(state["state_dict"])
        self.optim.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best = dict(state["best"])
        restore_rng_states(state["rng"])

    # ---- the loop ----

    def _validate_and_save(self, log: Logbook) -> None:
        metrics, samples = self.validate()
        improved = metrics["mae_masked"] < self.best["score"]
        if improved:
            self.best = {"step": self.step, "score": metrics["mae_masked"]}
        log.scalars(self.step, {**metrics, "best_step": self.best["step"]}, kind="val")
        save_png(self.out / "samples" / f"step{self.step:07d}.png", samples)
        self.save(best=improved)

    def fit(self, quiet: bool = False) -> dict[str, float]:
        config = self.config
        log = Logbook(self.out, total_steps=config.steps, start_step=self.step,
                      enabled=self.is_main and not quiet)
        log.write({"kind": "config", **asdict(config), "world_size": self.world_size,
                   "generator_arch": self.generator.arch, "regressor_arch": self.regressor.arch,
                   "regressor_config": self.regressor.config, "loss_terms": list(self.objective.terms),
                   "regressor_params": sum(p.numel() for p in self.regressor.parameters())})
        for note in self.objective.notes:
            log.note(note)
        def after_step() -> None:
            if self.is_main and (self.step % config.val_every == 0 or self.step == config.steps):
                self._validate_and_save(log)

        losses = run_steps(self, log, config.steps, config.log_every, after_step,
                           save_on_interrupt=self.is_main)
        if self.world_size > 1:
            dist.barrier()  # the other ranks wait while rank 0 writes the last checkpoint
        return losses
