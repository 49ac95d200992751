"""The wire types (`pb`, generated from protos/latcomp/v1/composer.proto) and the gRPC glue for them.

The stubs are generated at build/install time (setup.py). In a source checkout whose stubs are missing or
older than the .proto (e.g. an editable install after editing the .proto), they are regenerated here on
first import when grpcio-tools is importable. The service glue (server handlers, client stub) is built
from the service descriptor, so no `_pb2_grpc` module is needed (see _stubgen.py for why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory

from . import _stubgen


def _ensure_stubs() -> None:
    root = _stubgen.source_root()
    current = _stubgen.stub_digest()
    if current is not None and (root is None or current == _stubgen.proto_digest(root)):
        return
    if root is None:
        raise ImportError(
            f"latcomp's protobuf stubs are missing from {_stubgen.STUB_DIR}; reinstall latcomp "
            "(pip install --force-reinstall latcomp, or pip install -e . in a checkout) to generate them"
        )
    try:
        import grpc_tools  # noqa: F401
    except ImportError as error:
        state = "missing" if current is None else "older than protos/"
        raise ImportError(
            f"latcomp's protobuf stubs in {_stubgen.STUB_DIR} are {state} and grpcio-tools is not installed "
            "to regenerate them: pip install grpcio-tools, or reinstall with pip install -e ."
        ) from error
    _stubgen.generate(root)


_ensure_stubs()

try:
    from ._proto import composer_pb2 as pb  # noqa: E402
except Exception as error:  # protobuf's VersionError: stubs made by a newer protoc than the runtime
    raise ImportError(
        f"cannot import latcomp's generated protobuf stubs ({error}); upgrade protobuf or reinstall latcomp"
    ) from error

SERVICE = pb.DESCRIPTOR.services_by_name["ComposerService"]
SERVICE_NAME = SERVICE.full_name  # "latcomp.v1.ComposerService"
METHOD_NAMES = tuple(method.name for method in SERVICE.methods)


def _classes(method) -> tuple[type, type]:
    return (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )


_HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def service_handler(servicer: Any) -> grpc.GenericRpcHandler:
    """A generic handler routing every ComposerService method to servicer.<MethodName>."""
    handlers = {}
    for method in SERVICE.methods:
        request, response = _classes(method)
        factory = _HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


class ComposerStub:
    """Client stub: one multi-callable per method, for a grpc.Channel or a grpc.aio.Channel alike."""

    Composite: Callable
    Inpaint: Callable
    Sample: Callable
    EditStream: Callable
    GetModelInfo: Callable

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel):
        kinds = {
            (False, False): channel.unary_unary,
            (False, True): channel.unary_stream,
            (True, False): channel.stream_unary,
            (True, True): channel.stream_stream,
        }
        for method in SERVICE.methods:
            request, response = _classes(method)
            callable_ = kinds[(method.client_streaming, method.server_streaming)](
                f"/{SERVICE_NAME}/{method.name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
            setattr(self, method.name, callable_)
