"""Reading generator and regressor checkpoints safely, in every wrapping the published files use.

Published files come in three wrappings (see tests/data/conformance/README.md):
  - rosinality StyleGAN2: ``{"g_ema": sd, "latent_avg": w, "g": ..., "d": ..., "args": ...}``
  - the paper's encoders: ``{"state_dict": sd, "optimizer": ..., "epoch": ..., "val_loss": ...}``
  - GAN-dissection ProGAN: the bare state_dict (or ``{"state_dict": sd}``)
Our own files are .safetensors with the architecture and config in the header metadata.

Nothing here ever unpickles arbitrary objects: ``torch.load(weights_only=True)`` refuses any pickle
that would construct something other than tensors and plain containers.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..archs import ARCHS, GENERATOR_ARCHS

# The rosinality checkpoint keeps the tracked mean w next to the weights; our safetensors files store it
# under the same name. It is never a module key in any architecture, so it can be split off safely.
LATENT_AVG_KEY = "latent_avg"
_META_ARCH = "latcomp.arch"
_META_CONFIG = "latcomp.config"


EXPECTED_FILES = ("a PyTorch checkpoint (.pt/.pth/.ckpt written by torch.save: a state_dict, or a dict "
                  "holding 'g_ema' or 'state_dict') or a .safetensors file")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the architecture; the message says why."""


def _unreadable(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(f"cannot read {path} as a checkpoint ({_first_line(error)}); expected "
                           f"{EXPECTED_FILES}")


def model_class(arch: str) -> type[nn.Module]:
    # Imported here so that `import latcomp.nets.checkpoint` stays cheap and free of import cycles.
    from .progan import ProGANGenerator
    from .resnet import ProGANEncoder, StyleGANEncoder
    from .stylegan2 import StyleGAN2Generator

    classes = {cls.arch: cls for cls in (StyleGAN2Generator, ProGANGenerator, ProGANEncoder, StyleGANEncoder)}
    if arch not in classes:
        raise CheckpointError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    return classes[arch]


def detect_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Names the architecture a state_dict belongs to, from key names alone."""
    keys = set(state_dict)
    if "input.input" in keys and "style.1.weight" in keys:
        return "stylegan2"
    if "layer1.wscale.b" in keys or "features.0.wscale.b" in keys:
        return "progan"
    if "conv1.weight" in keys and "layer5.conv5.weight" in keys:
        return "stylegan-encoder"
    if "conv1.weight" in keys and "fc.weight" in keys:
        return "progan-encoder"
    sample = ", ".join(sorted(keys)[:6]) or "no keys"
    raise CheckpointError(
        f"cannot tell the architecture from the keys ({sample}, ...); pass arch= one of {', '.join(ARCHS)}"
    )


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], arch: str) -> None:
    """Raises CheckpointError naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    problems = []
    for key, tensor in expected.items():
        if key not in state_dict:
            problems.append(f"missing key {key!r} (expected shape {tuple(tensor.shape)})")
        elif tuple(state_dict[key].shape) != tuple(tensor.shape):
            problems.append(
                f"key {key!r} has shape {tuple(state_dict[key].shape)}, expected {tuple(tensor.shape)}"
            )
    for key in state_dict:
        if key not in expected:
            problems.append(f"unexpected key {key!r} (shape {tuple(state_dict[key].shape)})")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointError(f"state_dict does not match the {arch} architecture:\n  {shown}{more}")


def from_state_dict(arch: str, state_dict: Mapping[str, torch.Tensor], **overrides) -> nn.Module:
    """Builds the `arch` network whose configuration the weights imply, and loads them.

    `overrides` supply only what the weights cannot tell, e.g. ``resolution=128`` for the ProGAN
    encoder (its stem depends on the generator's resolution) or ``lr_mlp`` for StyleGAN2.
    """
    cls = model_class(arch)
    tensors = {key: value for key, value in state_dict.items()}
    not_tensors = [key for key, value in tensors.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"state_dict entries are not tensors: {', '.join(map(repr, not_tensors[:5]))}")
    tensors = cls.normalize_state_dict(tensors)
    try:
        config = cls.config_from_state_dict(tensors)
    except (KeyError, IndexError, ValueError) as error:
        check_hint = f"missing key {error}" if isinstance(error, KeyError) else str(error)
        raise CheckpointError(f"cannot infer the {arch} configuration from its weights: {check_hint}") \
            from None
    config.update(overrides)
    model = cls(**config)
    check_state_dict(model, tensors, arch)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def _first_line(error: Exception) -> str:
    """The informative part of a loader error: weights_only wraps the unpickler's cause in advice (to
    load with weights_only=False) that we must not pass on."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _read_file(path: Path) -> tuple[dict, dict]:
    """Returns (the object in the file, latcomp metadata) without running any pickled code."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as error:  # safetensors raises its own error types for a foreign or damaged file
            raise _unreadable(path, error) from None
        meta = {}
        if _META_ARCH in metadata:
            meta["arch"] = metadata[_META_ARCH]
        if _META_CONFIG in metadata:
            meta["config"] = json.loads(metadata[_META_CONFIG])
        return tensors, meta
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only names the first object it would have had to construct: that is a code-running
        # pickle; any other unpickling failure is a damaged or foreign file
        constructs = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if constructs is None:
            raise _unreadable(path, error) from None
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects that would run code when unpickled (it calls "
            f"{constructs[1]}). latcomp reads only tensors and plain containers; re-save the weights with "
            "torch.save(model.state_dict(), ...) or as .safetensors."
        ) from None
    except Exception as error:  # a truncated or foreign file fails in many ways inside the unpickler
        raise _unreadable(path, error) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict or checkpoint dict; "
                              f"expected {EXPECTED_FILES}")
    meta = obj.get("latcomp") if isinstance(obj.get("latcomp"), Mapping) else {}
    return dict(obj), dict(meta)


