"""The step loop both trainers run (`latcomp train-gan`, `latcomp train`): what differs is the trainer's
train_step and save, and what happens after a step (samples, validation, checkpoints)."""

from __future__ import annotations

import time
from collections.abc import Callable

from .logbook import Logbook


def run_steps(trainer, log: Logbook, total_steps: int, log_every: int, after_step: Callable[[], None],
              save_on_interrupt: bool = True) -> dict[str, float]:
    """Steps `trainer` (its .step, .train_step(step) -> losses, .save()) up to total_steps: each step
    advances the progress bar, every log_every steps logs the losses and the pace, then after_step runs.
    Ctrl-C (or SIGTERM, which the commands turn into it) saves a checkpoint to resume from, when
    save_on_interrupt, and stops; the log is closed either way. Returns the last step's losses."""
    losses: dict[str, float] = {}
    started, first_step = time.perf_counter(), trainer.step
    try:
        while trainer.step < total_steps:
            losses = trainer.train_step(trainer.step)
            trainer.step += 1
            log.advance(losses)
            if trainer.step % log_every == 0:
                pace = (time.perf_counter() - started) / (trainer.step - first_step)
                log.scalars(trainer.step, {**losses, "sec_per_step": pace})
            after_step()
    except KeyboardInterrupt:
        if save_on_interrupt:
            log.note(f"interrupted at step {trainer.step}: saving a checkpoint to resume from")
            trainer.save()
        raise
    finally:
        log.close()
    return losses
