"""The gRPC front door: `latcomp.v1.ComposerService` server, clients and their commands (no torch).

`Client`/`AsyncClient` (client.py) talk to a server; `serve` (server.py) runs one on a bundle. Importing this
package is cheap: the submodules load grpc and the generated stubs when first used.
"""

from __future__ import annotations

_EXPORTS = {
    "Client": "client",
    "AsyncClient": "client",
    "EditResult": "client",
    "ServiceError": "client",
    "ServerConfig": "server",
    "serve": "server",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
