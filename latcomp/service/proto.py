"""The wire types of `latcomp.v1.ComposerService` (`pb`) and its gRPC glue, as protoc generated them.

The generated modules live in latcomp/v1/ (committed; regenerate with `bash scripts/gen_protos.sh` after
editing protos/latcomp/v1/composer.proto). This module only gives them the short names the service uses.
"""

from __future__ import annotations

from ..v1 import composer_pb2 as pb
from ..v1 import composer_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ComposerService"].full_name  # "latcomp.v1.ComposerService"
METHOD_NAMES = tuple(method.name for method in pb.DESCRIPTOR.services_by_name["ComposerService"].methods)

ComposerStub = pb_grpc.ComposerServiceStub  # one multi-callable per method, for grpc and grpc.aio channels
ComposerServicer = pb_grpc.ComposerServiceServicer
add_servicer_to_server = pb_grpc.add_ComposerServiceServicer_to_server

__all__ = ["METHOD_NAMES", "SERVICE_NAME", "ComposerServicer", "ComposerStub", "add_servicer_to_server",
           "pb", "pb_grpc"]
