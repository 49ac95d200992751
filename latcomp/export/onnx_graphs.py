"""ONNX export of the fused modules: TorchScript exporter, onnxslim clean-up, checker, shared weights.

Parameters stay named initializers (`generator.<key>`, `regressor.<key>`, `latent_avg`) with their original
values: the torch backend reads them back by name, and the three fp32 graphs store each tensor once in one
`weights.bin`. Runtimes fold the parameter arithmetic (equalised-lr scales, BatchNorm) when they load a
graph, so keeping it unfolded costs nothing at inference time.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import onnx
import onnxslim
import torch
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import set_external_data

OPSET = 17
# opset 17 needs IR 8; onnxruntime >= 1.18 and TensorRT 10 both read it (newer exporters write 9-10).
IR_VERSION = 8
BATCH_AXIS = "N"
PARAMETER_PREFIXES = ("generator.", "regressor.", "latent_avg")  # the fused modules' state_dict keys
# Smaller tensors that are not parameters (shape constants, axes, scales) stay inside each graph: shape
# inference and graph tools read them, and they cannot read external data.
EXTERNAL_MIN_BYTES = 1024


def export(module: torch.nn.Module, args: tuple, input_names: list[str],
           output_names: list[str]) -> onnx.ModelProto:
    """Exports `module` (eval mode, CPU) with a dynamic batch axis N on every input and output, cleaned up."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # tracer warnings about Python ints derived from shapes are expected: only the batch axis is dynamic
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), args, buffer, dynamo=False, opset_version=OPSET,
            input_names=input_names, output_names=output_names,
            dynamic_axes={name: {0: BATCH_AXIS} for name in input_names + output_names},
            # no folding and initializers kept as inputs: otherwise the exporter folds parameters into
            # anonymous constants and merges equal-valued ones, and their names are lost
            do_constant_folding=False, keep_initializers_as_inputs=True,
        )
    return clean(onnx.load_from_string(buffer.getvalue()))


def clean(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim clean-up (constant folding, fusions, dead code) that leaves every parameter untouched.

    While onnxslim runs, the parameters are graph inputs without values, so folding only simplifies what
    does not depend on them (shape arithmetic, exporter constants); afterwards they become initializers again.
    """
    parameters = {tensor.name: tensor for tensor in model.graph.initializer}
    del model.graph.initializer[:]
    slim = onnxslim.slim(model)
    used = {name for node in slim.graph.node for name in node.input}
    inputs = [value for value in slim.graph.input if value.name not in parameters]
    del slim.graph.input[:]
    slim.graph.input.extend(inputs)
    slim.graph.initializer.extend(tensor for name, tensor in parameters.items() if name in used)
    return finish(slim)


def finish(model: onnx.ModelProto) -> onnx.ModelProto:
    """Sets the IR version and producer, and runs the full checker (shapes and types included)."""
    model.ir_version = IR_VERSION
    model.producer_name, model.producer_version = "latcomp", _latcomp_version()
    onnx.checker.check_model(model, full_check=True)
    return model


def _latcomp_version() -> str:
    from .. import __version__

    return __version__


def initializer_names(model: onnx.ModelProto) -> set[str]:
    return {tensor.name for tensor in model.graph.initializer}


def describe_io(model: onnx.ModelProto) -> tuple[dict, dict]:
    """({input: {dtype, shape}}, {output: {dtype, shape}}) with "N" for the dynamic batch axis."""

    def one(value: onnx.ValueInfoProto) -> dict:
        tensor_type = value.type.tensor_type
        dims = [dim.dim_param or dim.dim_value for dim in tensor_type.shape.dim]
        return {"dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name, "shape": dims}

    return ({value.name: one(value) for value in model.graph.input},
            {value.name: one(value) for value in model.graph.output})


def _alignment(size: int) -> int:
    # page-aligned large tensors can be memory-mapped by onnxruntime; small ones just stay word-aligned
    return 4096 if size >= 65536 else 64


def save_with_shared_weights(models: dict[Path, onnx.ModelProto], weights: Path) -> None:
    """Writes each model to its path with its parameters and large constants in one external file `weights`
    beside them (the models are changed in place).

    Tensors are deduplicated by content: a parameter used by several graphs (or repeated inside one) is
    stored once and every initializer that holds it points at the same bytes.
    """
    stored: dict[bytes, tuple[int, int]] = {}  # sha256 of the bytes -> (offset, length)
    with weights.open("wb") as blob:
        for model in models.values():
            for tensor in model.graph.initializer:
                array = numpy_helper.to_array(tensor)
                data = array.tobytes()  # C order, little-endian on every platform we run on
                if len(data) < EXTERNAL_MIN_BYTES and not tensor.name.startswith(PARAMETER_PREFIXES):
                    continue
                key = hashlib.sha256(data).digest()
                if key not in stored:
                    offset = -blob.tell() % _alignment(len(data)) + blob.tell()
                    blob.write(b"\0" * (offset - blob.tell()))
                    blob.write(data)
                    stored[key] = (offset, len(data))
                offset, length = stored[key]
                external = numpy_helper.from_array(array, tensor.name)
                set_external_data(external, weights.name, offset, length)
                external.ClearField("raw_data")
                external.data_location = TensorProto.EXTERNAL
                tensor.CopyFrom(external)
    for path, model in models.items():
        onnx.save_model(model, str(path))
        onnx.checker.check_model(str(path), full_check=True)  # by path: reads the external data too
