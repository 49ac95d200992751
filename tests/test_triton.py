"""The Triton model repository: layout, config.pbtxt (parsed by a small protobuf-text reader, so no
tritonclient is needed) and the copied ONNX model, which onnxruntime loads with its external data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from latcomp.export import tensorrt_build as tb
from latcomp.export.triton import preferred_batch_sizes, write_triton_repository

# -- a minimal reader of protobuf text format: {field: [values]}, nested messages as dicts ------------

_TOKEN = re.compile(r'\s*(?:#[^\n]*|("(?:[^"\\]|\\.)*")|([A-Za-z_][\w.]*)|(-?\d+(?:\.\d+)?)|([{}\[\]:,]))')


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            if text[position:].strip():
                raise ValueError(f"unexpected text at {position}: {text[position : position + 20]!r}")
            break
        position = match.end()
        string, name, number, symbol = match.groups()
        if string is not None:
            tokens.append(("str", string[1:-1]))
        elif name is not None:
            tokens.append(("name", name))
        elif number is not None:
            tokens.append(("num", number))
        elif symbol is not None:
            tokens.append(("sym", symbol))
    return tokens


def parse_pbtxt(text: str) -> dict:
    tokens = _tokens(text)
    position = 0

    def peek():
        return tokens[position] if position < len(tokens) else ("end", "")

    def take(kind=None, value=None):
        nonlocal position
        token = peek()
        if (kind and token[0] != kind) or (value and token[1] != value):
            raise ValueError(f"expected {value or kind}, got {token}")
        position += 1
        return token

    def scalar():
        kind, value = take()
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind in ("str", "name"):
            return value
        raise ValueError(f"unexpected {value!r}")

    def value():
        if peek() == ("sym", "{"):
            take()
            result = message()
            take("sym", "}")
            return result
        return scalar()

    def message() -> dict:
        fields: dict[str, list] = {}
        while peek()[0] == "name":
            name = take()[1]
            if peek() == ("sym", ":"):
                take()
            if peek() == ("sym", "["):
                take()
                items = []
                while peek() != ("sym", "]"):
                    items.append(value())
                    if peek() == ("sym", ","):
                        take()
                take("sym", "]")
                fields.setdefault(name, []).extend(items)
            else:
                fields.setdefault(name, []).append(value())
        return fields

    result = message()
    if peek()[0] != "end":
        raise ValueError(f"trailing tokens from {peek()}")
    return result


def one(message: dict, field: str):
    values = message[field]
    assert len(values) == 1, f"{field} appears {len(values)} times"
    return values[0]


def test_pbtxt_reader_understands_the_constructs_used():
    parsed = parse_pbtxt('a: "x" b: 3 c [ { d: [ 1, 2 ] e { f: [ ] } }, { d: [ ] } ] g { h: TYPE_FP32 }')
    assert one(parsed, "a") == "x" and one(parsed, "b") == 3
    assert [item["d"] for item in parsed["c"]] == [[1, 2], []]
    assert parsed["c"][0]["e"] == [{"f": []}]
    assert one(one(parsed, "g"), "h") == "TYPE_FP32"
    with pytest.raises(ValueError):
        parse_pbtxt("a: { b: 1")


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


def tensors(config: dict, section: str) -> dict[str, dict]:
    return {one(spec, "name"): spec for spec in config[section]}


def test_gpu_repository_layout_and_config(bundle, tmp_path):
    manifest = json.loads((bundle / "latcomp.json").read_text())
    r, latent_shape = manifest["resolution"], manifest["latent_shape"]
    model_dir = write_triton_repository(bundle, tmp_path / "repo", max_batch=8, instances=2, kind="gpu")
    assert model_dir == tmp_path / "repo" / "composer"
    assert (model_dir / "config.pbtxt").is_file() and (model_dir / "1" / "model.onnx").is_file()
    assert (model_dir / "1" / "weights.bin").is_file()  # the external data sits beside model.onnx

    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert one(config, "name") == "composer"
    assert one(config, "platform") == "onnxruntime_onnx"
    assert one(config, "max_batch_size") == 8
    inputs, outputs = tensors(config, "input"), tensors(config, "output")
    assert set(inputs) == {"image", "mask", "realism"} and set(outputs) == {"result", "latent"}
    assert one(inputs["image"], "data_type") == "TYPE_UINT8" and inputs["image"]["dims"] == [r, r, 3]
    assert one(inputs["mask"], "data_type") == "TYPE_UINT8" and inputs["mask"]["dims"] == [r, r, 1]
    assert one(inputs["realism"], "data_type") == "TYPE_FP32" and inputs["realism"]["dims"] == [1]
    assert one(inputs["realism"], "reshape") == {"shape": []}  # a [N] input: dims [1] reshaped to []
    assert one(outputs["result"], "data_type") == "TYPE_UINT8" and outputs["result"]["dims"] == [r, r, 3]
    assert one(outputs["latent"], "data_type") == "TYPE_FP32" and outputs["latent"]["dims"] == latent_shape

    batching = one(config, "dynamic_batching")
    assert batching["preferred_batch_size"] == [4, 8]
    assert one(batching, "max_queue_delay_microseconds") == 500
    group = one(config, "instance_group")
    assert one(group, "count") == 2 and one(group, "kind") == "KIND_GPU"
    accelerator = one(one(one(config, "optimization"), "execution_accelerators"), "gpu_execution_accelerator")
    assert one(accelerator, "name") == "tensorrt"
    parameters = {one(p, "key"): one(p, "value") for p in accelerator["parameters"]}
    assert parameters["precision_mode"] == "FP16" and int(parameters["max_workspace_size_bytes"]) > 0


def test_cpu_repository_has_no_gpu_accelerator(bundle, tmp_path):
    model_dir = write_triton_repository(bundle, tmp_path / "repo", max_batch=4, kind="cpu")
    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert one(one(config, "instance_group"), "kind") == "KIND_CPU"
    assert "optimization" not in config
    assert one(one(config, "dynamic_batching"), "preferred_batch_size") == 4


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
    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert one(config, "platform") == "tensorrt_plan" and "optimization" not in config
    with pytest.raises(ValueError, match="--max-batch 16"):
        write_triton_repository(copy, tmp_path / "repo", max_batch=16, use_plan=True)


def test_bad_arguments(bundle, tmp_path):
    with pytest.raises(ValueError):
        write_triton_repository(bundle, tmp_path / "r", kind="tpu")
    with pytest.raises(ValueError):
        write_triton_repository(bundle, tmp_path / "r", max_batch=0)
