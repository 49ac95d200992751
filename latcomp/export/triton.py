"""A Triton Inference Server model repository for a bundle's composer graph.

    write_triton_repository(bundle_dir, out_dir, max_batch=16, instances=1, kind="gpu", use_plan=False)

writes

    out_dir/composer/config.pbtxt
    out_dir/composer/1/model.onnx  (+ its external-data file, copied beside it)   or   model.plan

The ONNX model is the fp32 composer: on a GPU instance Triton's onnxruntime backend runs it through the
TensorRT execution provider in FP16 (optimization.execution_accelerators), on a CPU instance through the
CPU provider. With use_plan=True the repository serves the bundle's native TensorRT plan instead
(platform tensorrt_plan); a plan only loads under the TensorRT release and on the GPU architecture that
built it, so the Triton container must ship that TensorRT release.

Tensor names, types and shapes come from the ONNX graph itself. Triton's dims leave out the batch axis;
`realism`, a plain [N] vector, is declared as dims [1] reshaped to [] (Triton's convention for an input
that is only the batch axis).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..runtime.bundle import BundleError, read_manifest

MODEL_NAME = "composer"

# ONNX TensorProto element types -> Triton data types (only those a composer graph can carry)
_TRITON_TYPES = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
}


def _tensor_specs(onnx_path: Path) -> tuple[list[dict], list[dict], list[str]]:
    """(inputs, outputs, external-data files) of an ONNX graph, without loading its weights."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)

    def spec(value) -> dict:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _TRITON_TYPES:
            raise ValueError(
                f"{onnx_path.name}: tensor {value.name} has ONNX type {tensor.elem_type}, "
                "which this exporter does not map to Triton"
            )
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if not dims:
            raise ValueError(f"{onnx_path.name}: tensor {value.name} has no batch axis")
        return {"name": value.name, "data_type": _TRITON_TYPES[tensor.elem_type], "dims": dims[1:]}

    initializer_names = {init.name for init in model.graph.initializer}
    inputs = [spec(v) for v in model.graph.input if v.name not in initializer_names]
    outputs = [spec(v) for v in model.graph.output]
    external = sorted(
        {
            entry.value
            for init in model.graph.initializer
            for entry in init.external_data
            if entry.key == "location"
        }
    )
    return inputs, outputs, external


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """4, 8, ... up to max_batch, and max_batch itself: the sizes worth waiting for."""
    sizes, size = [], 4
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch] if max_batch > 1 else [1]


def _tensor_block(spec: dict) -> str:
    dims = spec["dims"]
    lines = [f'    name: "{spec["name"]}"', f"    data_type: {spec['data_type']}"]
    if dims:
        if any(size < 0 for size in dims):
            raise ValueError(f"tensor {spec['name']} has a dynamic axis besides the batch: {dims}")
        lines.append(f"    dims: [ {', '.join(str(size) for size in dims)} ]")
    else:  # a [N] tensor: one value per sample
        lines.append("    dims: [ 1 ]")
        lines.append("    reshape: { shape: [ ] }")
    return "  {\n" + "\n".join(lines) + "\n  }"


def config_pbtxt(
    inputs: list[dict],
    outputs: list[dict],
    max_batch: int,
    instances: int,
    kind: str,
    platform: str,
    max_queue_delay_us: int = 500,
    workspace_bytes: int = 2 << 30,
) -> str:
    """The model configuration (protobuf text format of Triton's ModelConfig)."""
    sections = [
        f'name: "{MODEL_NAME}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch}",
        "input [\n" + ",\n".join(_tensor_block(s) for s in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(s) for s in outputs) + "\n]",
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(s) for s in preferred_batch_sizes(max_batch))} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}",
        "instance_group [\n  {\n"
        f"    count: {instances}\n    kind: {'KIND_GPU' if kind == 'gpu' else 'KIND_CPU'}\n"
        "  }\n]",
    ]
    if platform == "onnxruntime_onnx" and kind == "gpu":
        # onnxruntime's TensorRT execution provider builds FP16 engines from the fp32 graph on the server
        sections.append(
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n      {\n"
            '        name: "tensorrt"\n'
            '        parameters { key: "precision_mode" value: "FP16" }\n'
            f'        parameters {{ key: "max_workspace_size_bytes" value: "{workspace_bytes}" }}\n'
            "      }\n    ]\n  }\n}"
        )
    return "\n".join(sections) + "\n"


def _pick_plan(manifest: dict, bundle_dir: Path) -> dict:
    plans = [entry for entry in manifest.get("plans") or [] if entry.get("graph", MODEL_NAME) == MODEL_NAME]
    if not plans:
        raise ValueError(
            f"bundle {bundle_dir} has no TensorRT plan: build one with `latcomp build-engine "
            f"{bundle_dir}` on a GPU like the Triton server's, or export the ONNX model instead"
        )
    try:  # prefer the plan built for this machine when TensorRT can tell
        from ..runtime.trt_engine import find_plan, tensorrt_available

        if tensorrt_available():
            entry = find_plan(manifest, bundle_dir)
            if entry is not None:
                return entry
    except Exception:  # no usable TensorRT here: fall back to the newest plan
        pass
    return plans[-1]


def write_triton_repository(
    bundle_dir,
    out_dir,
    max_batch: int = 16,
    instances: int = 1,
    kind: str = "gpu",
    use_plan: bool = False,
    max_queue_delay_us: int = 500,
) -> Path:
    """Writes out_dir/composer/{config.pbtxt, 1/model.onnx (+ external data) | 1/model.plan}; returns the
    model directory. An existing out_dir/composer is replaced; other models in out_dir are left alone."""
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    if kind not in ("gpu", "cpu"):
        raise ValueError(f"kind must be 'gpu' or 'cpu', not {kind!r}")
    if max_batch < 1 or instances < 1:
        raise ValueError("max_batch and instances must be at least 1")
    if use_plan and kind != "gpu":
        raise ValueError("a TensorRT plan runs on GPU instances only (kind='gpu')")
    manifest = read_manifest(bundle_dir)  # refuses a bundle whose files do not match their checksums
    graph = manifest["graphs"].get(MODEL_NAME)
    if graph is None:
        raise BundleError(f"{bundle_dir}: the manifest lists no {MODEL_NAME} graph")
    onnx_path = bundle_dir / graph["file"]
    inputs, outputs, external = _tensor_specs(onnx_path)

    model_dir = out_dir / MODEL_NAME
    if model_dir.exists():
        shutil.rmtree(model_dir)
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    if use_plan:
        entry = _pick_plan(manifest, bundle_dir)
        plan_max = int(entry.get("max_batch", max_batch))
        if max_batch > plan_max:
            raise ValueError(
                f"max_batch {max_batch} exceeds the plan's profile ({plan_max}); rebuild the plan "
                f"with `latcomp build-engine {bundle_dir} --max-batch {max_batch}`"
            )
        shutil.copyfile(bundle_dir / entry["file"], version_dir / "model.plan")
        platform = "tensorrt_plan"
        source = {"plan": entry}
    else:
        shutil.copyfile(onnx_path, version_dir / "model.onnx")
        for location in external:  # onnxruntime resolves external data relative to the model file
            target = version_dir / location
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(onnx_path.parent / location, target)
        platform = "onnxruntime_onnx"
        source = {"graph": graph["file"], "external_data": external}
    (model_dir / "config.pbtxt").write_text(
        config_pbtxt(inputs, outputs, max_batch, instances, kind, platform, max_queue_delay_us)
    )
    provenance = {"bundle": manifest.get("name"), "version": manifest.get("version"), **source}
    (model_dir / "latcomp-source.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return model_dir
