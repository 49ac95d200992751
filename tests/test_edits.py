"""engine.composite / engine.inpaint: real images at their own size, the same answer as the gRPC server."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latcomp import compose
from latcomp.runtime import edits, open_bundle


@pytest.fixture(scope="module")
def engine():
    with open_bundle(backend="ort") as engine:  # the shipped bundle
        yield engine


@pytest.fixture(scope="module")
def server(engine):
    from latcomp.service.client import Client
    from latcomp.service.server import ServerConfig, ServerThread

    with ServerThread(engine, ServerConfig(host="127.0.0.1", port=0)) as thread:
        with Client(thread.target) as client:
            yield client


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like uint8 image (gradients plus a little noise)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([rows / height, cols / width, (rows + cols) / (height + width)], axis=-1) * 200
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def hole(height: int, width: int) -> np.ndarray:
    """bool [H, W], False (to fill) in a box in the middle."""
    known = np.ones((height, width), bool)
    known[height // 4 : height // 2, width // 3 : 2 * width // 3] = False
    return known


def test_inpaint_answers_at_the_image_size_by_default(engine):
    image, known = photo(200, 180), hole(200, 180)
    result, latent = engine.inpaint(image, known)
    assert result.shape == (200, 180, 3) and result.dtype == np.uint8
    assert latent.shape == tuple(engine.latent_shape) and latent.dtype == np.float32
    square, _ = engine.inpaint(image, known, size=edits.MODEL)
    assert square.shape == (engine.resolution, engine.resolution, 3)


def test_mask_and_image_kinds_give_the_same_answer(engine):
    image, known = photo(90, 120, 1), hole(90, 120)
    reference, _ = engine.inpaint(image, known)
    for picture, mask in [
        (image, known.astype(np.uint8) * 255),
        (Image.fromarray(image), Image.fromarray(known.astype(np.uint8) * 255)),
        (image, known[..., None]),
        (np.dstack([image, known.astype(np.uint8) * 255]), None),  # RGBA: the alpha is the mask
        (Image.fromarray(np.dstack([image, known.astype(np.uint8) * 255])), None),
    ]:
        np.testing.assert_array_equal(engine.inpaint(picture, mask)[0], reference)
    palette = Image.fromarray(image).quantize(16)  # a palette image whose entry 0 is transparent
    palette.info["transparency"] = 0
    known_by_palette = np.asarray(palette) != 0
    assert 0 < known_by_palette.mean() < 1
    np.testing.assert_array_equal(engine.inpaint(palette)[0],
                                  engine.inpaint(palette.convert("RGB"), known_by_palette)[0])


def test_inpaint_without_mask_or_alpha_says_a_mask_is_needed(engine):
    with pytest.raises(edits.MaskRequired, match="needs a mask"):
        engine.inpaint(photo(32, 32))
    with pytest.raises(ValueError, match=r"must have the image's shape \[32,32\]"):
        engine.inpaint(photo(32, 32), hole(31, 32))
    with pytest.raises(TypeError, match="must be uint8"):
        engine.inpaint(photo(32, 32).astype(np.float32), hole(32, 32))
    with pytest.raises(ValueError, match="size must be 'canvas'"):
        engine.inpaint(photo(32, 32), hole(32, 32), size="big")


def test_preserve_known_keeps_the_known_pixels(engine):
    image, known = photo(150, 100, 2), hole(150, 100)
    result, _ = engine.inpaint(image, known, preserve_known=True, feather=4)
    deep = compose.feather_alpha(known.astype(np.uint8) * 255, 4) == 1
    np.testing.assert_array_equal(result[deep], image[deep])
    assert not np.array_equal(result[~known], image[~known])


def test_composite_of_layers_at_the_first_layers_size(engine):
    base, patch = photo(120, 160, 3), photo(40, 50, 4)
    patch_known = np.ones((40, 50), bool)
    result, latent = engine.composite([(base, hole(120, 160)), (patch, patch_known, (-10, 70))])
    assert result.shape == (120, 160, 3)
    layer_form, _ = engine.composite([compose.Layer(base, hole(120, 160).astype(np.uint8) * 255),
                                      compose.Layer(patch, None, -10, 70)])
    np.testing.assert_array_equal(layer_form, result)
    with pytest.raises(ValueError, match="at least one layer"):
        engine.composite([])


@pytest.mark.parametrize("options", [{}, {"size": "model"}, {"preserve_known": True, "realism": 0.4}])
def test_the_python_api_answers_exactly_what_the_server_answers(engine, server, options):
    image, known = photo(200, 180, 5), hole(200, 180)
    ours, latent = engine.inpaint(image, known, **options)
    theirs = server.inpaint(image, known, format="raw", return_latent=True, **options)
    np.testing.assert_array_equal(ours, theirs.image)
    np.testing.assert_array_equal(latent, theirs.latent)
    layers = [(image, known), (photo(30, 40, 6), None, (20, 100))]
    np.testing.assert_array_equal(engine.composite(layers, **options)[0],
                                  server.composite(layers, format="raw", **options).image)
