"""Parity of the written graphs (onnxruntime, CPU) against the torch modules they came from.

Inputs are fixed and seeded: images drawn by the generator itself, paper-like masks (a bilinearly upsampled
6x6 uniform noise field, thresholded; plus one all-known and one all-unknown mask) and realism from 0 to 1.
The report goes into the manifest; `check` raises ParityError when a graph misses its limits. Memory stays
bounded at every size: the samples run in chunks chosen by activation size, and each onnxruntime session
(without arena) is released before the next opens.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..nets.fused import Composer, Decoder, Sampler
from .quantize import INT8_MIN_PSNR_DB

FP32_MAX_LATENT_DIFF = 1e-3
FP32_MAX_SHARE_OFF_BY_MORE_THAN_1 = 1e-3  # 0.1 % of pixels
FP16_MIN_PSNR_DB = 40.0
MIN_PSNR_DB = {"fp16": FP16_MIN_PSNR_DB, "int8": INT8_MIN_PSNR_DB}  # the reduced-precision composers' guard
PSNR_IDENTICAL_DB = 100.0  # reported instead of infinity (JSON has none)
PARITY_SAMPLES = 8  # samples every graph is checked on, at every size
# Parity runs its samples in chunks whose activations fit this budget: batch 8 at 1024 px held 17.6 GiB.
PARITY_MEMORY_BYTES = 2 << 30
# Tensors of the largest activation's size alive at once in one call (input, modulated input, conv output,
# blur output, skip), with headroom for the runtimes' own buffers.
LIVE_ACTIVATIONS = 8


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
def parity_inputs(sampler: Sampler, decoder: Decoder, count: int = PARITY_SAMPLES, seed: int = 0,
                  batch: int | None = None) -> dict[str, np.ndarray]:
    """The seeded parity inputs; the generator's images are drawn `batch` at a time (default: all)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(count, sampler.generator.z_dim, generator=generator)
    truncation = torch.linspace(0.5, 1.0, count)
    latents = sampler(z, truncation)
    images = torch.cat([decoder(part) for part in latents.split(batch or count)])
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


def activation_bytes(decoder: Decoder, latent: torch.Tensor) -> int:
    """Bytes of the largest tensor a module of the generator outputs for one sample (`latent` [1, *L])."""
    largest = 0

    def record(_module, _inputs, output) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    hooks = [module.register_forward_hook(record) for module in decoder.generator.modules()]
    try:
        decoder(latent)
    finally:
        for hook in hooks:
            hook.remove()
    return largest


def chunk_size(per_sample_bytes: int, count: int, budget: int = PARITY_MEMORY_BYTES) -> int:
    """Samples per parity call so that LIVE_ACTIVATIONS of the largest activation fit in `budget`."""
    return max(1, min(count, budget // max(1, LIVE_ACTIVATIONS * per_sample_bytes)))


def _session(path: Path):
    """A one-shot CPU session: no memory arena and no memory pattern, so what a call allocates is returned
    when it ends instead of being kept (and grown) for calls that will never come."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _in_chunks(run, feeds: dict[str, np.ndarray], batch: int) -> list[np.ndarray]:
    """`run(None, feeds)` (an InferenceSession's signature) on slices of `batch` samples, its outputs
    concatenated."""
    count = len(next(iter(feeds.values())))
    parts = [run(None, {key: value[start:start + batch] for key, value in feeds.items()})
             for start in range(0, count, batch)]
    return [np.concatenate(column) for column in zip(*parts, strict=True)]


@torch.no_grad()
def measure(graphs: dict[str, Path], composer: Composer, decoder: Decoder, sampler: Sampler,
            count: int = PARITY_SAMPLES, seed: int = 0, memory: int = PARITY_MEMORY_BYTES) -> dict[str, dict]:
    """{graph name: metrics} for the graphs named in `graphs` ("composer", "composer_fp16", "generator",
    "sampler"), each run by onnxruntime on CPU against the torch module it was exported from.

    The same `count` samples at every size, run in chunks of `batch` samples chosen so the activations fit
    in `memory` bytes (every entry records both); one session at a time, released before the next.
    """
    probe = sampler(torch.zeros(1, sampler.generator.z_dim), torch.ones(1))
    batch = chunk_size(activation_bytes(decoder, probe), count, memory)
    inputs = parity_inputs(sampler, decoder, count, seed, batch)
    composer_feeds = {key: inputs[key] for key in ("image", "mask", "realism")}

    def reference(_outputs, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        images, latents = composer(*(torch.from_numpy(feeds[key]) for key in ("image", "mask", "realism")))
        return [images.numpy(), latents.numpy()]

    reference_images, reference_latents = _in_chunks(reference, composer_feeds, batch)
    report = {}
    for name, path in graphs.items():
        run = _session(path).run  # released when `run` is rebound, before the next session opens
        if name.startswith("composer"):
            images, latents = _in_chunks(run, composer_feeds, batch)
            metrics = {**image_metrics(images, reference_images),
                       **latent_metrics(latents, reference_latents)}
        elif name == "generator":
            (images,) = _in_chunks(run, {"latent": inputs["latent"]}, batch)
            metrics = image_metrics(images, inputs["image"])
        else:
            (latents,) = run(None, {"z": inputs["z"], "truncation": inputs["truncation"]})
            metrics = latent_metrics(latents, inputs["latent"])
        del run
        gc.collect()
        report[name] = {"samples": count, "batch": batch, **metrics}
    return report


def problems(name: str, precision: str, metrics: dict) -> list[str]:
    """What `metrics` of graph `name` at `precision` violate (empty when within the limits)."""
    found = []
    if precision in MIN_PSNR_DB:
        if metrics["psnr_db"] < MIN_PSNR_DB[precision]:
            found.append(f"{name}: PSNR {metrics['psnr_db']} dB < {MIN_PSNR_DB[precision]} dB")
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
