"""ImageFolder: listing, resize + centre crop, colour modes, flips, errors."""

import numpy as np
import pytest
from PIL import Image

from latcomp.data.folder import ImageFolder


def stripes(w, h):
    """Red | green | blue columns, the outer ones 1/4 of the width each."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 4, 0] = 255
    a[:, w // 4 : w - w // 4, 1] = 255
    a[:, w - w // 4 :, 2] = 255
    return a


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "b").mkdir()
    Image.fromarray(stripes(120, 40)).save(tmp_path / "wide.png")
    Image.fromarray(stripes(120, 40).transpose(1, 0, 2)).save(tmp_path / "b" / "tall.jpg", quality=95)
    Image.fromarray(np.full((50, 70), 90, np.uint8), "L").save(tmp_path / "b" / "grey.png")
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (200, 10, 10, 255)  # opaque red left half, transparent (black) right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    palette = Image.fromarray(np.tile(np.repeat(np.arange(4, dtype=np.uint8), 10), (40, 1)), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(tmp_path / "Palette.PNG", transparency=0)
    Image.fromarray(np.full((40, 40), 65535 // 2, np.uint16)).save(tmp_path / "deep.png")  # 16-bit greyscale
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_listing_sorted_recursive(folder):
    ds = ImageFolder(folder, 32)
    names = [p.relative_to(folder).as_posix() for p in ds.paths]
    assert names == sorted(["wide.png", "b/tall.jpg", "b/grey.png", "alpha.png", "Palette.PNG", "deep.png"])
    assert len(ds) == 6
    assert ImageFolder(folder, 32, extensions=("jpg",)).paths == [folder / "b" / "tall.jpg"]


def test_shapes(folder):
    for size in (16, 32, 57):
        ds = ImageFolder(folder, size)
        for i in range(len(ds)):
            image = ds[i]
            assert image.shape == (size, size, 3) and image.dtype == np.uint8


def test_centre_crop(folder):
    ds = ImageFolder(folder, 32)
    # wide.png, 120x40 -> 96x32 -> columns 32..64 of 96 = original columns 40..80: all green.
    wide = ds[ds.paths.index(folder / "wide.png")].astype(int)
    assert np.abs(wide - (0, 255, 0)).max() <= 3
    tall = ds[ds.paths.index(folder / "b" / "tall.jpg")].astype(int)  # JPEG: loose tolerance
    assert np.abs(tall - (0, 255, 0)).max() <= 25


def test_resize_keeps_content(tmp_path):
    # Square 64 -> 32: an antialiased resize is close to a 2x2 box average.
    a = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    a = np.asarray(Image.fromarray(a).resize((8, 8)).resize((64, 64), Image.Resampling.BILINEAR))
    Image.fromarray(a).save(tmp_path / "x.png")
    out = ImageFolder(tmp_path, 32)[0].astype(float)
    box = a.astype(float).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(out - box).mean() < 3


def test_colour_modes(folder):
    ds = ImageFolder(folder, 32)
    grey = ds[ds.paths.index(folder / "b" / "grey.png")]
    assert (grey == 90).all()
    alpha = ds[ds.paths.index(folder / "alpha.png")].astype(int)
    assert np.abs(alpha[:, :12] - (200, 10, 10)).max() <= 3  # opaque stays
    assert (alpha[:, 20:] >= 250).all()  # transparent -> white, not the hidden black
    pal = ds[ds.paths.index(folder / "Palette.PNG")].astype(int)
    assert pal.std(axis=(0, 1)).max() > 30  # real colours, not indices
    assert (pal[:, 0] >= 250).all()  # index 0 is transparent -> white
    deep = ds[ds.paths.index(folder / "deep.png")].astype(int)
    assert np.abs(deep - 127).max() <= 1  # 16 bit rescaled to 8


def test_flip(folder):
    ds = ImageFolder(folder, 32, flip=True)
    i = ds.paths.index(folder / "alpha.png")
    plain = ds[i]
    assert (ds[i] == plain).all()  # indexing never flips
    rng = np.random.default_rng(0)
    results = [ds.load(i, rng) for _ in range(40)]
    flipped = sum((r == plain[:, ::-1]).all() for r in results)
    kept = sum((r == plain).all() for r in results)
    assert flipped + kept == 40 and 5 < flipped < 35
    assert (ImageFolder(folder, 32).load(i, rng) == plain).all()  # flip=False: never


def test_exif_orientation(tmp_path):
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, :40] = (255, 0, 0)
    a[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the left (red) half ends up on top
    Image.fromarray(a).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = ImageFolder(tmp_path, 32)[0].astype(int)
    assert out[2, 16, 0] > 200 and out[2, 16, 2] < 60
    assert out[29, 16, 2] > 200 and out[29, 16, 0] < 60


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 32)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no images in .*" + tmp_path.name + r".*\.png"):
        ImageFolder(tmp_path, 32)
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    ds = ImageFolder(tmp_path, 8)
    with pytest.raises(IndexError):
        ds[1]
    assert ds[-1].shape == (8, 8, 3)
