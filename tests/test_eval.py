"""`latcomp eval` on a small real bundle: the report's structure, the naive baselines' arithmetic, the
optimisers, the hybrid's start, the Fréchet distance and the figures (tiny counts, few optimiser steps)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from bundle_fixtures import small_pair
from PIL import Image

from latcomp.cli import main
from latcomp.eval.fills import diffusion_fill
from latcomp.eval.inpainting import Case, collage_fill, errors, held_out_cases, mean_fill
from latcomp.eval.inversion import Inverter
from latcomp.eval.protocol import METHODS, Runner, Settings, parse_methods, score
from latcomp.eval.realism import fit, frechet_distance, stats_features
from latcomp.eval.tasks import DISTINCT_PARTS, assign_parts, face_collages, face_inpainting, face_reference


def test_mean_fill_paints_the_known_mean_into_the_hole():
    images = np.zeros((1, 4, 4, 3), np.uint8)
    images[0, :2] = 200  # known half is 200, the hidden half 0
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, :2] = 255
    filled = mean_fill(images, masks)
    assert (filled[0, 2:] == 200).all() and (filled[0, :2] == 200).all()
    assert (collage_fill(images, masks)[0, 2:] == 0).all()
    measured = errors(filled, Case(np.zeros_like(images), masks))
    assert np.isclose(measured["hole_l1"], 200 / 255) and np.isclose(measured["full_l1"], 200 / 255)


def test_held_out_cases_are_deterministic_and_unseen():
    first, again = held_out_cases("paper", 3, 32), held_out_cases("paper", 3, 32)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.masks, again.masks)
    assert (held_out_cases("full", 2, 32).masks == 255).all()


def test_diffusion_fill_keeps_known_pixels_and_reproduces_a_linear_ramp():
    # a harmonic function is its own membrane fill: a hole in a ramp must come back as the ramp
    ramp = np.tile(np.linspace(20, 230, 32)[None, :, None], (32, 1, 3)).round().astype(np.uint8)[None]
    masks = np.full((1, 32, 32), 255, np.uint8)
    masks[0, 6:26, 4:20] = 0
    filled = diffusion_fill(collage_fill(ramp, masks), masks)
    assert np.array_equal(filled[masks >= 128], ramp[masks >= 128])
    assert np.abs(filled.astype(int) - ramp).max() <= 3


def test_collages_take_parts_from_different_faces():
    assignment = assign_parts(np.random.default_rng(0), 4)
    assert len({assignment[part] for part in DISTINCT_PARTS}) == 4
    task, again = face_collages(3, 32, parts_from=4), face_collages(3, 32, parts_from=4)
    assert np.array_equal(task.inputs, again.inputs) and np.array_equal(task.masks, again.masks)
    assert (task.inputs[task.masks < 128] == 0).all() and (task.masks >= 128).any()
    inpainting = face_inpainting(3, 32)
    assert not np.array_equal(inpainting.originals, face_reference(3, 32))  # disjoint seed ranges


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    images = face_reference(48, 32)
    base = fit(stats_features(images))
    assert frechet_distance(base, base) < 1e-6 * np.trace(base.cov)
    distances = [frechet_distance(base, fit(stats_features(np.clip(images.astype(int) + shift, 0, 255)
                                                           .astype(np.uint8)))) for shift in (10, 30, 60)]
    assert 0 < distances[0] < distances[1] < distances[2]


@pytest.mark.parametrize("optimiser", ["adam", "lbfgs"])
def test_optimisation_reduces_masked_l1_from_its_start(optimiser):
    from latcomp.nets.fused import average_latent

    generator, _ = small_pair("stylegan2")
    task = face_inpainting(3, 32)
    inverter = Inverter(generator, average_latent(generator))
    found = inverter.invert(task.inputs, task.masks, optimiser=optimiser, steps=12, lr=0.05, batch=2)
    assert found.latents.shape == (3, *generator.latent_shape)
    assert np.allclose(found.start_latents, average_latent(generator).numpy()[None], atol=1e-6)
    assert score(task, found.images)["masked_l1"] < 0.95 * score(task, found.start_images)["masked_l1"]


def test_hybrid_starts_from_the_regressors_latent(small_bundle):
    from latcomp.runtime import open_bundle

    task = face_collages(3, 32)
    settings = Settings(methods=("regressor", "hybrid"), steps=4, batch=4)
    with open_bundle(small_bundle, backend="torch") as engine:
        runner = Runner(engine, Inverter(engine.composer.generator, engine.composer.latent_avg), settings)
        regressed = runner("regressor", task.inputs, task.masks)
        hybrid = runner("hybrid", task.inputs, task.masks)
    assert np.allclose(hybrid.start_latents, regressed.latents, atol=1e-5)
    assert np.abs(hybrid.start_images.astype(int) - regressed.images).max() <= 1  # same latent, same image
    assert not np.allclose(hybrid.latents, regressed.latents)  # and it moved from there


def test_methods_are_parsed_in_canonical_order():
    assert parse_methods("all") == METHODS
    assert parse_methods("lbfgs, regressor") == ("regressor", "lbfgs")
    with pytest.raises(ValueError, match="unknown method 'sgd'"):
        parse_methods("regressor,sgd")


def test_wrong_inception_weights_and_conflicting_features_exit_early_and_clearly(tmp_path, capsys):
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"not a checkpoint")
    assert main(["eval", "--inception-weights", str(weights)]) == 2
    error = capsys.readouterr().err
    assert "not a readable torch file" in error and "pt_inception-2015-12-05-6726825d.pth" in error
    assert main(["eval", "--inception-weights", str(tmp_path / "absent.pth")]) == 2
    assert "no such file" in capsys.readouterr().err
    for features in ("regressor", "stats"):  # the weights choose the features: naming others is an error
        assert main(["eval", "--features", features, "--inception-weights", str(weights)]) == 2
        assert f"--features {features} and --inception-weights exclude each other" in capsys.readouterr().err


def test_eval_command_reports_every_task_method_and_figure(small_bundle, tmp_path):
    paths = {kind: tmp_path / f"eval.{ext}" for kind, ext in
             (("json", "json"), ("markdown", "md"), ("plot", "png"), ("grid", "grid.png"))}
    command = [sys.executable, "-m", "latcomp", "eval", str(small_bundle), "--samples", "4", "--steps", "3",
               "--real", "8", "--grid-rows", "3", "--quiet"]
    command += [arg for kind, path in paths.items() for arg in (f"--{kind}", str(path))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(paths["json"].read_text())
    assert set(report["methods"]) == set(METHODS)
    for name, entry in report["methods"].items():
        assert {"masked_l1", "fd", "time_ms"} <= set(entry), name
        assert 0 <= entry["masked_l1"] <= 1 and entry["fd"] >= 0 and entry["time_ms"] >= 0
    for name in ("adam", "lbfgs", "hybrid"):
        assert 0 <= report["methods"][name]["masked_l1_start"] <= 1
    assert report["methods"]["collage"]["masked_l1"] == 0  # the naive fills keep every known pixel
    assert set(report["inpainting"]["methods"]) == set(METHODS)
    assert all(math.isfinite(m["hole_l1"]) for m in report["inpainting"]["methods"].values())
    assert report["real"]["reference_images"] == 8 and report["real"]["fd_floor"] >= 0
    assert report["features"]["extractor"] == "stats" and "InceptionV3" in report["features"]["caveat"]
    assert report["settings"]["steps"] == 3 and report["machine"]["cpu"]
    # the first version's hole-filling report is still there, unchanged
    assert set(report["masks"]) == {"paper", "rect", "full"}
    for entry in report["masks"].values():
        assert set(entry["methods"]) == {"regressor", "mean_fill", "collage"}
        assert 0 <= entry["methods"]["regressor"]["full_l1"] <= 1
    assert "| rect | regressor |" in result.stdout and "| hybrid |" in result.stdout
    assert paths["markdown"].read_text().strip() == result.stdout.strip()
    with Image.open(paths["grid"]) as grid:  # 3 rows, input + every method but the collage itself
        assert grid.width > len(METHODS) * 96 and grid.height > 3 * 96
    with Image.open(paths["plot"]) as plot:
        assert plot.width >= 2 * 500


def test_eval_on_an_image_folder(small_bundle, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, image in enumerate(face_reference(6, 40, seed=3)):  # any size: the folder resizes
        Image.fromarray(image).save(folder / f"{seed}.png")
    grid = tmp_path / "grid.png"
    assert main(["eval", str(small_bundle), "--samples", "3", "--steps", "2", "--real", "4", "--quiet",
                 "--methods", "regressor,mean_fill,diffusion_fill", "--folder", str(folder),
                 "--json", str(tmp_path / "eval.json"), "--grid", str(grid)]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["folder"]["methods"]) == {"regressor", "mean_fill", "diffusion_fill"}
    assert report["folder"]["images"] == 6 and report["folder"]["real"]["reference_images"] == 3
    assert (tmp_path / "grid-folder.png").is_file()
