"""Running bundles without torch: `open_bundle(path) -> Engine` with `composite` and `inpaint` (real images
of any size, through `edits`, exactly as the gRPC server does), `run` (batches at the model's resolution),
`generate` and `sample`.

Nothing here imports torch at module level; backends (onnxruntime, TensorRT, torch) are imported when an
engine that needs them is opened.
"""

from .bundle import Bundle, BundleError, read_bundle, read_manifest
from .engine import Engine
from .select import open_bundle

__all__ = ["Bundle", "BundleError", "Engine", "open_bundle", "read_bundle", "read_manifest"]
