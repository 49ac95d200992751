"""The paper's protocol (Chai et al. 2021, "Using latent space regression to analyze and leverage
compositionality in GANs"): complete part collages and masked images with every method, and score each
by how well it keeps what it was given (masked L1 over known pixels), how real its results look (Fréchet
distance to unseen real images) and what it costs (time per image).

Methods:
  regressor          the bundle's composer: RGBM (image * mask, mask) -> latent -> image, via the engine
  regressor_no_mask  the same network told every pixel is known: the collage as if it were complete
  adam, lbfgs        latent optimisation from the generator's mean latent (latcomp.eval.inversion)
  hybrid             Adam started from the regressor's latent
  collage            the input itself, holes black (what the regressor receives)
  mean_fill          holes painted with the mean known colour
  diffusion_fill     holes filled by membrane interpolation from their border (Poisson, zero guidance)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .fills import collage_fill, diffusion_fill, mean_fill
from .inpainting import Case, errors
from .realism import Gaussian, fit, frechet_distance
from .tasks import Task

METHODS = ("regressor", "regressor_no_mask", "adam", "lbfgs", "hybrid", "collage", "mean_fill",
           "diffusion_fill")
OPTIMISED = ("adam", "lbfgs", "hybrid")
DESCRIPTIONS = {
    "regressor": "bundle regressor (RGBM) + generator",
    "regressor_no_mask": "bundle regressor fed an all-known mask",
    "adam": "Adam on the latent from the mean latent",
    "lbfgs": "L-BFGS on the latent from the mean latent",
    "hybrid": "Adam from the regressor's latent",
    "collage": "the input, holes black",
    "mean_fill": "holes = mean known colour",
    "diffusion_fill": "holes = membrane fill from the border",
}
NAIVE = {"collage": collage_fill, "mean_fill": mean_fill, "diffusion_fill": diffusion_fill}


def parse_methods(text: str) -> tuple[str, ...]:
    """"regressor,adam" -> ("regressor", "adam") in the canonical order; "all" -> METHODS."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return METHODS
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}" if unknown
                         else "no method given")
    return tuple(name for name in METHODS if name in names)


@dataclass
class Settings:
    methods: tuple[str, ...] = METHODS
    steps: int = 100  # generator evaluations per image and optimiser
    lr: float = 0.05  # Adam's learning rate (adam, hybrid)
    loss: str = "l2"  # the optimisers' masked pixel loss: "l1" or "l2"
    batch: int = 16  # images optimised together
    realism: float = 0.0  # the composer's realism knob for the regressor methods and the hybrid's start

    def as_dict(self) -> dict:
        return {"methods": list(self.methods), "steps": self.steps, "lr": self.lr, "loss": self.loss,
                "batch": self.batch, "realism": self.realism}


@dataclass
class Output:
    images: np.ndarray  # uint8 [N, R, R, 3]
    latents: np.ndarray | None = None
    start_images: np.ndarray | None = None  # optimisers: the image they started from
    start_latents: np.ndarray | None = None


