"""Procedural faces: determinism, shapes, label coverage, image/part consistency, variation, speed."""


import numpy as np
import pytest
from PIL import Image

from latcomp.data.faces import PARTS, render, render_batch

SEEDS = range(48)


@pytest.fixture(scope="module")
def faces64():
    return [render(seed, 64) for seed in SEEDS]


def test_parts_names():
    for name in ("background", "skin", "hair", "eyes", "brows", "nose", "mouth", "glasses"):
        assert name in PARTS
    assert len(set(PARTS)) == len(PARTS)


def test_deterministic():
    a, b, c = render(7), render(7), render(8)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.parts, b.parts)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.parts, c.parts)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_and_dtypes(size):
    face = render(3, size)
    assert face.image.shape == (size, size, 3) and face.image.dtype == np.uint8
    assert face.parts.shape == (size, size) and face.parts.dtype == np.uint8
    assert face.parts.max() < len(PARTS)


def test_too_small_rejected():
    with pytest.raises(ValueError, match="32"):
        render(0, 16)


def test_same_face_at_every_size():
    # The seed fixes the face in size-free units: the 32 px face is the 64 px face, halved.
    for seed in range(5):
        small = render(seed, 32).image.astype(float)
        halved = np.asarray(Image.fromarray(render(seed, 64).image).reduce(2)).astype(float)
        assert np.abs(small - halved).mean() < 4


def test_render_batch():
    images, parts = render_batch([1, 2, 3], 32)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert parts.shape == (3, 32, 32) and parts.dtype == np.uint8
    np.testing.assert_array_equal(images[1], render(2, 32).image)
    np.testing.assert_array_equal(parts[2], render(3, 32).parts)


def test_every_label_appears(faces64):
    seen = np.zeros(len(PARTS), dtype=int)
    for face in faces64:
        seen[np.unique(face.parts)] += 1
    assert (seen > 0).all(), dict(zip(PARTS, seen, strict=True))
    glasses = seen[PARTS.index("glasses")]
    assert 0 < glasses < len(faces64)  # about a quarter
    for face in faces64:  # the part map shows glasses exactly when they were drawn
        assert (face.params["glasses"] is not None) == (PARTS.index("glasses") in face.parts)


def test_parts_match_colours(faces64):
    hair, skin = PARTS.index("hair"), PARTS.index("skin")
    for face in faces64:
        skin_rgb = np.median(face.image[face.parts == skin], axis=0)
        assert np.abs(skin_rgb - face.params["skin"]).max() < 40
        if (face.parts == hair).sum() > 20:
            hair_rgb = np.median(face.image[face.parts == hair], axis=0)
            assert np.abs(hair_rgb - face.params["hair"]["color"]).max() < 40
            if np.abs(face.params["hair"]["color"] - face.params["skin"]).max() > 80:
                own = np.abs(hair_rgb - face.params["hair"]["color"]).sum()
                assert own < np.abs(hair_rgb - skin_rgb).sum()


def test_antialiased(faces64):
    # Box-filtered edges make many in-between colours; a hard-edged cartoon would have a few dozen.
    for face in faces64[:5]:
        assert len(np.unique(face.image.reshape(-1, 3), axis=0)) > 300


def test_variation(faces64):
    skin = np.array([face.image[face.parts == PARTS.index("skin")].mean(axis=0) for face in faces64])
    assert skin.mean(axis=1).std() > 20  # light to deep skin tones
    background = np.array([face.image[face.parts == 0].mean(axis=0) for face in faces64])
    assert background.std(axis=0).min() > 20
    styles = {face.params["hair"]["style"] for face in faces64}
    expressions = {face.params["mouth"]["expression"] for face in faces64}
    hair_colours = {face.params["hair"]["color_name"] for face in faces64}
    assert len(styles) >= 6 and len(expressions) >= 4 and len(hair_colours) >= 6
    centroids = np.array([np.argwhere(face.parts == PARTS.index("eyes")).mean(axis=0) for face in faces64])
    assert centroids.std(axis=0).min() > 0.5  # the face moves around
