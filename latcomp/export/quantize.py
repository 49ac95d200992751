"""The INT8 composer for CPUs: static QDQ quantisation with onnxruntime.quantization.

What is quantised: the convolutions over feature maps (the regressor's trunk, the generator's modulated
3x3 convolutions and its FIR filters), weights per output channel (symmetric int8), activations per tensor
(uint8, ranges calibrated). What stays fp32, because it is cheap and the result is sensitive to it:
  - everything that is not a Conv: style affines and demodulation (Gemm/MatMul on per-sample vectors),
    the realism blend, the wire-format casts, bias, noise and activations between the convolutions;
  - the regressor's stem (it sees the raw RGBM input) and its 1x1 head (its output *is* the latent);
  - the generator's ToRGB (StyleGAN2) and output (ProGAN) convolutions: their output is the image.
The transposed (upsampling) convolutions stay fp32 too: onnxruntime's CPU provider has no int8 kernel for
them and would run them through dequantised weights.

Calibration feeds what the composer will see: images the generator draws itself (from the bundle's own
sampler and generator graphs, truncation 0.8) with the training masks (`data.masks.paper_mask`), one
sample per call. Before quantisation the graph is folded by onnxruntime's basic optimisations (the
equalised-learning-rate scales and BatchNorms into the convolution weights), so every weight the
quantiser sees is a constant. numpy, onnx and onnxruntime are imported when it runs (the command line
reads this module's constants without them).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

INT8_MIN_PSNR_DB = 35.0  # the quality guard: an INT8 composer below this PSNR against the torch modules
CALIBRATION_SAMPLES = 16
CALIBRATION_TRUNCATION = 0.8
CALIBRATION_SEED = 1234
QUANTIZED_OPS = ("Conv",)
# node-name prefixes the TorchScript exporter gives the convolutions kept in fp32 (see the docstring)
FP32_CONV_SCOPES = ("/regressor/conv1/", "/regressor/layer5/", "/generator/to_rgb", "/generator/output_")


def _session(path: Path, level: str = "all", optimized: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if level == "basic"
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    options.enable_cpu_mem_arena = False  # one-shot sessions: give the memory back when done
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         optimized.with_suffix(".bin").name)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         "1024")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def calibration_inputs(sampler: Path, generator: Path, count: int = CALIBRATION_SAMPLES,
                       seed: int = CALIBRATION_SEED) -> list[dict]:
    """Composer feeds of one sample each: the generator's own images with the training masks."""
    import numpy as np

    from ..data.masks import paper_mask

    sampler_session, generator_session = _session(sampler), _session(generator)
    z_dim = sampler_session.get_inputs()[0].shape[1]
    rng = np.random.default_rng(seed)
    feeds = []
    for index in range(count):
        z = np.random.RandomState(seed + index).standard_normal((1, z_dim)).astype(np.float32)
        truncation = np.full(1, CALIBRATION_TRUNCATION, np.float32)
        (latent,) = sampler_session.run(None, {"z": z, "truncation": truncation})
        (image,) = generator_session.run(None, {"latent": latent})
        mask = paper_mask(rng, image.shape[1])[None, ..., None]
        feeds.append({"image": image, "mask": mask, "realism": np.zeros(1, np.float32)})
    return feeds


def fp32_convs(model) -> list[str]:
    """Names of the Conv nodes kept in fp32 (see the module docstring)."""
    return [node.name for node in model.graph.node
            if node.op_type == "Conv" and node.name.startswith(FP32_CONV_SCOPES)]


def quantize_composer(composer: Path, sampler: Path, generator: Path,
                      calibration_samples: int = CALIBRATION_SAMPLES):
    """The INT8 QDQ composer ModelProto (weights inline) from the bundle's fp32 composer graph file
    (external weights beside it), calibrated with the sampler and generator graph files."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from .onnx_graphs import finish

    feeds = calibration_inputs(sampler, generator, calibration_samples)

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self._rest = iter(feeds)

        def get_next(self):
            return next(self._rest, None)

    with tempfile.TemporaryDirectory(prefix="latcomp-int8-") as scratch:
        folded, quantized = Path(scratch) / "folded.onnx", Path(scratch) / "int8.onnx"
        _session(composer, level="basic", optimized=folded)  # writes the folded graph
        keep = fp32_convs(onnx.load(str(folded), load_external_data=False))
        quantize_static(
            str(folded), str(quantized), Feeds(), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=keep, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, extra_options={"WeightSymmetric": True},
        )
        model = onnx.load(str(quantized))  # with any external data it wrote, before the folder goes
    return finish(model)
