"""The committed protobuf/gRPC stubs (latcomp/**/*_pb2*.py*) against protos/ and the pinned generator.

The drift test regenerates every stub into a temporary directory with the installed grpcio-tools. When that
is the pinned GRPCIO_TOOLS the files must be byte-identical; with another version the text differs in its
version stamps and code style, so the test compares what the stubs mean instead: the embedded descriptors,
the service glue of every method and the .pyi signatures.
"""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from latcomp.service import _stubgen

REPO = Path(__file__).resolve().parents[1]
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


def _committed() -> set[str]:
    package = REPO / "latcomp"
    return {path.relative_to(REPO).as_posix() for pattern in GENERATED for path in package.rglob(pattern)}


def _serialized_descriptor(path: Path) -> bytes:
    """The FileDescriptorProto bytes a _pb2 module adds to the pool (the AddSerializedFile argument)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return node.args[0].value
    raise AssertionError(f"{path}: no AddSerializedFile call")


class _RecordingChannel:
    """Stands in for grpc.Channel: records what each multi-callable of a generated stub was built with."""

    def __init__(self):
        self.calls = {}

    def __getattr__(self, kind):
        def multi_callable(path, request_serializer, response_deserializer, **_):
            self.calls[path] = (kind, request_serializer, response_deserializer)

        return multi_callable


class _RecordingServer:
    def __init__(self):
        self.handlers = {}

    def add_generic_rpc_handlers(self, handlers):
        self.generic = handlers

    def add_registered_method_handlers(self, service, handlers):
        self.handlers[service] = handlers


def _check_glue(module_name: str) -> None:
    """The generated _pb2_grpc module serves and calls every method of every service in its _pb2, with the
    right kinds and message classes."""
    pb2 = importlib.import_module(module_name + "_pb2")
    pb2_grpc = importlib.import_module(module_name + "_pb2_grpc")
    for service in pb2.DESCRIPTOR.services_by_name.values():
        channel, server = _RecordingChannel(), _RecordingServer()
        getattr(pb2_grpc, service.name + "Stub")(channel)
        servicer = getattr(pb2_grpc, service.name + "Servicer")()
        getattr(pb2_grpc, f"add_{service.name}Servicer_to_server")(servicer, server)
        handlers = server.handlers[service.full_name]
        assert set(handlers) == {method.name for method in service.methods}
        assert set(channel.calls) == {f"/{service.full_name}/{method.name}" for method in service.methods}
        for method in service.methods:
            request = getattr(pb2, method.input_type.name)
            response = getattr(pb2, method.output_type.name)
            streams = ("stream" if method.client_streaming else "unary",
                       "stream" if method.server_streaming else "unary")
            kind, serializer, deserializer = channel.calls[f"/{service.full_name}/{method.name}"]
            assert kind == "_".join(streams)
            assert (serializer, deserializer) == (request.SerializeToString, response.FromString)
            handler = handlers[method.name]
            assert handler.request_streaming == method.client_streaming
            assert handler.response_streaming == method.server_streaming
            assert handler.request_deserializer == request.FromString
            assert handler.response_serializer == response.SerializeToString


def _pyi_signatures(path: Path) -> dict[str, list[str]]:
    """class name -> the keyword names of its __init__, for every class of a .pyi (nested ones dotted)."""
    signatures = {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                name = prefix + node.name
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        signatures[name] = [arg.arg for arg in item.args.args[1:]]
                visit(node.body, name + ".")

    visit(ast.parse(path.read_text()).body, "")
    return signatures


def test_committed_stubs_match_protos(tmp_path):
    pytest.importorskip("grpc_tools")
    files = _stubgen.generate(tmp_path)
    modules = {name for name in files if not name.endswith("__init__.py")}
    assert _committed() == modules, "stale or missing stubs: run bash scripts/gen_protos.sh"
    for name in files:
        assert (REPO / name).is_file(), f"{name} missing: run bash scripts/gen_protos.sh"
    if _stubgen.installed_tools_version() == _stubgen.GRPCIO_TOOLS:
        for name in files:
            fresh = (tmp_path / name).read_bytes()
            assert (REPO / name).read_bytes() == fresh, f"{name} drifted from protos/"
        return
    for name in files:
        committed, fresh = REPO / name, tmp_path / name
        if name.endswith("_pb2.py"):
            assert _serialized_descriptor(committed) == _serialized_descriptor(fresh), f"{name} drifted"
        elif name.endswith("_pb2.pyi"):
            assert _pyi_signatures(committed) == _pyi_signatures(fresh), f"{name} drifted"
        elif name.endswith("_pb2_grpc.py"):
            _check_glue(name[: -len("_pb2_grpc.py")].replace("/", "."))
        else:
            assert committed.read_text() == fresh.read_text()


def test_stubs_carry_the_pinned_generator_versions():
    """Generated code refuses an older runtime than its generator: the pinned one keeps our floors true."""
    tools = _stubgen.GRPCIO_TOOLS
    for name in sorted(_committed()):
        text = (REPO / name).read_text()
        if name.endswith("_pb2_grpc.py"):
            assert f"GRPC_GENERATED_VERSION = '{tools}'" in text, f"{name} not made by grpcio-tools {tools}"
        elif name.endswith("_pb2.py"):
            assert "# Protobuf Python Version: 5.29.0\n" in text, f"{name} not made by grpcio-tools {tools}"
    floors = (REPO / "pyproject.toml").read_text()
    assert f'"grpcio>={tools.rsplit(".", 1)[0]}"' in floors and '"protobuf>=5.29"' in floors


def test_protos_outside_the_package_are_refused(tmp_path):
    (tmp_path / "inference").mkdir()
    (tmp_path / "inference" / "x.proto").write_text('syntax = "proto3";\n')
    with pytest.raises(ValueError, match="protos/latcomp/"):
        _stubgen.proto_files(tmp_path)


def test_stubgen_refuses_another_grpcio_tools(monkeypatch, capsys):
    monkeypatch.setattr(_stubgen, "installed_tools_version", lambda: "0.0.1")
    assert _stubgen.main(["--out", "/nonexistent"]) == 2
    assert f"grpcio-tools=={_stubgen.GRPCIO_TOOLS}" in capsys.readouterr().err


def test_wheel_ships_the_stubs(tmp_path):
    """What `pip install .` builds: the committed stubs, .pyi included, with no build step of ours."""
    copy = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    copy.mkdir()
    for name in ("pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, copy / name)
    shutil.copytree(REPO / "protos", copy / "protos", ignore=ignore)
    shutil.copytree(REPO / "latcomp", copy / "latcomp", ignore=ignore)
    script = "import sys; from setuptools import build_meta; build_meta.build_wheel(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "dist")], cwd=copy,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("latcomp-*.whl"))).namelist())
    assert _committed() <= names
