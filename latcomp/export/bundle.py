"""Writing a bundle: graphs, their shared weights, the parity report and the manifest (see docs/BUNDLE.md).

Everything is written into a temporary directory beside the destination and renamed into place at the end,
so a failed export (parity beyond the limits included) never leaves a half-written bundle behind.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from ..nets.fused import Composer, Decoder, Sampler, average_latent
from ..runtime.bundle import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file
from . import parity
from .fp16 import to_fp16
from .onnx_graphs import describe_io, export, save_with_shared_weights
from .quantize import quantize_composer

EXAMPLE_BATCH = 2  # traced with 2, so nothing gets specialised to a batch of 1
VARIANTS = ("_fp16", "_int8")  # composer graphs at another precision: composer_<precision>
TOOLS = ("torch", "onnx", "onnxruntime", "onnxslim")


def git_commit() -> str | None:
    """`git rev-parse HEAD` of the checkout this code runs from, or None outside one."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def _tool_versions() -> dict[str, str]:
    from .. import __version__

    versions = {"latcomp": __version__}
    for tool in TOOLS:
        try:
            versions[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            continue
    return versions


def default_provenance() -> dict:
    return {
        "command": shlex.join(sys.argv),
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "training": {},
        "tools": _tool_versions(),
    }


def write_manifest(directory: Path, manifest: dict) -> dict:
    """Lists every file of `directory` (but the manifest) with sha256 and size, then writes the manifest
    atomically. Also how a later step (a TensorRT plan) registers the files it adds."""
    directory = Path(directory)
    files = sorted(path for path in directory.rglob("*") if path.is_file() and path.name != MANIFEST)
    manifest["files"] = {path.relative_to(directory).as_posix(): {"sha256": sha256_file(path),
                                                                   "bytes": path.stat().st_size}
                         for path in files}
    partial = directory / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, directory / MANIFEST)
    return manifest


def _graph_entry(path: Path, precision: str, model) -> dict:
    inputs, outputs = describe_io(model)
    return {"file": path.name, "precision": precision, "inputs": inputs, "outputs": outputs}


def build_graphs(composer: Composer, decoder: Decoder, sampler: Sampler, fp16: bool) -> dict:
    """{graph name: ModelProto} with weights inline: composer, [composer_fp16], generator, sampler."""
    generator = composer.generator
    resolution = generator.resolution
    image = torch.zeros(EXAMPLE_BATCH, resolution, resolution, 3, dtype=torch.uint8)
    mask = torch.full((EXAMPLE_BATCH, resolution, resolution, 1), 255, dtype=torch.uint8)
    ones = torch.ones(EXAMPLE_BATCH)
    z = torch.randn(EXAMPLE_BATCH, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latent = sampler(z, ones)
    graphs = {"composer": export(composer, (image, mask, ones * 0), ["image", "mask", "realism"],
                                 ["result", "latent"])}
    if fp16:
        graphs["composer_fp16"] = to_fp16(graphs["composer"])
    graphs["generator"] = export(decoder, (latent,), ["latent"], ["image"])
    graphs["sampler"] = export(sampler, (z, ones), ["z", "truncation"], ["latent"])
    return graphs


def _quiet(_message: str) -> None:
    pass


def export_bundle(generator: nn.Module, regressor: nn.Module, out_dir: str | Path, name: str = "latcomp",
                  version: str = "1", max_batch: int = 16, fp16: bool = True, provenance: dict | None = None,
                  overwrite: bool = False, int8: bool = False, parity_samples: int = parity.PARITY_SAMPLES,
                  parity_memory: int = parity.PARITY_MEMORY_BYTES, log=_quiet) -> Path:
    """Exports a generator + regressor pair as a bundle directory `out_dir` and returns its path.

    `provenance` entries (e.g. ``{"training": {...metrics}}``) override the recorded defaults (command line,
    git commit, creation time, tool versions). `int8` adds the INT8 composer for CPUs (export.quantize).
    Parity checks `parity_samples` samples in chunks whose
    activations fit `parity_memory` bytes (see export.parity). `log` receives one line per step with its
    time. Raises parity.ParityError, writing nothing, when a graph differs from the torch modules beyond the
    limits; FileExistsError when `out_dir` exists and not `overwrite`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    # copies: exporting must not move the caller's modules off their device or out of training mode
    generator, regressor = (copy.deepcopy(module).cpu().eval() for module in (generator, regressor))
    latent_avg = average_latent(generator)
    composer, decoder = Composer(generator, regressor, latent_avg), Decoder(generator)
    sampler = Sampler(generator, latent_avg)
    started = time.perf_counter()
    graphs = build_graphs(composer, decoder, sampler, fp16)
    log(f"built the graphs ({', '.join(graphs)}) in {time.perf_counter() - started:.0f} s")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        paths = {graph: staging / f"{graph}.onnx" for graph in graphs}
        save_with_shared_weights({paths[g]: m for g, m in graphs.items() if g != "composer_fp16"},
                                 staging / "weights.bin")
        if fp16:
            save_with_shared_weights({paths["composer_fp16"]: graphs["composer_fp16"]},
                                     staging / "weights_fp16.bin")
        if int8:
            started = time.perf_counter()
            graphs["composer_int8"] = quantize_composer(paths["composer"], paths["sampler"],
                                                        paths["generator"])
            paths["composer_int8"] = staging / "composer_int8.onnx"
            save_with_shared_weights({paths["composer_int8"]: graphs["composer_int8"]},
                                     staging / "weights_int8.bin")
            log(f"quantised the composer to INT8 in {time.perf_counter() - started:.0f} s")
        precisions = {graph: graph.rpartition("_")[2] if graph.endswith(VARIANTS) else "fp32"
                      for graph in graphs}
        graph_entries = {graph: _graph_entry(paths[graph], precisions[graph], model)
                         for graph, model in graphs.items()}
        del graphs  # their weights are on disk now; parity reads the files
        started = time.perf_counter()
        report = parity.measure(paths, composer, decoder, sampler, count=parity_samples, memory=parity_memory)
        first = next(iter(report.values()))
        log(f"parity on {first['samples']} samples in batches of {first['batch']} in "
            f"{time.perf_counter() - started:.0f} s")
        parity.check(report, precisions)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "resolution": generator.resolution,
            "latent_shape": list(generator.latent_shape),
            "z_dim": generator.z_dim,
            "mask_convention": regressor.mask_convention,
            "generator": {"arch": generator.arch, "config": generator.config},
            "regressor": {"arch": regressor.arch, "config": regressor.config},
            "max_batch": max_batch,
            "graphs": graph_entries,
            "plans": [],
            "parity": report,
            "provenance": {**default_provenance(), **(provenance or {})},
        }
        write_manifest(staging, manifest)
        staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be read by a service user too
        if out_dir.exists():
            old = staging.with_suffix(".old")
            out_dir.rename(old)
            staging.rename(out_dir)
            shutil.rmtree(old)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
