"""1024x1024 edits end to end over gRPC with the server's default limits (raw and PNG, composite and
inpaint), on a reduced model whose generator really is 1024 px (narrow widths, so it runs in CI), served
by a real server on 127.0.0.1. The real-size model (StyleGAN2-1024 + ResNet-34) is measured by hand:
docs/BUNDLE.md."""

from __future__ import annotations

import numpy as np
import pytest

from latcomp import compose
from latcomp.service.client import Client
from latcomp.service.server import ServerConfig, ServerThread

SIZE = 1024


@pytest.fixture(scope="module")
def bundle_1024(tmp_path_factory, torch_one_thread):
    import torch

    from latcomp.export import export_bundle
    from latcomp.nets import StyleGAN2Generator, StyleGANEncoder

    torch.manual_seed(0)
    widths = {4: 16, 8: 16, 16: 16, 32: 8, 64: 8, 128: 8, 256: 4, 512: 4, 1024: 4}
    generator = StyleGAN2Generator(size=SIZE, style_dim=32, n_mlp=2, channels=widths).eval()
    regressor = StyleGANEncoder(blocks=[1, 1, 1, 1], widths=[8, 8, 16, 16], n_latent=generator.n_latent,
                                style_dim=32, input_size=64).eval()  # area-resizes 1024 -> 64
    return export_bundle(generator, regressor, tmp_path_factory.mktemp("b1024") / "reduced-1024",
                         fp16=False, max_batch=2)


@pytest.fixture(scope="module")
def client(bundle_1024):
    from latcomp.runtime import open_bundle

    with open_bundle(bundle_1024, backend="ort", instances=1) as engine:
        assert engine.resolution == SIZE
        with ServerThread(engine, ServerConfig(host="127.0.0.1", port=0)) as server:
            with Client(server.target, timeout=120) as client:
                yield client


def _face(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _hole() -> np.ndarray:
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[300:700, 200:800] = 0
    return mask


@pytest.mark.parametrize("payload", ["raw", "png"])
def test_inpaint_1024(client, payload):
    image, mask = _face(1), _hole()
    result = client.inpaint(image, mask, format=payload, size="canvas", preserve_known=True, feather_px=4,
                            return_input=True)
    assert result.image.shape == (SIZE, SIZE, 3) and result.image.dtype == np.uint8
    assert result.input.shape == (SIZE, SIZE, 3)  # the model's input is the canvas itself at 1024 px
    np.testing.assert_array_equal(result.input_mask, mask)
    deep = compose.feather_alpha(mask, 4) == 1  # known pixels beyond the feathered border of the hole
    np.testing.assert_array_equal(result.image[deep], image[deep])


@pytest.mark.parametrize("payload", ["raw", "png"])
def test_composite_1024(client, payload):
    base, part = _face(2), _face(3)[:400, :500]
    base_mask = _hole()
    result = client.composite([(base, base_mask), (part, None, (350, 250))], format=payload, size="canvas",
                              return_input=True)
    assert result.image.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(result.input[250:650, 350:850], part)  # x 350, y 250, at full resolution
