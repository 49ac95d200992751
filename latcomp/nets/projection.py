"""One-pass projection: masked image -> regressor -> latent -> generator -> image."""

from __future__ import annotations

import torch
from torch import nn


def project(
    encoder: nn.Module, generator: nn.Module, image: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projects `image` [N,3,H,W] in [-1,1] with `mask` [N,1,H,W] in {0,1} (1 = known) through G(E(x)).

    The encoder builds its own RGBM input (its mask convention is its business, not the caller's), and
    the caller's tensors are never modified. Returns (image [N,3,R,R], latent [N, *latent_shape]).
    """
    latent = encoder(encoder.make_input(image, mask))
    return generator(latent), latent
