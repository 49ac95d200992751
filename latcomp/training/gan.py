"""`latcomp train-gan`: our small StyleGAN2 on procedural faces or an image folder.

Non-saturating logistic loss, lazy R1 on D, style mixing, an EMA copy of G (the one we ship) and a
tracked mean w for truncation. Every random draw of a step comes from generators seeded by (seed, step),
plus torch's global generator for G's noise, whose state the checkpoint keeps: a resumed run continues
exactly where the interrupted one stopped.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..imaging import grid, save_png
from ..nets import StyleGAN2Generator, save
from ..nets.discriminator import Discriminator
from ..nets.tensors import images_from_uint8, images_to_numpy
from .checkpoints import load_checkpoint, restore_rng_states, rng_states, save_atomic
from .configs import GANConfig
from .data_source import ImageSource, open_source
from .logbook import Logbook
from .loop import run_steps


def build_networks(config: GANConfig) -> tuple[StyleGAN2Generator, Discriminator]:
    channels = config.channels()
    generator = StyleGAN2Generator(size=config.size, style_dim=config.style_dim, n_mlp=config.n_mlp,
                                   channels=channels)
    return generator, Discriminator(size=config.size, channels=channels)


def mixed_latents(generator: StyleGAN2Generator, z: torch.Tensor, z2: torch.Tensor, cut: torch.Tensor,
                  mixing: torch.Tensor) -> torch.Tensor:
    """w+ whose rows from `cut` on come from z2 where `mixing` is set: style mixing regularisation keeps
    layers' styles independent, which is what lets a regressor predict each region's latent rows."""
    w1, w2 = generator.style(z), generator.style(z2)  # [N, D]
    rows = torch.arange(generator.n_latent, device=z.device)[None, :]  # [1, L]
    take_second = (rows >= cut[:, None]) & mixing[:, None]  # [N, L]
    return torch.where(take_second[..., None], w2[:, None], w1[:, None])  # [N, L, D]


def r1_penalty(discriminator: Discriminator, real: torch.Tensor) -> torch.Tensor:
    real = real.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(discriminator(real).sum(), real, create_graph=True)
    return gradient.square().sum(dim=(1, 2, 3)).mean()


class GANTrainer:
    def __init__(self, config: GANConfig, resume: bool = False):
        self.config = config
        self.out = Path(config.out)
        self.device = torch.device(config.device)
        self.source: ImageSource = open_source(config.data, config.size, config.dataset_size, self.out)
        torch.manual_seed(config.seed)
        self.generator, self.discriminator = build_networks(config)
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.g_optim = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=(0.0, 0.99))
        # lazy regularisation: D steps 1 + 1/k times as often, so its Adam settings are rescaled (StyleGAN2 B)
        ratio = config.d_reg_every / (config.d_reg_every + 1)
        self.d_optim = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr * ratio,
                                        betas=(0.0, 0.99**ratio))
        self.r1_gamma = config.r1_gamma or 0.0002 * config.size**2 / config.batch_size
        self.w_avg = torch.zeros(config.style_dim, device=self.device)
        self.step = 0
        if resume:
            self._resume(self.out / "checkpoint.pt")

    # ---- one step ----

    def _step_randomness(self, step: int):
        rng = np.random.default_rng([self.config.seed, step])
        n = self.config.batch_size
        real = self.source.batch(rng, n)  # uint8 [N, H, W, 3], flipped at random
        z = torch.from_numpy(rng.standard_normal((2, n, self.config.style_dim), dtype=np.float32))
        cut = torch.from_numpy(rng.integers(1, self.generator.n_latent, n))
        mixing = torch.from_numpy(rng.random(n) < self.config.mixing)
        return (images_from_uint8(real).to(self.device), z[0].to(self.device), z[1].to(self.device),
                cut.to(self.device), mixing.to(self.device))

    def train_step(self, step: int) -> dict[str, float]:
        real, z, z2, cut, mixing = self._step_randomness(step)
        generator, discriminator = self.generator, self.discriminator

        latents = mixed_latents(generator, z, z2, cut, mixing)
        fake = generator(latents, noise_mode="random")

        discriminator.requires_grad_(True)
        d_loss = F.softplus(discriminator(fake.detach())).mean() + F.softplus(-discriminator(real)).mean()
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        losses = {"d": d_loss.item()}
        if step % self.config.d_reg_every == 0:
            r1 = r1_penalty(discriminator, real)
            self.d_optim.zero_grad(set_to_none=True)
            (self.r1_gamma / 2 * r1 * self.config.d_reg_every).backward()
            self.d_optim.step()
            losses["r1"] = r1.item()

        # G reuses this step's fakes against the updated D: one synthesis pass per step instead of two
        discriminator.requires_grad_(False)
        g_loss = F.softplus(-discriminator(fake)).mean()
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        losses["g"] = g_loss.item()

        self._update_ema(step)
        self.w_avg.lerp_(latents[:, 0].detach().mean(dim=0), 1 - 0.995)
        return losses

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        images_seen = (step + 1) * self.config.batch_size
        half_life = min(self.config.ema_kimg * 1000, images_seen * 0.05)  # short half-life early on
        beta = 0.5 ** (self.config.batch_size / max(half_life, 1e-8))
        for ema_param, param in zip(self.ema.parameters(), self.generator.parameters(), strict=True):
            ema_param.lerp_(param, 1 - beta)
        self.ema.set_w_avg(self.w_avg)

    # ---- outputs ----

    @torch.no_grad()
    def sample_grid(self, count: int = 64, seed: int = 12345, truncation: float = 1.0) -> np.ndarray:
        z = torch.from_numpy(np.random.default_rng(seed).standard_normal((count, self.config.style_dim),
                                                                          dtype=np.float32))
        images = self.ema(self.ema.sample_latent(z.to(self.device), truncation))
        return grid(images_to_numpy(images), columns=int(np.sqrt(count)))

    def save(self) -> None:
        state = {
            "latcomp": {"arch": "stylegan2", "config": self.generator.config},
            "g": self.generator.state_dict(),
            "d": self.discriminator.state_dict(),
            "g_ema": self.ema.state_dict(),
            "latent_avg": self.w_avg.cpu(),
            "g_optim": self.g_optim.state_dict(),
            "d_optim": self.d_optim.state_dict(),
            "step": self.step,
            "train_config": asdict(self.config),
            "rng": rng_states(),
        }
        save_atomic(state, self.out / "checkpoint.pt")
        # what users (and `latcomp train --generator`) take: the EMA generator alone, as safetensors
        save(self.out / "generator.safetensors", self.ema, latent_avg=self.w_avg)

    def _resume(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        state = load_checkpoint(path)
        self.generator.load_state_dict(state["g"])
        self.discriminator.load_state_dict(state["d"])
        self.ema.load_state_dict(state["g_ema"])
        self.w_avg.copy_(state["latent_avg"])
        self.ema.set_w_avg(self.w_avg)
        self.g_optim.load_state_dict(state["g_optim"])
        self.d_optim.load_state_dict(state["d_optim"])
        self.step = int(state["step"])
        restore_rng_states(state["rng"])

    # ---- the loop ----

    def fit(self, quiet: bool = False) -> dict[str, float]:
        config = self.config
        log = Logbook(self.out, total_steps=config.steps, start_step=self.step, enabled=not quiet)
        log.write({"kind": "config", **asdict(config), "r1_gamma_used": self.r1_gamma,
                   "g_params": sum(p.numel() for p in self.generator.parameters()),
                   "d_params": sum(p.numel() for p in self.discriminator.parameters())})
        return run_steps(self, log, config.steps, config.log_every, self._after_step)

    def _after_step(self) -> None:
        config = self.config
        if self.step % config.sample_every == 0 or self.step == config.steps:
            save_png(self.out / "samples" / f"step{self.step:07d}.png", self.sample_grid())
        if self.step % config.checkpoint_every == 0 or self.step == config.steps:
            self.save()
