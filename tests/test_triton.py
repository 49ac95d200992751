"""The Triton model repository: layout, config.pbtxt parsed as Triton's own ModelConfig (the schema
tritonclient ships, in its own environment: tests/tritonclient_env.py) and checked against the ONNX graph,
and the copied ONNX model, which onnxruntime loads with its external data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient_env

from latcomp.export import tensorrt_build as tb
from latcomp.export.triton import preferred_batch_sizes, write_triton_repository

# ONNX element types -> Triton's DataType names, for the ones a composer graph carries
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 10: "TYPE_FP16"}


def parse_configs(*paths: Path) -> list[dict]:
    """Each config.pbtxt parsed by protobuf's text_format into tritonclient's model_config_pb2.ModelConfig,
    as a dict (int64 fields as ints)."""
    parsed = tritonclient_env.run_tool("pbtxt", *(str(path) for path in paths))
    return [_ints(parsed[str(path)]) for path in paths]


def _ints(value):
    """MessageToDict writes int64 as strings; dims and shapes read better as ints."""
    if isinstance(value, dict):
        return {key: _ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_ints(item) for item in value]
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


def graph_tensors(onnx_path: Path) -> tuple[dict, dict]:
    """{name: (Triton type, dims without the batch axis)} of the graph's inputs and outputs."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def described(values) -> dict:
        tensors = {}
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            assert dims[0] == -1, f"{value.name}: the batch axis must be dynamic"
            tensors[value.name] = (ONNX_TO_TRITON[tensor.elem_type], dims[1:])
        return tensors

    return described(graph.input), described(graph.output)


def config_tensors(tensors: list[dict]) -> dict:
    """{name: (type, dims as the model sees them: the reshape when there is one)}."""
    return {t["name"]: (t["data_type"], t["reshape"].get("shape", []) if "reshape" in t else t["dims"])
            for t in tensors}


def test_preferred_batch_sizes():
    assert preferred_batch_sizes(16) == [4, 8, 16]
    assert preferred_batch_sizes(8) == [4, 8]
    assert preferred_batch_sizes(6) == [4, 6]
    assert preferred_batch_sizes(2) == [2]
    assert preferred_batch_sizes(1) == [1]


# -- a repository for a small bundle --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from bundle_fixtures import make_small_bundle

    return Path(make_small_bundle(tmp_path_factory.mktemp("triton") / "bundle", arch="stylegan2"))


def test_gpu_repository_layout_and_config(bundle, tmp_path):
    manifest = json.loads((bundle / "latcomp.json").read_text())
    r, latent_shape = manifest["resolution"], manifest["latent_shape"]
    model_dir = write_triton_repository(bundle, tmp_path / "repo", max_batch=8, instances=2, kind="gpu")
    assert model_dir == tmp_path / "repo" / "composer"
    assert (model_dir / "config.pbtxt").is_file() and (model_dir / "1" / "model.onnx").is_file()
    assert (model_dir / "1" / "weights.bin").is_file()  # the external data sits beside model.onnx

    [config] = parse_configs(model_dir / "config.pbtxt")
    assert config["name"] == "composer"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 8
    inputs = {t["name"]: t for t in config["input"]}
    outputs = {t["name"]: t for t in config["output"]}
    assert inputs["image"]["data_type"] == "TYPE_UINT8" and inputs["image"]["dims"] == [r, r, 3]
    assert inputs["mask"]["data_type"] == "TYPE_UINT8" and inputs["mask"]["dims"] == [r, r, 1]
    assert inputs["realism"]["data_type"] == "TYPE_FP32" and inputs["realism"]["dims"] == [1]
    assert inputs["realism"]["reshape"] == {}  # a [N] input: dims [1] reshaped to [] (an empty shape)
    assert outputs["result"]["data_type"] == "TYPE_UINT8" and outputs["result"]["dims"] == [r, r, 3]
    assert outputs["latent"]["data_type"] == "TYPE_FP32" and outputs["latent"]["dims"] == latent_shape

    batching = config["dynamic_batching"]
    assert batching["preferred_batch_size"] == [4, 8]
    assert batching["max_queue_delay_microseconds"] == 500
    [group] = config["instance_group"]
    assert group["count"] == 2 and group["kind"] == "KIND_GPU"
    [accelerator] = config["optimization"]["execution_accelerators"]["gpu_execution_accelerator"]
    assert accelerator["name"] == "tensorrt"
    parameters = accelerator["parameters"]
    assert parameters["precision_mode"] == "FP16" and int(parameters["max_workspace_size_bytes"]) > 0