def unwrap(obj: Mapping) -> tuple[dict, torch.Tensor | None]:
    """Finds the state_dict inside a checkpoint dict; returns it with the stored mean latent, if any."""
    latent_avg = obj.get(LATENT_AVG_KEY)
    if "g_ema" in obj:
        state_dict = obj["g_ema"]
    elif isinstance(obj.get("state_dict"), Mapping):
        state_dict = obj["state_dict"]
    else:
        state_dict = {key: value for key, value in obj.items() if key != LATENT_AVG_KEY}
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"expected a state_dict, found a {type(state_dict).__name__}")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        latent_avg = None
    return dict(state_dict), latent_avg


def load(path: str | Path, arch: str | None = None, **overrides) -> nn.Module:
    """Loads a generator or regressor from a .pt/.pth/.ckpt or .safetensors file, in eval mode.

    `arch` is detected from the key names when None. For StyleGAN2 the mean latent used by truncation
    comes from the file's ``latent_avg`` when present, else it is estimated from 4096 seeded samples.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    obj, meta = _read_file(path)
    state_dict, latent_avg = unwrap(obj)
    arch = arch or meta.get("arch") or detect_arch(state_dict)
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    config = {**meta.get("config", {}), **overrides} if meta.get("arch", arch) == arch else dict(overrides)
    model = from_state_dict(arch, state_dict, **config)
    if arch == "stylegan2":
        if latent_avg is not None:
            model.set_w_avg(latent_avg.reshape(-1))
        else:
            model.compute_w_avg()
    return model


def save(path: str | Path, model: nn.Module, latent_avg: torch.Tensor | None = None) -> Path:
    """Writes `model` as .safetensors, its architecture and config in the header, so `load` rebuilds it.

    A StyleGAN2 generator is always saved with the mean latent that truncation pulls toward: `latent_avg`
    when given, else the generator's own (set by `load` or `set_w_avg`, or estimated here from 4096 seeded
    samples). An all-zero `latent_avg` (e.g. `G.w_avg` of a generator whose mean was never set) is refused.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    if model.arch == "stylegan2":
        latent_avg = _mean_latent(model, latent_avg)
    if latent_avg is not None:
        tensors[LATENT_AVG_KEY] = latent_avg.detach().contiguous().cpu()
    metadata = {_META_ARCH: model.arch, _META_CONFIG: json.dumps(model.config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def _mean_latent(generator: nn.Module, latent_avg: torch.Tensor | None) -> torch.Tensor:
    """The mean w to store with a StyleGAN2 generator; never the zeros of a mean that was never set."""
    if latent_avg is None:
        return generator.w_avg if generator.has_w_avg else generator.compute_w_avg()
    if latent_avg.numel() != generator.style_dim:
        raise CheckpointError(f"latent_avg has {latent_avg.numel()} values, the generator's w has "
                              f"{generator.style_dim}")
    if not torch.any(latent_avg):
        raise CheckpointError(
            "latent_avg is all zeros, which would make truncation pull every sample toward w = 0 (G.w_avg "
            "holds zeros until load(), set_w_avg() or compute_w_avg() sets it): leave latent_avg out and "
            "save() stores the generator's mean latent, or pass G.compute_w_avg()"
        )
    return latent_avg


def describe(model: nn.Module) -> dict:
    """What a user wants to know about a loaded network (printed by `latcomp info`)."""
    info = {
        "arch": model.arch,
        "kind": "generator" if model.arch in GENERATOR_ARCHS else "regressor",
        "latent_shape": list(model.latent_shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": model.config,
    }
    if hasattr(model, "resolution"):
        info["resolution"] = model.resolution
    if hasattr(model, "mask_convention"):
        info["mask_convention"] = model.mask_convention
    return info
