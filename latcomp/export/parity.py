"""Parity of the written graphs (onnxruntime, CPU) against the torch modules they came from.

Inputs are fixed and seeded: images drawn by the generator itself, paper-like masks (a bilinearly upsampled
6x6 uniform noise field, thresholded; plus one all-known and one all-unknown mask) and realism from 0 to 1.
The report goes into the manifest; `check` raises ParityError when a graph misses its limits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..nets.fused import Composer, Decoder, Sampler

FP32_MAX_LATENT_DIFF = 1e-3
FP32_MAX_SHARE_OFF_BY_MORE_THAN_1 = 1e-3  # 0.1 % of pixels
FP16_MIN_PSNR_DB = 40.0
PSNR_IDENTICAL_DB = 100.0  # reported instead of infinity (JSON has none)


class ParityError(RuntimeError):
    """A graph's outputs differ from the torch modules' by more than the limits; the message says which."""


def paper_masks(count: int, resolution: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 [count, R, R, 1], 255 = known: thresholded 6x6 uniform noise, bilinearly upsampled.

    The first mask keeps everything and the second nothing, the two extremes every graph must handle.
    """
    noise = torch.rand(count, 1, 6, 6, generator=generator)
    field = F.interpolate(noise, size=(resolution, resolution), mode="bilinear", align_corners=False)
    levels = torch.rand(count, 1, 1, 1, generator=generator) * 0.4 + 0.3  # keep 30-70 % of the image
    known = field < levels
    known[0], known[1] = True, False
    return (known.permute(0, 2, 3, 1) * 255).to(torch.uint8)


@torch.no_grad()
def parity_inputs(sampler: Sampler, decoder: Decoder, count: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(count, sampler.generator.z_dim, generator=generator)
    truncation = torch.linspace(0.5, 1.0, count)
    latents = sampler(z, truncation)
    images = decoder(latents)
    masks = paper_masks(count, images.shape[1], generator)
    realism = torch.linspace(0.0, 1.0, count)[torch.randperm(count, generator=generator)]
    tensors = {"z": z, "truncation": truncation, "latent": latents, "image": images, "mask": masks,
               "realism": realism}
    return {name: tensor.numpy() for name, tensor in tensors.items()}


def image_metrics(ours: np.ndarray, reference: np.ndarray) -> dict:
    """uint8 [N, H, W, 3] vs the same: max level difference, share of pixels (any channel) off by more than
    one level, PSNR in dB."""
    diff = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = PSNR_IDENTICAL_DB if mse == 0 else min(PSNR_IDENTICAL_DB, 10 * np.log10(255.0**2 / mse))
    return {"max_abs_diff": int(diff.max()),
            "share_pixels_off_by_more_than_1": float((diff > 1).any(-1).mean()),
            "psnr_db": round(float(psnr), 2)}


def latent_metrics(ours: np.ndarray, reference: np.ndarray) -> dict:
    return {"latent_max_abs_diff": float(np.abs(ours.astype(np.float64) - reference).max())}


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@torch.no_grad()
def measure(graphs: dict[str, Path], composer: Composer, decoder: Decoder, sampler: Sampler,
            count: int = 8, seed: int = 0) -> dict[str, dict]:
    """{graph name: metrics} for the graphs named in `graphs` ("composer", "composer_fp16", "generator",
    "sampler"), each run by onnxruntime on CPU against the torch module it was exported from."""
    inputs = parity_inputs(sampler, decoder, count, seed)
    torch_in = {name: torch.from_numpy(array) for name, array in inputs.items()}
    reference_images, reference_latents = composer(torch_in["image"], torch_in["mask"], torch_in["realism"])
    report = {}
    for name, path in graphs.items():
        session = _session(path)
        if name.startswith("composer"):
            images, latents = session.run(None, {key: inputs[key] for key in ("image", "mask", "realism")})
            metrics = {**image_metrics(images, reference_images.numpy()),
                       **latent_metrics(latents, reference_latents.numpy())}
        elif name == "generator":
            (images,) = session.run(None, {"latent": inputs["latent"]})
            metrics = image_metrics(images, inputs["image"])
        else:
            (latents,) = session.run(None, {"z": inputs["z"], "truncation": inputs["truncation"]})
            metrics = latent_metrics(latents, inputs["latent"])
        report[name] = {"batch": count, **metrics}
    return report


def problems(name: str, precision: str, metrics: dict) -> list[str]:
    """What `metrics` of graph `name` at `precision` violate (empty when within the limits)."""
    found = []
    if precision == "fp16":
        if metrics["psnr_db"] < FP16_MIN_PSNR_DB:
            found.append(f"{name}: PSNR {metrics['psnr_db']} dB < {FP16_MIN_PSNR_DB} dB")
        return found
    latent, share = metrics.get("latent_max_abs_diff"), metrics.get("share_pixels_off_by_more_than_1")
    if latent is not None and latent > FP32_MAX_LATENT_DIFF:
        found.append(f"{name}: latent max abs diff {latent:.3g} > {FP32_MAX_LATENT_DIFF}")
    if share is not None and share > FP32_MAX_SHARE_OFF_BY_MORE_THAN_1:
        found.append(f"{name}: {share:.2%} of pixels off by more than 1 level > "
                     f"{FP32_MAX_SHARE_OFF_BY_MORE_THAN_1:.1%}")
    return found


def check(report: dict[str, dict], precisions: dict[str, str]) -> None:
    """Marks each entry `passed` and raises ParityError listing every violation."""
    found = []
    for name, metrics in report.items():
        issues = problems(name, precisions[name], metrics)
        metrics["passed"] = not issues
        found += issues
    if found:
        raise ParityError("graphs differ from the torch modules beyond the limits:\n  " + "\n  ".join(found))