class Runner:
    """Runs one method on a batch: `engine` (any runtime Engine) for the regressor methods, `inverter`
    (latcomp.eval.inversion.Inverter, torch) for the optimisers; None when no method needs it."""

    def __init__(self, engine, inverter, settings: Settings):
        needs_torch = [name for name in settings.methods if name in OPTIMISED]
        if needs_torch and inverter is None:
            raise ValueError(f"methods {', '.join(needs_torch)} need torch (pip install 'latcomp[train]')")
        self.engine, self.inverter, self.settings = engine, inverter, settings

    def _regress(self, inputs: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.engine.run(inputs, masks, realism=self.settings.realism)

    def _invert(self, inputs: np.ndarray, masks: np.ndarray, optimiser: str, init=None) -> Output:
        s = self.settings
        found = self.inverter.invert(inputs, masks, optimiser=optimiser, steps=s.steps, lr=s.lr, loss=s.loss,
                                     init=init, batch=s.batch)
        return Output(found.images, found.latents, found.start_images, found.start_latents)

    def __call__(self, method: str, inputs: np.ndarray, masks: np.ndarray) -> Output:
        if method in NAIVE:
            return Output(NAIVE[method](inputs, masks))
        if method == "regressor":
            return Output(*self._regress(inputs, masks))
        if method == "regressor_no_mask":
            return Output(*self._regress(inputs, np.full_like(masks, 255)))
        if method == "hybrid":
            return self._invert(inputs, masks, "adam", init=self._regress(inputs, masks)[1])
        if method in ("adam", "lbfgs"):
            return self._invert(inputs, masks, method)
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


@dataclass
class TaskResult:
    task: Task
    entry: dict  # {"description", "samples", "methods": {name: {masked_l1, fd, time_ms, ...}}}
    outputs: dict[str, Output] = field(default_factory=dict)  # every method's output (for grids, tests)


def score(task: Task, images: np.ndarray) -> dict[str, float]:
    """masked_l1 (0-1) to the input over its known pixels; hole_l1 to the truth when the task has it."""
    truth = task.inputs if task.originals is None else task.originals
    measured = errors(images, Case(truth, task.masks))
    found = {"masked_l1": measured["masked_l1"]}
    if task.originals is not None:
        found["hole_l1"] = measured["hole_l1"]
    return found


def evaluate_task(task: Task, runner: Runner, reference: Gaussian,
                  extract: Callable[[np.ndarray], np.ndarray], progress=None) -> TaskResult:
    methods: dict[str, dict] = {}
    outputs: dict[str, Output] = {}
    for method in runner.settings.methods:
        started = time.perf_counter()
        output = runner(method, task.inputs, task.masks)
        milliseconds = (time.perf_counter() - started) * 1000 / len(task.inputs)
        entry = {**score(task, output.images), "fd": frechet_distance(reference, fit(extract(output.images))),
                 "time_ms": milliseconds}
        if output.start_images is not None:
            entry["masked_l1_start"] = score(task, output.start_images)["masked_l1"]
        methods[method] = entry
        outputs[method] = output
        if progress is not None:
            progress.done(f"{task.name}: {method}: masked L1 {entry['masked_l1']:.4f}, FD {entry['fd']:.4g}, "
                          f"{milliseconds:.1f} ms/image")
    entry = {"description": task.description, "samples": len(task.inputs), "methods": methods}
    return TaskResult(task, entry, outputs)


def evaluate_protocol(runner: Runner, composition: Task, inpainting: Task, reference_images: np.ndarray,
                      extract: Callable[[np.ndarray], np.ndarray], progress=None
                      ) -> tuple[dict, dict[str, TaskResult]]:
    """({"methods": composition's per method, "composition": {description, samples}, "inpainting":
    {description, samples, methods}, "real": {reference_images, fd_floor}}, the TaskResults by task name).

    "real.fd_floor" is the FD of the inpainting task's unseen originals (as many images as every method
    produces) against the reference: the score of a perfect method at this sample count, since FD is
    biased upward for small sets."""
    reference = fit(extract(reference_images))
    results = {task.name: evaluate_task(task, runner, reference, extract, progress)
               for task in (composition, inpainting)}
    real = {"reference_images": len(reference_images),
            "fd_floor": frechet_distance(reference, fit(extract(inpainting.originals)))}
    composition_entry = dict(results["composition"].entry)
    section = {"methods": composition_entry.pop("methods"), "composition": composition_entry,
               "inpainting": results["inpainting"].entry, "real": real}
    return section, results


def _number(value: float | None, digits: int = 4, style: str = "f") -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}{style}}"


def markdown_section(section: dict, heading: str) -> str:
    """Markdown tables of one evaluate_protocol section (composition, then inpainting)."""
    from ..report import markdown_table

    composition, inpainting = section["composition"], section["inpainting"]
    rows = [[name, _number(m["masked_l1"]), _number(m.get("masked_l1_start")), _number(m["fd"], 4, "g"),
             _number(m["time_ms"], 2)] for name, m in section["methods"].items()]
    header = ["method", "masked L1", "masked L1 at start", "FD", "ms/image"]
    lines = [f"### {heading}: composition ({composition['samples']} {composition['description']})", "",
             markdown_table(header, rows), ""]
    rows = [[name, _number(m["masked_l1"]), _number(m["hole_l1"]), _number(m["fd"], 4, "g"),
             _number(m["time_ms"], 2)] for name, m in inpainting["methods"].items()]
    lines += [f"### {heading}: inpainting ({inpainting['samples']} {inpainting['description']})", "",
              markdown_table(["method", "masked L1", "hole L1", "FD", "ms/image"], rows), ""]
    real = section["real"]
    lines.append(f"FD floor (as many unseen real images as each method makes, against the "
                 f"{real['reference_images']}-image reference): {real['fd_floor']:.4g}.")
    return "\n".join(lines)
