"""The bundle shipped inside the package: it opens with no path, stays small, and really inpaints."""

from __future__ import annotations

import numpy as np
import pytest

from latcomp.eval.inpainting import evaluate_inpainting
from latcomp.runtime import open_bundle
from latcomp.runtime.bundle import DEFAULT_BUNDLE

pytestmark = pytest.mark.skipif(not (DEFAULT_BUNDLE / "latcomp.json").is_file(),
                                reason="no default bundle in this checkout")


def test_opens_with_no_path_and_stays_under_16_mb():
    with open_bundle() as engine:
        assert engine.resolution == 64 and engine.backend == "ort"
        sizes = [entry["bytes"] for entry in engine.manifest["files"].values()]
        assert sum(sizes) < 16 * 2**20
        assert "latcomp train-gan" in engine.manifest["provenance"]["training"]["commands"]["generator"]
        images, latents = engine.sample([1, 2], truncation=0.7)
        assert images.shape == (2, 64, 64, 3) and np.isfinite(latents).all()


def test_fills_holes_in_unseen_faces_much_better_than_the_mean_colour():
    with open_bundle() as engine:
        report = evaluate_inpainting(engine, count=32)
    for kind in ("paper", "rect"):
        methods = report["masks"][kind]["methods"]
        assert methods["regressor"]["hole_l1"] <= 0.7 * methods["mean_fill"]["hole_l1"], kind
