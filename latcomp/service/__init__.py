"""The gRPC front door: `latcomp.v1.ComposerService` server, clients and their commands (no torch).

`Client`/`AsyncClient` (client.py) talk to a server; `serve` (server.py) runs one on a bundle. Importing this
package is cheap: the submodules load grpc and the generated stubs when first used.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_EXPORTS = {
    "Client": "client",
    "AsyncClient": "client",
    "EditResult": "client",
    "ServiceError": "client",
    "ServerConfig": "server",
    "serve": "server",
}
__getattr__ = lazy_getattr(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