def test_every_exported_config_parses_as_tritons_and_matches_the_graph(bundle, tmp_path):
    """Both kinds and both layouts of the repository: Triton's ModelConfig, tensors as in the ONNX graph."""
    model_dirs = [
        write_triton_repository(bundle, tmp_path / "gpu", max_batch=8, kind="gpu"),
        write_triton_repository(bundle, tmp_path / "cpu", max_batch=3, instances=2, kind="cpu"),
    ]
    graph_inputs, graph_outputs = graph_tensors(bundle / "composer.onnx")
    configs = parse_configs(*(model_dir / "config.pbtxt" for model_dir in model_dirs))
    for model_dir, config in zip(model_dirs, configs, strict=True):
        assert config["name"] == model_dir.name  # Triton requires the directory's name
        assert config_tensors(config["input"]) == graph_inputs
        assert config_tensors(config["output"]) == graph_outputs
        assert (model_dir / "1" / "model.onnx").is_file()


def test_cpu_repository_has_no_gpu_accelerator(bundle, tmp_path):
    model_dir = write_triton_repository(bundle, tmp_path / "repo", max_batch=4, kind="cpu")
    [config] = parse_configs(model_dir / "config.pbtxt")
    assert [group["kind"] for group in config["instance_group"]] == ["KIND_CPU"]
    assert "optimization" not in config
    assert config["dynamic_batching"]["preferred_batch_size"] == [4]


def test_copied_model_loads_and_matches_the_bundle_graph(bundle, tmp_path):
    import onnxruntime as ort

    model_dir = write_triton_repository(bundle, tmp_path / "elsewhere" / "repo", max_batch=4)
    manifest = json.loads((bundle / "latcomp.json").read_text())
    r = manifest["resolution"]
    rng = np.random.default_rng(0)
    feeds = {
        "image": rng.integers(0, 256, (3, r, r, 3), dtype=np.uint8),
        "mask": np.where(rng.random((3, r, r, 1)) < 0.5, 255, 0).astype(np.uint8),
        "realism": np.array([0.0, 0.5, 1.0], np.float32),
    }
    copied = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(str(bundle / "composer.onnx"), providers=["CPUExecutionProvider"])
    for got, expected in zip(copied.run(None, feeds), original.run(None, feeds), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_rewriting_replaces_only_the_composer_model(bundle, tmp_path):
    repo = tmp_path / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    write_triton_repository(bundle, repo, max_batch=4)
    (repo / "composer" / "1" / "stale.txt").write_text("old")
    write_triton_repository(bundle, repo, max_batch=2)
    assert not (repo / "composer" / "1" / "stale.txt").exists()
    assert (repo / "other_model" / "1").is_dir()


def test_plan_repository(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with pytest.raises(ValueError, match="latcomp build-engine"):
        write_triton_repository(copy, tmp_path / "repo", use_plan=True)
    with pytest.raises(ValueError, match="GPU"):
        write_triton_repository(copy, tmp_path / "repo", use_plan=True, kind="cpu")
    # a stand-in plan, recorded the way build-engine records one
    relative = "plans/composer_sm90_trt10.13.0.plan"
    (copy / "plans").mkdir()
    (copy / relative).write_bytes(b"not really a plan")
    entry = {
        "file": relative,
        "graph": "composer",
        "compute_capability": "9.0",
        "tensorrt_version": "10.13.0.35",
        "max_batch": 8,
    }
    tb.write_manifest(copy, tb.record_plan(tb.read_manifest(copy), copy, entry))

    model_dir = write_triton_repository(copy, tmp_path / "repo", max_batch=8, use_plan=True)
    assert (model_dir / "1" / "model.plan").read_bytes() == b"not really a plan"
    assert not (model_dir / "1" / "model.onnx").exists()
    [config] = parse_configs(model_dir / "config.pbtxt")
    assert config["platform"] == "tensorrt_plan" and "optimization" not in config
    with pytest.raises(ValueError, match="--max-batch 16"):
        write_triton_repository(copy, tmp_path / "repo", max_batch=16, use_plan=True)


def test_bad_arguments(bundle, tmp_path):
    with pytest.raises(ValueError):
        write_triton_repository(bundle, tmp_path / "r", kind="tpu")
    with pytest.raises(ValueError):
        write_triton_repository(bundle, tmp_path / "r", max_batch=0)
