"""Mask samplers: format, coverage statistics, part masks, the weighted mixture, collages."""

import numpy as np
import pytest

from latcomp.data.faces import PARTS, render_batch
from latcomp.data.masks import (
    COLLAGE_ORDER,
    STRATEGIES,
    MaskMixture,
    brush_mask,
    collage,
    empty_mask,
    full_mask,
    paper_mask,
    part_mask,
    rectangle_mask,
    upsample_bilinear,
)

SIZED = [paper_mask, rectangle_mask, brush_mask, full_mask, empty_mask]


def known(mask):
    return (mask == 255).mean()


def interp_matrix(src, dst):
    """Independent half-pixel (align_corners=False) linear interpolation via np.interp on unit vectors."""
    x = (np.arange(dst) + 0.5) * src / dst - 0.5  # np.interp clamps outside [0, src - 1] to the edge values
    return np.stack([np.interp(x, np.arange(src), np.eye(src)[j]) for j in range(src)], axis=1)


@pytest.mark.parametrize("size", [32, 64, 100])
@pytest.mark.parametrize("sampler", SIZED, ids=lambda f: f.__name__)
def test_format(sampler, size):
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = sampler(rng, size)
        assert mask.shape == (size, size) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}


@pytest.mark.parametrize("sampler", SIZED, ids=lambda f: f.__name__)
def test_seeded(sampler):
    a = [sampler(np.random.default_rng(5), 64) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])


def test_bilinear_matches_independent_interpolation():
    grid = np.random.default_rng(1).random((6, 6))
    for size in (6, 32, 64, 100):
        m = interp_matrix(6, size)
        np.testing.assert_allclose(upsample_bilinear(grid, size), m @ grid @ m.T, atol=1e-12)


def test_paper_mask_coverage():
    # Expected known fraction: a pixel with upsampled noise v is known iff v < c, c ~ U(0.3, 1), so
    # P(known | v) = (1 - max(v, 0.3)) / 0.7; average that over the distribution of v.
    rng = np.random.default_rng(0)
    m = interp_matrix(6, 64)
    v = np.einsum("ij,njk,lk->nil", m, rng.random((2000, 6, 6)), m)
    expected = ((1 - np.maximum(v, 0.3)) / 0.7).mean()
    assert 0.6 - 0.15 < expected < 0.6 + 0.15
    fractions = np.array([known(paper_mask(rng, 64)) for _ in range(3000)])
    print(f"paper: expected known {expected:.3f}, measured {fractions.mean():.3f} +- {fractions.std():.3f}")
    assert abs(fractions.mean() - expected) < 0.02  # standard error ~0.005
    assert fractions.std() > 0.15  # the random cutoff spreads coverage widely


def test_paper_mask_follows_cutoff():
    rng = np.random.default_rng(1)
    cutoffs = (0.3, 0.5, 0.7, 0.9)
    means = [np.mean([known(paper_mask(rng, 64, cutoff=c)) for _ in range(300)]) for c in cutoffs]
    assert np.all(np.diff(means) > 0.1)
    assert means[0] < 0.2 and means[-1] > 0.8
    assert known(paper_mask(rng, 64, cutoff=1.0)) == 1.0  # noise < 1 everywhere


@pytest.mark.parametrize("sampler", [rectangle_mask, brush_mask], ids=lambda f: f.__name__)
def test_holes(sampler):
    rng = np.random.default_rng(2)
    fractions = np.array([known(sampler(rng, 64)) for _ in range(500)])
    print(f"{sampler.__name__}: known {fractions.mean():.3f} +- {fractions.std():.3f}")
    assert 0.3 < fractions.mean() < 0.98
    assert fractions.max() < 1.0  # every mask has a hole
    assert fractions.min() > 0.2


def test_full_and_none():
    rng = np.random.default_rng(0)
    assert known(full_mask(rng, 16)) == 1.0 and known(empty_mask(rng, 16)) == 0.0


@pytest.fixture(scope="module")
def faces():
    return render_batch([0, 1, 2, 3], 64)


def test_part_mask_keep(faces):
    parts = faces[1][0]
    rng = np.random.default_rng(0)
    for keep in ({"eyes", "mouth"}, {"hair"}, {PARTS.index("skin"), "nose"}):
        ids = {PARTS.index(k) if isinstance(k, str) else k for k in keep}
        mask = part_mask(rng, parts, keep)
        np.testing.assert_array_equal(mask == 255, np.isin(parts, list(ids)))
    with pytest.raises(ValueError, match="nostrils"):
        part_mask(rng, parts, {"nostrils"})


def test_part_mask_random_subset(faces):
    rng = np.random.default_rng(3)
    for parts in faces[1]:
        present = set(np.unique(parts).tolist())
        for _ in range(30):
            mask = part_mask(rng, parts)
            kept = set(np.unique(parts[mask == 255]).tolist())
            assert kept and kept < present  # non-empty, proper
            assert set(np.unique(parts[mask == 0]).tolist()) == present - kept  # whole labels only


