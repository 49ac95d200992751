"""The first mistakes a new user makes get a clear answer: exit status 2 (bad usage) or the limit's flag."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latcomp.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mistakes")
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    alpha = np.full((90, 70), 255, np.uint8)
    alpha[30:60, 20:50] = 0
    Image.fromarray(photo).save(folder / "photo.png")
    Image.fromarray(np.dstack([photo, alpha])).save(folder / "cutout.png")
    Image.fromarray(photo).save(folder / "photo.gif")
    Image.fromarray(photo).save(folder / "photo.bmp")
    (folder / "notes.txt").write_text("not an image")
    return folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inpaint_without_mask_or_alpha_exits_2(files, capsys, tmp_path):
    code, _, err = run(capsys, "inpaint", files / "photo.png", "-o", tmp_path / "out.png")
    assert code == 2
    assert "no alpha channel and no --mask" in err and "needs a mask" in err
    assert not (tmp_path / "out.png").exists()


def test_inpaint_uses_the_alpha_channel_and_answers_at_the_image_size(files, capsys, tmp_path):
    code, out, err = run(capsys, "inpaint", files / "cutout.png", "-o", tmp_path / "out.png")
    assert code == 0, err
    assert "70x90" in out
    assert Image.open(tmp_path / "out.png").size == (70, 90)
    code, out, _ = run(capsys, "inpaint", files / "cutout.png", "-o", tmp_path / "small.png",
                       "--size", "model")
    assert code == 0 and Image.open(tmp_path / "small.png").size == (64, 64)


@pytest.mark.parametrize("name, says", [("photo.gif", "GIF images are not accepted"),
                                        ("photo.bmp", "BMP images are not accepted"),
                                        ("notes.txt", "not an image file"),
                                        ("absent.png", "no such file")])
def test_unsupported_inputs_list_the_supported_formats(files, capsys, tmp_path, name, says):
    inpaint = ["inpaint", files / name, "--mask", files / "photo.png"]
    for argv in (inpaint, ["compose", "--layer", files / name]):
        code, _, err = run(capsys, *argv, "-o", tmp_path / "out.png")
        assert code == 2 and says in err
        if name != "absent.png":
            assert "supported formats: PNG, JPEG, WebP" in err
        assert "<" not in err and " at 0x" not in err  # no object reprs


@pytest.fixture(scope="module")
def strict_server():
    """A real server with small limits: 2000 pixels per image, 1 MB messages."""
    from latcomp.runtime import open_bundle
    from latcomp.service.server import ServerConfig, ServerThread

    with open_bundle(backend="ort") as engine, ServerThread(
        engine, ServerConfig(host="127.0.0.1", port=0, max_pixels=2000, max_message_mb=1.0)
    ) as server:
        yield server.target


def test_over_the_pixel_limit_names_the_flag(files, capsys, tmp_path, strict_server):
    code, _, err = run(capsys, "inpaint", files / "cutout.png", "-o", tmp_path / "out.png",
                       "--server", strict_server)
    assert code == 1
    assert "exceeds the limit" in err and "latcomp serve --max-pixels" in err


def test_over_the_message_limit_names_the_flag_and_suggests_jpeg(capsys, tmp_path, strict_server):
    noise = np.random.default_rng(1).integers(0, 256, (700, 700, 3), dtype=np.uint8)  # ~1.5 MB as PNG
    Image.fromarray(noise).save(tmp_path / "noise.png")
    code, _, err = run(capsys, "compose", "--layer", tmp_path / "noise.png", "-o", tmp_path / "out.png",
                       "--server", strict_server)
    assert code == 1
    assert "RESOURCE_EXHAUSTED" in err and "--max-message-mb" in err and "JPEG" in err


def test_info_without_argument_describes_the_shipped_bundle(capsys):
    from latcomp.runtime.bundle import DEFAULT_BUNDLE

    code, out, _ = run(capsys, "info")
    assert code == 0
    assert str(DEFAULT_BUNDLE) in out and "resolution" in out and "64" in out


def test_info_on_a_file_that_is_no_checkpoint_says_what_it_expected(files, capsys):
    code, _, err = run(capsys, "info", files / "notes.txt")
    assert code == 2
    assert "cannot read" in err and "expected a PyTorch checkpoint" in err and ".safetensors" in err
    code, _, err = run(capsys, "info", files)  # a directory: a bundle was expected
    assert code == 2 and "latcomp.json" in err
