"""Lazy package exports (PEP 562): a package names what it offers without importing the heavy modules
behind the names, so that importing it (e.g. to register its commands) stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package`: name -> the attribute of submodule `exports[name]`
    (relative to the package), imported on first access."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{exports[name]}", package), name)

    return __getattr__
