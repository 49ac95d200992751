"""The Open Inference Protocol (KServe v2) for a latcomp server: `inference.GRPCInferenceService`.

The server registers this servicer beside latcomp.v1.ComposerService, on the same port, behind the same
auth, metrics and admission; ModelInfer goes through the same batcher as Composite and Inpaint (each sample
of a request is one batcher request, so KServe and latcomp.v1 traffic batch together). Every served model is
one KServe model whose tensors are those of the fused composer graph, with the names, types and shapes of
the Triton repository `latcomp export --triton` writes, so one client works against both:

    inputs   image    UINT8  [-1, R, R, 3]   RGB, rows top to bottom
             mask     UINT8  [-1, R, R, 1]   255 = known, 0 = to fill
             realism  FP32   [-1, 1]         optional (default 0); [-1] is accepted too
    outputs  result   UINT8  [-1, R, R, 3]
             latent   FP32   [-1, *latent_shape]

Inputs arrive as `raw_input_contents` (what tritonclient sends) or as typed `contents`; outputs are always
`raw_output_contents`. Status codes: INVALID_ARGUMENT (a tensor's name, type, shape or size is wrong, or
the batch exceeds max_batch_size), NOT_FOUND (unknown model or version), and those of latcomp.v1
(RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, UNAVAILABLE, UNAUTHENTICATED, INTERNAL).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from .. import __version__
from ..inference import grpc_service_pb2 as kpb
from ..inference import grpc_service_pb2_grpc as kpb_grpc
from .admission import RpcFailure, echo
from .models import Model, ModelNotFound

SERVER_NAME = "latcomp"
EXTENSIONS = ("model_configuration",)  # ModelConfig; Triton's name for that extension
BYTES_PER_REQUEST = 1 << 20  # admission's estimate of a request's fixed overhead (buffers, futures)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # the protocol's type name
    shape: tuple[int, ...]  # per sample: the batch axis left out

    @property
    def dtype(self) -> np.dtype:
        return _DTYPES[self.datatype]


# protocol type -> (little-endian numpy type, the InferTensorContents field carrying it, Triton DataType)
_DTYPES = {"UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}
_CONTENTS = {"UINT8": "uint_contents", "FP32": "fp32_contents"}
_CONFIG_TYPES = {"UINT8": kpb.TYPE_UINT8, "FP32": kpb.TYPE_FP32}


def composer_tensors(engine: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of the composer graph of `engine`, batch axis left out."""
    r = int(engine.resolution)
    inputs = (
        TensorSpec("image", "UINT8", (r, r, 3)),
        TensorSpec("mask", "UINT8", (r, r, 1)),
        TensorSpec("realism", "FP32", (1,)),
    )
    outputs = (
        TensorSpec("result", "UINT8", (r, r, 3)),
        TensorSpec("latent", "FP32", tuple(int(d) for d in engine.latent_shape)),
    )
    return inputs, outputs


def _invalid(message: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, message)


