"""Bearer-token auth and TLS of the gRPC service, against real servers on 127.0.0.1 (small bundle)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from reliability.support import self_signed

from latcomp.service import proto
from latcomp.service.cli import server_info
from latcomp.service.client import Client, ServiceError, inpaint_request
from latcomp.service.proto import pb
from latcomp.service.server import ServerConfig, ServerThread

TOKEN = "s3cret-token-for-the-tests"


@pytest.fixture(scope="module")
def engine(small_bundle):
    from latcomp.runtime import open_bundle

    with open_bundle(small_bundle, backend="ort") as engine:
        yield engine


def _every_rpc(client: Client, size: int) -> dict:
    """Calls each ComposerService method once; returns {method: status code name}."""
    image = np.zeros((size, size, 3), np.uint8)
    calls = {
        "Composite": lambda: client.composite([image]),
        "Inpaint": lambda: client.inpaint(image),
        "Sample": lambda: client.sample(1),
        "GetModelInfo": lambda: client.model_info(),
        "EditStream": lambda: list(client.edit_stream([inpaint_request(image)])),
    }
    assert set(calls) == set(proto.METHOD_NAMES)
    codes = {}
    for method, call in calls.items():
        try:
            call()
            codes[method] = "OK"
        except ServiceError as error:
            codes[method] = error.code.name
    return codes


def test_token_auth_on_every_rpc(engine):
    config = ServerConfig(host="127.0.0.1", port=0, auth_token=TOKEN)
    size = engine.resolution
    with ServerThread(engine, config) as server:
        for token in (None, "wrong", TOKEN + "x", TOKEN[:-1]):
            with Client(server.target, token=token) as client:
                codes = _every_rpc(client, size)
                assert set(codes.values()) == {"UNAUTHENTICATED"}, (token, codes)
                assert client.health() == "SERVING"  # probes need no token
        with Client(server.target, token=TOKEN) as client:
            assert set(_every_rpc(client, size).values()) == {"OK"}
        # Raw metadata: the scheme matters, not just the secret.
        with grpc.insecure_channel(server.target) as channel:
            stub = proto.ComposerStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=[("authorization", TOKEN)], timeout=10)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            info = stub.GetModelInfo(
                pb.GetModelInfoRequest(), metadata=[("authorization", f"Bearer {TOKEN}")]
            )
            assert info.name == engine.name
        with pytest.raises(ServiceError) as error:
            server_info(server.target, token="wrong")
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert server_info(server.target, token=TOKEN)["health"] == "SERVING"


def test_tls_with_a_self_signed_certificate(engine, tmp_path):
    cert, key = self_signed(tmp_path, "server")
    other_ca, _ = self_signed(tmp_path, "other")
    config = ServerConfig(host="127.0.0.1", port=0, tls_cert=str(cert), tls_key=str(key), auth_token=TOKEN)
    with ServerThread(engine, config) as server:
        target = f"localhost:{server.port}"
        with Client(target, token=TOKEN, tls_ca=cert) as client:
            assert set(_every_rpc(client, engine.resolution).values()) == {"OK"}
            assert client.health() == "SERVING"
        with Client(target, token=None, tls_ca=cert) as client:  # TLS is no substitute for the token
            assert client.health() == "SERVING"
            with pytest.raises(ServiceError) as error:
                client.sample(1)
            assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
        for wrong in ({"tls_ca": None}, {"tls_ca": other_ca}):  # plaintext, or a CA that did not sign it
            with Client(target, token=TOKEN, timeout=5, **wrong) as client:
                with pytest.raises(ServiceError) as error:
                    client.sample(1)
                assert error.value.code == grpc.StatusCode.UNAVAILABLE
        info = server_info(target, token=TOKEN, tls_ca=str(cert))
        assert info["name"] == engine.name and info["resolution"] == engine.resolution


def test_tls_needs_both_files(engine, tmp_path):
    cert, _ = self_signed(tmp_path, "server")
    with pytest.raises(ValueError, match="certificate and a key"):
        ServerThread(engine, ServerConfig(host="127.0.0.1", port=0, tls_cert=str(cert)))
