"""Where a training run reports: a JSONL log (always), TensorBoard (when installed), a progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm


class Logbook:
    """Appends one JSON object per record to `out/log.jsonl`; mirrors scalars to TensorBoard if available.

    Appending (never truncating) keeps the history of a resumed run in one file.
    """

    def __init__(self, out: str | Path, total_steps: int, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out) / "log.jsonl"
        self.tensorboard = None
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not enabled, unit="step",
                        dynamic_ncols=True)
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(Path(out) / "tensorboard"))
        except ImportError:
            self.note("TensorBoard not installed: logging to log.jsonl only")

    def note(self, message: str) -> None:
        """A line for the user (above the progress bar) and the log."""
        if self.enabled:
            tqdm.write(message)
            self.write({"note": message})

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def scalars(self, step: int, values: dict[str, float], kind: str = "train") -> None:
        self.write({"kind": kind, "step": step, **{key: round(float(v), 6) for key, v in values.items()}})
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(f"{kind}/{key}", value, step)

    def advance(self, losses: dict[str, float]) -> None:
        self.bar.update(1)
        self.bar.set_postfix({key: f"{value:.4f}" for key, value in losses.items()}, refresh=False)

    def close(self) -> None:
        self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
