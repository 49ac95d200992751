"""latcomp.compose: pasting layers, resizing to the model and back, feathered paste-back (numpy, Pillow)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from latcomp import compose
from latcomp.compose import Layer


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_single_layer_without_mask_is_all_known():
    image = _image(6, 9)
    canvas, mask = compose.paste_layers([Layer(image)])
    np.testing.assert_array_equal(canvas, image)
    assert mask.dtype == np.uint8 and mask.shape == (6, 9) and np.all(mask == 255)


def test_later_layers_cover_earlier_ones_only_where_known():
    base = np.full((4, 4, 3), 10, np.uint8)
    top = np.full((2, 2, 3), 200, np.uint8)
    top_mask = np.array([[255, 0], [128, 127]], np.uint8)  # >= 128 is known
    canvas, mask = compose.paste_layers([Layer(base), Layer(top, top_mask, x=1, y=2)])
    expected = base.copy()
    expected[2, 1] = 200
    expected[3, 1] = 200
    np.testing.assert_array_equal(canvas, expected)
    assert np.all(mask == 255)


def test_offsets_clip_and_masks_union():
    base = _image(5, 5, 1)
    hole = np.zeros((5, 5), np.uint8)
    patch = _image(3, 3, 2)
    canvas, mask = compose.paste_layers(
        [
            Layer(base, hole),  # nothing known from the base
            Layer(patch, x=-1, y=-2),  # rows 0..0, cols 0..1 land on the canvas
            Layer(patch, x=4, y=3),  # rows 3..4, col 4
            Layer(patch, x=10, y=0),  # entirely off the canvas
            Layer(patch, x=-3, y=0),  # entirely off (ends at column 0, exclusive)
        ]
    )
    expected_mask = np.zeros((5, 5), np.uint8)
    expected_mask[0:1, 0:2] = 255
    expected_mask[3:5, 4:5] = 255
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(canvas[0:1, 0:2], patch[2:3, 1:3])
    np.testing.assert_array_equal(canvas[3:5, 4:5], patch[0:2, 0:1])
    assert np.all(canvas[mask == 0] == 0)  # uncovered pixels are zero, not the base's unknown pixels


def test_paste_layers_needs_a_layer():
    with pytest.raises(ValueError, match="at least one layer"):
        compose.paste_layers([])


def test_integer_shrink_is_block_mean():
    image = _image(8, 12)
    out = compose.resize_image(image, 2, 3).astype(int)
    expected = image.reshape(2, 4, 3, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(out - expected).max() <= 1  # Pillow's fixed-point sums round once per axis


def _box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: output i averages the input pixels whose centres lie in its footprint (i*s, (i+1)*s]."""
    scale = n_in / n_out
    centres = np.arange(n_in) + 0.5
    inside = (centres[None, :] > np.arange(n_out)[:, None] * scale) & (
        centres[None, :] <= (np.arange(n_out)[:, None] + 1) * scale)
    return inside / inside.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("size", [(7, 5), (13, 17), (1, 1)])
def test_shrink_averages_the_pixels_each_output_covers(size):
    """Area averaging as Pillow's BOX filter defines it, axis by axis: whole input pixels, chosen by their
    centres."""
    image = _image(20, 24, 3)
    height, width = size
    expected = np.einsum("ij,jkc,lk->ilc", _box_matrix(20, height), image.astype(np.float64),
                         _box_matrix(24, width))
    ours = compose.resize_image(image, height, width).astype(np.float64)
    assert np.abs(ours - expected).max() <= 1


def test_training_and_serving_downsample_alike(tmp_path):
    """A photo becomes the regressor's training image (ImageFolder) exactly as the server shrinks it for
    the model (to_model): both go through compose.resize_image."""
    from latcomp.data import ImageFolder

    photo = _image(200, 200, 5)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    trained_on = ImageFolder(tmp_path, 32)[0]
    served, _ = compose.to_model(photo, np.full((200, 200), 255, np.uint8), 32)
    np.testing.assert_array_equal(trained_on, served)


@pytest.mark.parametrize("size", [(33, 41), (64, 64)])
def test_grow_is_half_pixel_bilinear_like_pillow(size):
    image = _image(20, 24, 4)
    height, width = size
    ours = compose.resize_image(image, height, width).astype(int)
    theirs = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_resize_keeps_constants_and_identity():
    flat = np.full((9, 7, 3), 77, np.uint8)
    assert np.all(compose.resize_image(flat, 32, 32) == 77)
    assert np.all(compose.resize_image(flat, 4, 3) == 77)
    image = _image(9, 7)
    out = compose.resize_image(image, 9, 7)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_resize_mask_is_binary():
    mask = np.zeros((10, 10), np.uint8)
    mask[:, :5] = 200
    out = compose.resize_mask(mask, 7, 13)
    assert set(np.unique(out)) <= {0, 255}
    assert out[:, 0].min() == 255 and out[:, -1].max() == 0


def test_to_model_zeroes_unknown_pixels():
    canvas = _image(40, 60)
    mask = np.full((40, 60), 255, np.uint8)
    mask[10:30, 20:40] = 0
    image, model_mask = compose.to_model(canvas, mask, 16)
    assert image.shape == (16, 16, 3) and model_mask.shape == (16, 16, 1)
    assert np.all(image[model_mask[..., 0] == 0] == 0)
    assert np.any(model_mask == 0) and np.any(model_mask == 255)


def test_feather_alpha_ramps_inside_the_known_region():
    mask = np.zeros((40, 40), np.uint8)
    mask[:, 20:] = 255
    alpha = compose.feather_alpha(mask, 8)
    assert np.all(alpha[:, :20] == 0)  # never weights unknown pixels
    assert np.all(alpha[:, 30:] == 1)  # deep inside: the known pixels as they are
    row = alpha[20, 20:30]
    assert np.all(np.diff(row) >= 0) and 0 < row[2] < 1
    np.testing.assert_array_equal(compose.feather_alpha(mask, 0), (mask == 255).astype(np.float32))


def test_paste_known_keeps_known_pixels_and_fills_holes():
    image = _image(32, 32, 4)
    result = _image(32, 32, 5)
    mask = np.full((32, 32), 255, np.uint8)
    mask[8:24, 8:24] = 0
    out = compose.paste_known(result, image, mask, feather=4)
    np.testing.assert_array_equal(out[8:24, 8:24], result[8:24, 8:24])
    np.testing.assert_array_equal(out[:2], image[:2])  # far from any hole; the border is not a hole
    hard = compose.paste_known(result, image, mask, feather=0)
    np.testing.assert_array_equal(hard, np.where(mask[..., None] == 255, image, result))
    np.testing.assert_array_equal(compose.paste_known(result, image, np.full_like(mask, 255)), image)
    with pytest.raises(ValueError):
        compose.paste_known(result[:8], image, mask)


def test_compose_needs_no_torch():
    code = "import sys; sys.modules['torch'] = None; import latcomp.compose"
    subprocess.run([sys.executable, "-c", code], check=True)
