"""Optimisation-based inversion: find the latent whose image matches the known pixels (torch).

The generator is the bundle's own (rebuilt by the torch backend from the bundle's weights), so the
optimisers and the regressor search the same latent space. The objective of one image is the mean
per-pixel L1 or L2 over its known pixels and channels, on the [-1, 1] scale; a batch minimises the sum,
so Adam (elementwise) treats every image independently, while L-BFGS shares one line search per batch
(use batch=1 for fully independent L-BFGS runs).

`steps` is a budget of generator evaluations (forward + backward) per image: Adam takes `steps` steps,
L-BFGS at most `steps` function evaluations including its line searches, so both cost about the same
(plus one evaluation of the final latent). Each image's result is the best latent any evaluation saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPTIMISERS = ("adam", "lbfgs")
LOSSES = ("l1", "l2")


@dataclass
class Inversion:
    images: np.ndarray  # uint8 [N, R, R, 3], the generator's image of the final latents
    latents: np.ndarray  # float32 [N, *latent_shape]
    start_images: np.ndarray  # uint8 [N, R, R, 3], the image of the starting latents
    start_latents: np.ndarray  # float32 [N, *latent_shape]


def start_latent(latent_avg: np.ndarray) -> np.ndarray:
    """Where the optimisers start: the generator's average latent (StyleGAN2: mean w broadcast to w+),
    except when that is the origin (ProGAN: the mean of z), where the generator's pixel norm is 0/0 and
    its gradients overflow; there, the fixed z of seed 0 (the runtime's sampling convention), one face."""
    if np.any(latent_avg != 0):
        return latent_avg.astype(np.float32)
    return np.random.RandomState(0).standard_normal(latent_avg.shape).astype(np.float32)


class Inverter:
    """Inverts batches of (image, mask) pairs through `generator` (any torch generator of latcomp.nets).

    Every evaluated latent is a candidate: each image keeps the best one seen (lowest objective), so an
    L-BFGS line search that overshoots, or Adam's last step, can never make a result worse than its start.
    """

    def __init__(self, generator, latent_avg, device: str = "cpu"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        start = start_latent(latent_avg.detach().cpu().float().numpy())
        self.start = torch.from_numpy(start).to(self.device)  # [*latent_shape]

    def _render(self, latent) -> np.ndarray:
        from ..nets.tensors import images_to_uint8

        with self.torch.no_grad():
            return images_to_uint8(self.generator(latent)).cpu().numpy()

    def _optimise(self, latent, target, known, optimiser: str, steps: int, lr: float, loss: str):
        """The best latent seen per image [n, *L], starting from `latent` (a leaf that requires grad)."""
        torch = self.torch
        best = latent.detach().clone()
        best_loss = torch.full((len(latent),), float("inf"), device=self.device)
        count = 3 * known.sum(dim=(1, 2, 3)).clamp(min=1)  # [n] known values per image

        def objective():
            """Sum over the batch of each image's mean loss over its known pixels ([-1, 1] scale)."""
            difference = (self.generator(latent) - target) * known  # [n, 3, R, R]
            per_pixel = difference.abs() if loss == "l1" else difference.square()
            per_image = per_pixel.sum(dim=(1, 2, 3)) / count  # [n]
            with torch.no_grad():
                better = per_image < best_loss  # NaN compares False: a diverged latent is never kept
                best_loss[better] = per_image[better]
                best[better] = latent[better]
            return per_image.sum()

        if optimiser == "adam":
            adam = torch.optim.Adam([latent], lr=lr)
            for _ in range(steps):
                adam.zero_grad(set_to_none=True)
                objective().backward()
                adam.step()
        else:
            # strong Wolfe line search: a unit first step is often far too long in a GAN's latent space
            lbfgs = torch.optim.LBFGS([latent], lr=1.0, max_iter=steps, max_eval=steps, history_size=20,
                                      tolerance_grad=1e-12, tolerance_change=1e-15,
                                      line_search_fn="strong_wolfe")

            def closure():
                lbfgs.zero_grad(set_to_none=True)
                value = objective()
                value.backward()
                return value

            if steps:
                lbfgs.step(closure)
        with torch.no_grad():
            objective()  # the last update is a candidate too
        return best

    def invert(self, images: np.ndarray, masks: np.ndarray, optimiser: str = "adam", steps: int = 100,
               lr: float = 0.05, loss: str = "l2", init: np.ndarray | None = None, batch: int = 16
               ) -> Inversion:
        """images uint8 [N, R, R, 3], masks uint8 [N, R, R] (>= 128 known); init float32 [N, *L] or None for
        `start_latent`. `lr` is Adam's (L-BFGS's step comes from its line search)."""
        if optimiser not in OPTIMISERS:
            raise ValueError(f"optimiser must be one of {', '.join(OPTIMISERS)}, got {optimiser!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        torch = self.torch
        from ..nets.tensors import images_from_uint8, masks_from_uint8

        parts: list[tuple[np.ndarray, ...]] = []
        for start in range(0, len(images), batch):
            chunk = slice(start, start + batch)
            target = images_from_uint8(torch.from_numpy(np.ascontiguousarray(images[chunk]))).to(self.device)
            known = masks_from_uint8(torch.from_numpy(np.ascontiguousarray(masks[chunk, ..., None])))
            known = known.to(self.device)  # [n, 1, R, R]
            if init is None:
                first = self.start.expand(len(target), *self.start.shape).clone()
            else:
                first = torch.from_numpy(np.asarray(init[chunk], np.float32)).to(self.device)
            latent = self._optimise(first.clone().requires_grad_(True), target, known, optimiser, steps, lr,
                                    loss)
            parts.append((self._render(latent), latent.cpu().numpy(), self._render(first),
                          first.cpu().numpy()))
        return Inversion(*(np.concatenate(column) for column in zip(*parts, strict=True)))
