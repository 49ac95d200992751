"""FP16 conversion of the composer graph with onnxruntime's converter, keeping what needs it in FP32.

Kept in FP32 (the rest, the convolutions over feature maps, carries the cost and goes to FP16):
  - the fused module's own glue (uint8 conversion, mask threshold, realism blend, rounding): exact levels
    and latents, and the converter cannot retype the uint8 -> float casts anyway;
  - every node with a non-4-D output: per-sample vectors (latent rows, style affines, demodulation
    coefficients, pooled features, heads) are cheap and precision-sensitive;
  - reductions and normalisations with what feeds them (squares overflow FP16 above 256) and what they
    feed (an epsilon of 1e-8 underflows to 0 in FP16, and pixel norm of a zero latent would give 0/0).
I/O types stay as they are (keep_io_types). After the conversion, `read_fp32_sources` (our own pass) removes
the fp32 -> fp16 -> fp32 round trips the converter leaves between two FP32 nodes.
"""

from __future__ import annotations

from collections import defaultdict

import onnx
import onnxslim
from onnx import TensorProto
from onnxruntime.transformers import float16

from .onnx_graphs import finish

NETWORK_SCOPES = ("/generator/", "/regressor/")  # node-name prefixes the TorchScript exporter gives
REDUCTIONS = {"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceMax", "ReduceMin"}
FP32_OPS = REDUCTIONS | {
    "Pow", "Sqrt", "Reciprocal", "Div", "Gemm", "MatMul",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
}


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 copy of an fp32 graph (with its weights inline); the input model is left unchanged."""
    # fold everything first: equalised-lr scales multiply into the weights (stored values can be ~100x
    # what they act as) and BatchNorm folds into the convolutions, before anything is rounded to FP16
    folded = onnxslim.slim(onnx.ModelProto.FromString(model.SerializeToString()))
    detach_outputs(folded)
    keep = fp32_nodes(folded)
    untie_mixed_initializers(folded, keep)
    converted = float16.convert_float_to_float16(
        folded, keep_io_types=True, op_block_list=sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | FP32_OPS),
        node_block_list=sorted(keep),
    )
    read_fp32_sources(converted.graph)
    return finish(onnxslim.slim(converted))  # drops the casts that became dead or identities


def fp32_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes to keep in FP32 beyond FP32_OPS (see the module docstring)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    rank = {value.name: len(value.type.tensor_type.shape.dim)
            for value in [*inferred.graph.value_info, *inferred.graph.output]}
    consumers = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    producers = {out: node for node in model.graph.node for out in node.output}
    keep = set()
    for node in model.graph.node:
        feeds_reduction = any(user.op_type in REDUCTIONS for out in node.output for user in consumers[out])
        reads_reduction = any(producers[name].op_type in REDUCTIONS
                              for name in node.input if name in producers)
        if (not node.name.startswith(NETWORK_SCOPES) or feeds_reduction or reads_reduction
                or any(rank.get(out, 4) != 4 for out in node.output)):
            keep.add(node.name)
    return keep


def detach_outputs(model: onnx.ModelProto) -> None:
    """A graph output that other nodes also read (the composer's latent feeds the generator) gets the
    converter's keep_io_types casts wrong: those readers take an internal copy; an Identity feeds the
    output."""
    read = {name for node in model.graph.node for name in node.input}
    for name in [value.name for value in model.graph.output if value.name in read]:
        internal = f"{name}_internal"
        for node in model.graph.node:
            for field in (node.input, node.output):
                for index, tensor in enumerate(field):
                    if tensor == name:
                        field[index] = internal
        model.graph.node.append(onnx.helper.make_node("Identity", [internal], [name], name=f"/{name}_output"))


def untie_mixed_initializers(model: onnx.ModelProto, keep: set[str]) -> None:
    """The converter leaves an initializer FP32 when an FP32 node reads it, which breaks FP16 nodes reading
    the same one (clean-up ties equal constants, e.g. the -1/1 of two clamps): those get their own copy."""
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    readers = defaultdict(list)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in initializers:
                readers[name].append((node, index))
    for name, uses in readers.items():
        if len({node.name in keep for node, _ in uses}) == 2:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[name])
            copy.name = f"{name}_fp16"
            model.graph.initializer.append(copy)
            for node, index in uses:
                if node.name not in keep:
                    node.input[index] = copy.name


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next(attribute.i for attribute in node.attribute if attribute.name == "to")


def read_fp32_sources(graph: onnx.GraphProto) -> None:
    """Every fp32 -> Cast(fp16) -> Cast(fp32) pair the converter leaves between two FP32 nodes loses precision
    for nothing: the second cast reads the fp32 tensor instead (an exact identity that onnxslim removes)."""
    producers = {out: node for node in graph.node for out in node.output}
    fp32 = {value.name for value in [*graph.input, *graph.value_info]
            if value.type.tensor_type.elem_type == TensorProto.FLOAT}
    fp32 |= {tensor.name for tensor in graph.initializer if tensor.data_type == TensorProto.FLOAT}
    for node in graph.node:
        first = producers.get(node.input[0]) if _cast_to(node) == TensorProto.FLOAT else None
        if first is not None and _cast_to(first) == TensorProto.FLOAT16 and first.input[0] in fp32:
            node.input[0] = first.input[0]
