"""`latcomp eval` on a small real bundle: the report's structure and the naive baselines' arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from bundle_fixtures import make_small_bundle

from latcomp.eval.inpainting import Case, collage_fill, errors, held_out_cases, mean_fill


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


def test_eval_command_reports_every_mask_kind_and_method(tmp_path):
    bundle = make_small_bundle(tmp_path)
    path = tmp_path / "eval.json"
    command = [sys.executable, "-m", "latcomp", "eval", str(bundle), "--samples", "4", "--json", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(path.read_text())
    assert set(report["masks"]) == {"paper", "rect", "full"}
    for entry in report["masks"].values():
        assert set(entry["methods"]) == {"regressor", "mean_fill", "collage"}
        assert 0 <= entry["methods"]["regressor"]["full_l1"] <= 1
    assert "| rect | regressor |" in result.stdout
