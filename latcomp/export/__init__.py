"""Export (needs torch and onnx): fuse a generator and a regressor, write ONNX graphs (fp32, fp16) with shared
weights, check their parity against the torch modules and write the bundle (see docs/BUNDLE.md).

The package itself imports nothing heavy, so command registration (`latcomp.export.cli`) stays instant;
`export_bundle`, `write_manifest` and `ParityError` are loaded on first access.
"""

from ..lazy import lazy_getattr

_EXPORTS = {"export_bundle": "bundle", "write_manifest": "bundle", "ParityError": "parity"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
