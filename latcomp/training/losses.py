"""Regressor losses, chosen by name: a registry so new terms (identity, ...) plug in without editing trainers.

A term is built once by its factory from a `LossSetup` and then called on every `LossBatch`, returning a
scalar. Built-in terms:
  latent  cosine distance to z (ProGAN: its first layer pixel-normalises z, so only the direction matters)
          or MSE to the w+ rows (StyleGAN2); only rows with a latent target (generated images) count
  pixel   MSE between G(E(x)) and the full, unmasked target image (over `valid` pixels when given)
  lpips   perceptual distance (latcomp.training.lpips); needs user-supplied weights, off without them

Adding one::

    @register_loss("identity")
    def identity_loss(setup: LossSetup) -> LossFn:
        net = load_face_net(setup.device)
        return lambda batch: (1 - F.cosine_similarity(net(batch.pred_image), net(batch.target_image))).mean()

then ``--losses latent:1,pixel:1,identity:0.5`` (the module that registers it given to --loss-plugins).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class LossBatch:
    pred_latent: torch.Tensor  # [N, *latent_shape] E's prediction
    target_latent: torch.Tensor | None  # [M, *latent_shape] targets of the first M rows (M <= N), or None
    pred_image: torch.Tensor  # [N, 3, R, R] G(pred_latent)
    target_image: torch.Tensor  # [N, 3, R, R] the full image the masked input came from
    valid: torch.Tensor | None = None  # [N, 1, R, R] pixels where target_image is defined (None: all)


@dataclass
class LossSetup:
    generator_arch: str  # "stylegan2" | "progan"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    lpips_weights: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)  # factories add lines for the log (what they loaded)


LossFn = Callable[[LossBatch], torch.Tensor]
LOSSES: dict[str, Callable[[LossSetup], LossFn]] = {}


class LossUnavailable(RuntimeError):
    """Raised by a factory whose term cannot run in this setup; the trainer logs the reason and drops it."""


def register_loss(name: str):
    def decorator(factory: Callable[[LossSetup], LossFn]) -> Callable[[LossSetup], LossFn]:
        if name in LOSSES:
            raise ValueError(f"a loss named {name!r} is already registered")
        LOSSES[name] = factory
        return factory

    return decorator


def parse_spec(spec: str) -> dict[str, float]:
    """"latent:1,pixel:1,lpips:0.5" -> {name: weight}; a bare name weighs 1."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, weight = item.partition(":")
        name = name.strip()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r} in {spec!r}; registered: {', '.join(sorted(LOSSES))}")
        try:
            weights[name] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"bad weight {weight!r} for loss {name!r} in {spec!r}") from None
    return weights


@dataclass
class Objective:
    """The weighted sum of the available terms; `notes` say which terms were dropped and why."""

    terms: dict[str, tuple[float, LossFn]]
    notes: list[str]

    @classmethod
    def from_spec(cls, spec: str, setup: LossSetup) -> Objective:
        terms, notes = {}, []
        for name, weight in parse_spec(spec).items():
            if weight == 0:
                continue
            try:
                terms[name] = (weight, LOSSES[name](setup))
            except LossUnavailable as reason:
                notes.append(f"loss {name!r} off: {reason}")
        if not terms:
            raise ValueError(f"no loss term of {spec!r} can run here: {'; '.join(notes)}")
        return cls(terms, setup.notes + notes)

    def __call__(self, batch: LossBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """(weighted total, each term's unweighted value for the log)."""
        total, values = None, {}
        for name, (weight, term) in self.terms.items():
            value = term(batch)
            values[name] = value.item()
            total = weight * value if total is None else total + weight * value
        return total, values


# ---- built-in terms ----


@register_loss("latent")
def latent_loss(setup: LossSetup) -> LossFn:
    cosine = setup.generator_arch == "progan"

    def term(batch: LossBatch) -> torch.Tensor:
        if batch.target_latent is None or len(batch.target_latent) == 0:
            return batch.pred_latent.new_zeros((), dtype=torch.float32)
        pred = batch.pred_latent[: len(batch.target_latent)].float()
        target = batch.target_latent.float()
        if cosine:
            return (1 - F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1)).mean()
        return F.mse_loss(pred, target)

    return term


def masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` [N, C, H, W] over the pixels where valid [N, 1, H, W] is 1."""
    if valid is None:
        return values.mean()
    weights = valid.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


@register_loss("pixel")
def pixel_loss(setup: LossSetup) -> LossFn:
    def term(batch: LossBatch) -> torch.Tensor:
        return masked_mean((batch.pred_image.float() - batch.target_image.float()).square(), batch.valid)

    return term


@register_loss("lpips")
def lpips_loss(setup: LossSetup) -> LossFn:
    if not setup.lpips_weights:
        raise LossUnavailable("no --lpips-weights given (a torchvision vgg16/alexnet state_dict, optionally "
                              "plus the LPIPS linear-layer file; see latcomp/training/lpips.py)")
    from .lpips import LPIPS

    distance = LPIPS.from_files(*setup.lpips_weights).to(setup.device)
    setup.notes.append(f"loss 'lpips': {distance.describe()}")

    def term(batch: LossBatch) -> torch.Tensor:
        pred, target = batch.pred_image, batch.target_image
        if batch.valid is not None:  # undefined target pixels are set to grey (0) on both sides
            pred, target = pred * batch.valid, target * batch.valid
        return distance(pred, target).mean()

    return term