def test_mixture_weights(faces):
    weights = {"paper": 0.5, "rect": 0.2, "brush": 0.2, "parts": 0.1}
    mixture = MaskMixture(weights)
    rng = np.random.default_rng(0)
    n = 4000

    def chi2(counts, probs):
        expected = np.array(probs) * n
        return (((np.array(counts) - expected) ** 2) / expected).sum()

    names = [mixture.sample(rng, 64, faces[1][0])[0] for _ in range(n)]
    counts = [names.count(k) for k in weights]
    assert chi2(counts, list(weights.values())) < 16.3  # chi-square, 3 dof, p = 0.001
    names = [mixture.sample(rng, 64)[0] for _ in range(n)]  # no part map: "parts" shared out
    assert "parts" not in names
    counts = [names.count(k) for k in ("paper", "rect", "brush")]
    assert chi2(counts, [5 / 9, 2 / 9, 2 / 9]) < 13.8  # 2 dof, p = 0.001


def test_mixture_call():
    rng = np.random.default_rng(0)
    mask = MaskMixture({"full": 1})(rng, 32)
    assert mask.shape == (32, 32) and (mask == 255).all()
    assert (MaskMixture.from_spec("none")(rng, 32) == 0).all()
    parts = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match="part map"):
        MaskMixture({"parts": 1})(rng, 32)
    with pytest.raises(ValueError, match="shape"):
        MaskMixture({"parts": 1})(rng, 64, parts)


def test_from_spec():
    assert MaskMixture.from_spec("paper").weights == {"paper": 1.0}
    spec = MaskMixture.from_spec("paper:0.5, rect:0.2,brush:0.2,parts:0.1")
    assert spec.weights == {"paper": 0.5, "rect": 0.2, "brush": 0.2, "parts": 0.1}
    assert MaskMixture.from_spec("paper:1,full:0").weights == {"paper": 1.0}
    with pytest.raises(ValueError, match=r"'papr'.*paper, rect, brush, parts, full"):
        MaskMixture.from_spec("papr:1")
    for bad in ("paper:x", "paper:1,paper:2", "paper:-1", "paper:0", ""):
        with pytest.raises(ValueError):
            MaskMixture.from_spec(bad)
    with pytest.raises(ValueError, match="valid"):
        MaskMixture({"circle": 1.0})
    assert set(STRATEGIES) >= {"paper", "rect", "brush", "parts", "full", "none"}


def test_collage_synthetic():
    # Three flat-coloured "faces" with hand-made part maps, so the expected composite is known exactly.
    h = w = 8
    images = np.stack([np.full((h, w, 3), 40 * (k + 1), np.uint8) for k in range(3)])
    parts = np.zeros((3, h, w), np.uint8)
    skin, eyes, mouth = PARTS.index("skin"), PARTS.index("eyes"), PARTS.index("mouth")
    parts[0, 2:, :] = skin
    parts[1, 3, 1:7] = eyes
    parts[1, 6, :] = eyes  # overlaps face 0's skin: eyes win (later in COLLAGE_ORDER)
    parts[2, 5, 2:6] = mouth
    image, mask = collage(images, parts, {"eyes": 1, "mouth": 2, "skin": 0})
    expected = np.zeros((h, w), np.uint8)
    expected[2:, :] = 40
    expected[3, 1:7] = 80
    expected[6, :] = 80
    expected[5, 2:6] = 120
    np.testing.assert_array_equal(image[..., 0], expected)
    np.testing.assert_array_equal(mask, np.where(expected > 0, 255, 0))
    assert image.dtype == np.uint8 and mask.dtype == np.uint8
    with pytest.raises(ValueError):
        collage(images, parts, {"eyes": 3})
    with pytest.raises(ValueError):
        collage(images, parts, {"ears": 0})


def test_collage_faces(faces):
    images, parts = faces
    assignment = {"eyes": 1, "mouth": 2, "hair": 0, "skin": 0}
    image, mask = collage(images, parts, assignment)
    assert image.shape == images.shape[1:] and mask.shape == parts.shape[1:]
    assert (image[mask == 0] == 0).all()
    # Face 1's eyes come through whole (nothing assigned is pasted over eyes).
    eyes = parts[1] == PARTS.index("eyes")
    assert (mask[eyes] == 255).all()
    np.testing.assert_array_equal(image[eyes], images[1][eyes])
    # Every known pixel comes from a face whose assigned part covers it.
    ok = np.zeros(mask.shape, bool)
    for part, k in assignment.items():
        region = parts[k] == PARTS.index(part)
        ok |= region & (image == images[k]).all(axis=2)
    assert ok[mask == 255].all()
    assert set(COLLAGE_ORDER) == set(PARTS)