def _tensor_data(tensor, spec: TensorSpec, raw: bytes | None, max_batch: int) -> np.ndarray:
    """One input tensor as a numpy array [N, *spec.shape], or INVALID_ARGUMENT saying what is wrong."""
    if tensor.datatype != spec.datatype:
        raise _invalid(f"input {spec.name!r} has datatype {spec.datatype}, got {echo(tensor.datatype)}")
    shape = [int(d) for d in tensor.shape]
    if spec.name == "realism" and len(shape) == 1:
        shape = [*shape, 1]  # [N] and [N, 1] are the same values
    expected = "[N, " + ", ".join(str(d) for d in spec.shape) + "]"
    if len(shape) != len(spec.shape) + 1 or tuple(shape[1:]) != spec.shape:
        raise _invalid(f"input {spec.name!r} must have shape {expected}, got {list(tensor.shape)}")
    if not 1 <= shape[0] <= max_batch:
        raise _invalid(f"input {spec.name!r}: batch size {shape[0]} is not in [1, {max_batch}] "
                       "(max_batch_size in ModelConfig)")
    count = math.prod(shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise _invalid(f"input {spec.name!r} has both contents and raw_input_contents")
        if len(raw) != count * spec.dtype.itemsize:
            raise _invalid(f"input {spec.name!r}: {len(raw)} bytes of raw data, expected {count} "
                           f"{spec.datatype} values ({count * spec.dtype.itemsize} bytes) for shape {shape}")
        return np.frombuffer(raw, spec.dtype).reshape(shape)
    values = getattr(tensor.contents, _CONTENTS[spec.datatype])
    if len(values) != count:
        raise _invalid(f"input {spec.name!r}: {len(values)} values in contents.{_CONTENTS[spec.datatype]}, "
                       f"expected {count} for shape {shape}")
    array = np.asarray(values)
    if spec.datatype == "UINT8" and array.size and array.max() > 255:
        raise _invalid(f"input {spec.name!r}: UINT8 values must be <= 255")
    return array.astype(spec.dtype).reshape(shape)


def decode_inputs(request, inputs: tuple[TensorSpec, ...], max_batch: int) -> dict[str, np.ndarray]:
    """The request's tensors by name: image, mask and realism (zeros when absent), checked."""
    specs = {spec.name: spec for spec in inputs}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise _invalid(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input "
                       "or none")
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        spec = specs.get(tensor.name)
        if spec is None:
            raise _invalid(f"unknown input {echo(tensor.name)}; the inputs are {', '.join(specs)}")
        if tensor.name in arrays:
            raise _invalid(f"input {echo(tensor.name)} is given twice")
        arrays[tensor.name] = _tensor_data(tensor, spec, raw[index] if raw else None, max_batch)
    missing = [name for name in ("image", "mask") if name not in arrays]
    if missing:
        raise _invalid(f"missing input {', '.join(repr(name) for name in missing)}")
    count = len(arrays["image"])
    arrays.setdefault("realism", np.zeros((count, 1), np.float32))
    sizes = {name: len(array) for name, array in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise _invalid(f"the inputs' batch sizes differ: {sizes}")
    realism = arrays["realism"]
    if not np.all(np.isfinite(realism)) or np.any((realism < 0) | (realism > 1)):
        raise _invalid("input 'realism' must hold finite values in [0, 1]")
    return arrays


def wanted_outputs(request, outputs: tuple[TensorSpec, ...]) -> list[TensorSpec]:
    """The outputs asked for, in the request's order (none asked: all)."""
    specs = {spec.name: spec for spec in outputs}
    if not request.outputs:
        return list(outputs)
    wanted = []
    for requested in request.outputs:
        if requested.name not in specs:
            raise _invalid(f"unknown output {echo(requested.name)}; the outputs are {', '.join(specs)}")
        if "classification" in requested.parameters:
            raise _invalid("the classification extension is not supported")
        wanted.append(specs[requested.name])
    return wanted


class KServeServicer(kpb_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService on a ComposerServer's models, admission and batchers."""

    def __init__(self, server: Any):
        self._server = server

    # ---- health and metadata ----

    async def ServerLive(self, request, context):
        return kpb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        server = self._server
        return kpb.ServerReadyResponse(ready=server.state == "serving" and len(server.models) > 0)

    async def ModelReady(self, request, context):
        try:
            self._server.models.get(request.name, request.version)
        except ModelNotFound:
            return kpb.ModelReadyResponse(ready=False)
        return kpb.ModelReadyResponse(ready=self._server.state == "serving")

    async def ServerMetadata(self, request, context):
        return kpb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        model = await self._model(request, context)
        inputs, outputs = composer_tensors(model.engine)

        def described(spec: TensorSpec):
            return kpb.ModelMetadataResponse.TensorMetadata(
                name=spec.name, datatype=spec.datatype, shape=[-1, *spec.shape]
            )

        return kpb.ModelMetadataResponse(
            name=model.name,
            versions=[model.version],
            platform=_platform(model),
            inputs=[described(spec) for spec in inputs],
            outputs=[described(spec) for spec in outputs],
        )

    async def ModelConfig(self, request, context):
        model = await self._model(request, context)
        inputs, outputs = composer_tensors(model.engine)
        per_sample = kpb.ModelTensorReshape(shape=[])  # realism: dims [1] outside, [] inside (as exported)
        config = kpb.ModelConfig(
            name=model.name,
            platform=_platform(model),
            max_batch_size=model.batcher.max_batch,
            input=[
                kpb.ModelInput(name=spec.name, data_type=_CONFIG_TYPES[spec.datatype], dims=spec.shape,
                               reshape=per_sample if spec.name == "realism" else None,
                               optional=spec.name == "realism")
                for spec in inputs
            ],
            output=[kpb.ModelOutput(name=spec.name, data_type=_CONFIG_TYPES[spec.datatype], dims=spec.shape)
                    for spec in outputs],
            instance_group=[kpb.ModelInstanceGroup(
                count=model.batcher.threads,
                kind=kpb.ModelInstanceGroup.KIND_CPU if model.engine.device == "cpu"
                else kpb.ModelInstanceGroup.KIND_GPU,
            )],
            dynamic_batching=kpb.ModelDynamicBatching(
                max_queue_delay_microseconds=int(self._server.config.max_delay_ms * 1000)
            ),
        )
        return kpb.ModelConfigResponse(config=config)

    async def _model(self, request, context) -> Model:
        try:
            return self._server.models.get(request.name, request.version)
        except ModelNotFound as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))

    # ---- inference ----

    async def ModelInfer(self, request, context):
        try:
            return await self._infer(request, context)
        except RpcFailure as failure:
            await context.abort(failure.code, failure.details)

    async def _infer(self, request, context):
        server = self._server
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        with server.admitted(request.model_name, request.model_version) as model:
            inputs, outputs = composer_tensors(model.engine)
            wanted = wanted_outputs(request, outputs)
            with server.admission.reserve(_working_bytes(request, outputs), "this ModelInfer"):
                arrays = await loop.run_in_executor(
                    server._io, decode_inputs, request, inputs, model.batcher.max_batch
                )
                images, masks, realism = arrays["image"], arrays["mask"], arrays["realism"][:, 0]
                # One batcher request per sample; the first failure cancels the others.
                calls = [
                    asyncio.ensure_future(server.compute(model.batcher.run(image, mask, value, deadline)))
                    for image, mask, value in zip(images, masks, realism, strict=True)
                ]
                try:
                    results = await asyncio.gather(*calls)
                finally:
                    for call in calls:
                        call.cancel()
                produced = {"result": [r[0] for r in results], "latent": [r[1] for r in results]}
                raw = await loop.run_in_executor(
                    server._io, lambda: [np.stack(produced[s.name]).astype(s.dtype).tobytes() for s in wanted]
                )
        response = kpb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for spec in wanted:
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=[len(images), *spec.shape])
        response.raw_output_contents.extend(raw)
        return response


def _working_bytes(request, outputs: tuple[TensorSpec, ...]) -> int:
    """Admission's estimate of a ModelInfer's peak memory: the request twice (grpc's buffer and the parsed
    message) and the outputs twice (the engine's arrays and the response), plus a fixed overhead."""
    samples = max((int(t.shape[0]) for t in request.inputs if len(t.shape)), default=1)
    per_sample = sum(math.prod(spec.shape) * spec.dtype.itemsize for spec in outputs)
    return 2 * request.ByteSize() + 2 * samples * per_sample + BYTES_PER_REQUEST


def _platform(model: Model) -> str:
    return f"latcomp_{model.engine.backend}"


def add_to_server(server: Any, grpc_server: grpc.aio.Server) -> None:
    """Registers the servicer for `server` (a ComposerServer) on its grpc server."""
    kpb_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(server), grpc_server)


SERVICE_NAME = kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
