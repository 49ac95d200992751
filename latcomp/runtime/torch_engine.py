"""The torch backend: the exported modules run eagerly, rebuilt from the bundle alone.

The networks are built from the manifest's arch/config and take their weights from the fp32 graphs'
named initializers (`generator.<key>`, `regressor.<key>`, `latent_avg`), so a bundle needs no second
checkpoint. It is the reference the other backends are compared with, and the CUDA path (fp16 through
autocast) where TensorRT is missing. Needs torch and onnx, both imported only when an engine is made.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .bundle import Bundle, BundleError
from .engine import Engine

FP32_GRAPHS = ("composer", "generator", "sampler")
WEIGHT_PREFIXES = ("generator.", "regressor.", "latent_avg")


def read_weights(bundle: Bundle) -> dict[str, np.ndarray]:
    """{name: array} of the parameters the fp32 graphs hold (each file's initializers, external data read)."""
    import onnx
    from onnx import numpy_helper

    weights = {}
    for graph in FP32_GRAPHS:
        model = onnx.load(str(bundle.graph_path(graph)), load_external_data=False)
        for tensor in model.graph.initializer:
            if tensor.name.startswith(WEIGHT_PREFIXES) and tensor.name not in weights:
                weights[tensor.name] = numpy_helper.to_array(tensor, base_dir=str(bundle.path))
    return weights


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, bundle: Bundle, device: str = "cpu", precision: str = "auto",
                 max_batch: int | None = None):
        import torch

        from ..nets.fused import Composer, Decoder, Sampler
        from ..nets import model_class

        if precision == "auto":
            precision = "fp32" if device == "cpu" else "fp16"
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'fp16', got {precision!r}")
        if precision == "fp16" and device == "cpu":
            raise ValueError("the torch backend runs fp16 on CUDA only; use precision='fp32' on cpu")
        super().__init__(bundle, device, precision, max_batch)
        self._torch = torch
        manifest = bundle.manifest
        generator = model_class(manifest["generator"]["arch"])(**manifest["generator"]["config"])
        regressor = model_class(manifest["regressor"]["arch"])(**manifest["regressor"]["config"])
        weights = {name: torch.from_numpy(array.copy()) for name, array in read_weights(bundle).items()}
        if "latent_avg" not in weights:
            raise BundleError(f"{bundle.graph_path('composer')}: no 'latent_avg' initializer")
        self._composer = Composer(generator, regressor, weights["latent_avg"])
        expected = self._composer.state_dict()
        # BatchNorm's num_batches_tracked counts training steps: no graph uses it, so none stores it
        missing = [key for key in expected if key not in weights and not key.endswith("num_batches_tracked")]
        if missing:
            raise BundleError(f"{bundle.path}: the graphs hold no weights for {', '.join(missing[:5])}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        try:
            self._composer.load_state_dict({key: weights[key] for key in expected if key in weights},
                                           strict=False)
        except RuntimeError as error:
            raise BundleError(f"{bundle.path}: weights do not fit the manifest's architecture: "
                              f"{error}") from None
        self._decoder = Decoder(generator)
        self._sampler = Sampler(generator, self._composer.latent_avg)
        self._device = torch.device(device)
        for module in (self._composer, self._decoder, self._sampler):
            module.to(self._device).eval()

    @property
    def composer(self):  # the eager Composer (generator, regressor, latent_avg), for latcomp.eval
        return self._composer

    def _context(self):
        torch = self._torch
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.precision == "fp16":  # autocast keeps reductions and normalisations in fp32
            stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
        return stack

    def _tensor(self, array: np.ndarray):
        return self._torch.from_numpy(array).to(self._device, non_blocking=True)

    def _compose(self, images, masks, realism):
        with self._context():
            result, latent = self._composer(self._tensor(images), self._tensor(masks), self._tensor(realism))
            return result.cpu().numpy(), latent.float().cpu().numpy()

    def _generate(self, latents):
        with self._context():
            return self._decoder(self._tensor(latents)).cpu().numpy()

    def _sample_latents(self, z, truncation):
        with self._torch.inference_mode():  # the mapping network stays fp32: latents are what users keep
            return self._sampler(self._tensor(z), self._tensor(truncation)).cpu().numpy()

    def _release(self) -> None:
        del self._composer, self._decoder, self._sampler
