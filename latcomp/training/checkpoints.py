"""Training checkpoints: written atomically, read back with weights_only=True.

A checkpoint holds only tensors and plain containers (state_dicts, optimiser state, step, RNG states,
JSON-like config), so it loads without unpickling arbitrary objects.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save_atomic(obj: dict, path: str | Path) -> Path:
    """torch.save to a temporary file, then rename: an interrupted save never corrupts the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def rng_states() -> dict:
    """torch's global RNG states. Our loops draw data from per-step seeded numpy generators, so torch's
    generators (dropout-free nets still use them for noise and latents) are the only hidden state."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
