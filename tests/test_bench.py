"""`latcomp bench engine | serve` on the small exported bundle, with tiny counts (no timed assertions)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from latcomp import report
from latcomp.bench.engine_bench import count_flops
from latcomp.bench.serve_bench import (
    ServeBenchConfig,
    batch_histogram,
    parse_metrics,
    run_serve_bench,
    serve_markdown,
)
from latcomp.cli import main


@pytest.fixture(scope="module")
def bundle(small_bundle):
    return small_bundle


# ---- FLOP counting --------------------------------------------------------------------------------------


def _tiny_graph(path) -> int:
    """Conv -> grouped strided Conv -> ConvTranspose -> Flatten -> Gemm -> MatMul with a dynamic batch;
    returns its multiply-accumulates per sample, counted by hand."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),  # [N,4,8,8]
        helper.make_node("Conv", ["a", "w2"], ["b"], group=2, strides=[2, 2], pads=[1, 1, 1, 1]),  # [N,4,4,4]
        helper.make_node("ConvTranspose", ["b", "w3"], ["c"], strides=[2, 2]),  # [N,2,8,8]
        helper.make_node("Flatten", ["c"], ["d"]),  # [N,128]
        helper.make_node("Gemm", ["d", "w4"], ["e"], transB=1),  # [N,10]
        helper.make_node("MatMul", ["e", "w5"], ["y"]),  # [N,5]
    ]
    initializers = [
        weight("w1", 4, 3, 3, 3),
        weight("w2", 4, 2, 3, 3),
        weight("w3", 4, 2, 2, 2),
        weight("w4", 10, 128),
        weight("w5", 10, 5),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    conv = (4 * 8 * 8) * (3 * 3 * 3)  # output elements x (C_in / group x kernel)
    grouped = (4 * 4 * 4) * (2 * 3 * 3)
    transposed = (4 * 4 * 4) * (2 * 2 * 2)  # input elements x (C_out / group x kernel)
    return conv + grouped + transposed + 128 * 10 + 10 * 5


def test_count_flops_matches_a_hand_count(tmp_path):
    macs = _tiny_graph(tmp_path / "tiny.onnx")
    counted = count_flops(tmp_path / "tiny.onnx")
    assert counted["macs"] == macs == 9906
    assert counted["flops"] == 2 * macs
    assert counted["macs_by_op"] == {"Conv": 6912 + 1152, "ConvTranspose": 512, "MatMul": 50, "Gemm": 1280}
    assert counted["nodes"] == 5 and counted["unresolved"] == []


def test_count_flops_resolves_every_node_of_the_composer(bundle):
    counted = count_flops(bundle / "composer.onnx")
    assert counted["flops"] > 0 and counted["unresolved"] == []
    assert counted["macs_by_op"]["Conv"] > 0 and counted["macs_by_op"]["ConvTranspose"] > 0


def test_gpu_bookkeeping_without_a_gpu(bundle, monkeypatch):
    """What only a GPU run would exercise: peak lookup, share of peak, provider selection."""
    import onnxruntime

    from latcomp.bench import engine_bench
    from latcomp.runtime import ort_engine, read_bundle

    assert engine_bench.peak_flops("NVIDIA H200")["fp16"] == 989.5e12
    assert engine_bench.peak_flops("NVIDIA H100 PCIe")["fp32"] == 51.2e12
    assert engine_bench.peak_flops("NVIDIA H100 80GB HBM3")["fp16"] == 989.5e12
    assert engine_bench.peak_flops("AMD EPYC") is None and engine_bench.peak_flops(None) is None
    info = {
        "id": "ort-trt/fp16/cuda:0",
        "backend": "ort-trt",
        "precision": "fp16",
        "device": "cuda:0",
        "max_batch": 16,
    }
    row = engine_bench._row(info, 4, [0.001, 0.001], 1e9, engine_bench.peak_flops("NVIDIA H200"))
    assert math.isclose(row["images_per_s"], 4000) and math.isclose(row["share_of_peak"], 4e12 / 989.5e12)

    # the provider lists the benchmark pins, as an onnxruntime-gpu on cuda:1 would get them
    offered = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(offered))
    opened = read_bundle(bundle)
    for backend, expected in (("ort-trt", offered), ("ort-cuda", offered[1:]), ("ort", offered)):
        requested = ort_engine.check_providers(engine_bench.ORT_PROVIDERS.get(backend), "cuda:1")
        chosen = ort_engine.providers_for(opened, "composer_fp16", "cuda:1", True, 8, requested)
        assert [entry[0] if isinstance(entry, tuple) else entry for entry in chosen] == expected
        gpu = dict(entry for entry in chosen if isinstance(entry, tuple))
        assert all(options["device_id"] == 1 for options in gpu.values())
        if "TensorrtExecutionProvider" in gpu:
            assert gpu["TensorrtExecutionProvider"]["trt_fp16_enable"] is True
            assert gpu["TensorrtExecutionProvider"]["trt_profile_max_shapes"].startswith("image:8x32x32x3")
    with pytest.raises(ValueError, match="cannot serve device cpu"):
        ort_engine.check_providers(engine_bench.ORT_PROVIDERS["ort-cuda"], "cpu")
    with pytest.raises(ValueError, match="needs TensorrtExecutionProvider or CUDAExecutionProvider"):
        ort_engine.check_providers(["CPUExecutionProvider"], "cuda:0")


def test_open_bundle_honours_providers_threads_and_instances(bundle):
    """The options the benchmark and the server pin ORT engines with: providers replace the automatic
    choice, threads set every session's intra-op threads, instances the sessions per graph that run at
    once; wrong values fail before any session opens."""
    import onnxruntime

    from latcomp.runtime import open_bundle
    from latcomp.runtime.ort_engine import physical_cores

    with open_bundle(bundle, providers=["CPUExecutionProvider"], threads=1, instances=1) as engine:
        assert engine.backend == "ort"  # backend="auto" with onnxruntime settings means ort
        assert engine.providers == ["CPUExecutionProvider"] and engine.concurrency == 1
        engine.generate(np.zeros((1, *engine.latent_shape), np.float32))  # opens the generator session too
        for graph in ("composer", "generator"):
            options = engine._session(graph, 0).get_session_options()
            assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    with open_bundle(bundle, backend="ort", instances=1) as engine:
        assert engine.threads == physical_cores()  # one instance: every core
        assert engine._session("composer", 0).get_session_options().intra_op_num_threads == physical_cores()
    with open_bundle(bundle, backend="ort") as engine:  # the default: two instances share the cores
        assert engine.instances == engine.concurrency == min(2, physical_cores())
        assert engine.threads == max(1, physical_cores() // engine.instances)
        sessions = {engine._session("composer", i) for i in range(engine.instances)}
        assert len(sessions) == engine.instances  # each instance runs on its own sessions

    available = ", ".join(onnxruntime.get_available_providers())
    with pytest.raises(ValueError, match=re.escape(f"no NoSuchExecutionProvider (it has {available})")):
        open_bundle(bundle, providers=["NoSuchExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ValueError, match="list of provider names"):
        open_bundle(bundle, providers="CPUExecutionProvider")
    with pytest.raises(ValueError, match="once"):
        open_bundle(bundle, providers=[])
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive int"):
            open_bundle(bundle, threads=threads)
        with pytest.raises(ValueError, match="instances must be a positive int"):
            open_bundle(bundle, instances=threads)
    with pytest.raises(ValueError, match="configure the ort backend, not torch"):
        open_bundle(bundle, backend="torch", threads=1)
    with pytest.raises(ValueError, match="instances configure the ort backend, not torch"):
        open_bundle(bundle, backend="torch", instances=2)


# ---- engine ---------------------------------------------------------------------------------------------


def test_engine_bench_writes_json_markdown_and_png(bundle, tmp_path, capsys):
    paths = {kind: tmp_path / f"engine.{kind}" for kind in ("json", "md", "png")}
    argv = ["bench", "engine", str(bundle), *"--backends ort,torch --batch-sizes 1,2 --warmup 1".split()]
    argv += [*"--iterations 3 --threads 1".split(), "--json", str(paths["json"])]
    argv += ["--markdown", str(paths["md"]), "--plot", str(paths["png"])]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "| backend |" in out.out and "[bench engine]" in out.err  # table on stdout, progress on stderr

    result = json.loads(paths["json"].read_text())
    assert result["benchmark"] == "engine" and result["date"] and result["command"]
    machine = result["machine"]
    assert machine["cpu"] and machine["logical_cores"] >= 1 and "numpy" in machine["libraries"]
    assert {e["id"] for e in result["engines"]} == {"ort/fp32/cpu", "torch/fp32/cpu"}
    assert all(e["threads"] == 1 for e in result["engines"])
    assert result["flops"]["flops"] > 0 and result["peak_flops"] is None  # CPU: no known peak
    assert len(result["results"]) == 4
    for row in result["results"]:
        latency = row["latency_ms"]
        assert row["calls"] == 3
        assert 0 < latency["min"] <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        assert row["images_per_s"] > 0 and row["share_of_peak"] is None
        assert math.isclose(row["achieved_flops"], row["images_per_s"] * result["flops"]["flops"])
    (comparison,) = result["comparisons"]
    assert comparison["kind"] == "ort/torch"
    assert comparison["engine"] == "ort/fp32/cpu" and comparison["baseline"] == "torch/fp32/cpu"
    assert comparison["ratio_images_per_s"] > 0 and comparison["required"] == 1.5

    markdown = paths["md"].read_text()
    assert "ORT / torch eager at batch 1" in markdown and "| ort | fp32 | cpu | 1 |" in markdown
    with Image.open(paths["png"]) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 500


def test_engine_bench_lists_what_cannot_run(bundle, tmp_path):
    from latcomp.bench.engine_bench import EngineBenchConfig, run_engine_bench

    config = EngineBenchConfig(
        bundle=str(bundle),
        backends=("ort", "torch"),
        precisions=("fp16",),
        batch_sizes=(1,),
        warmup=0,
        iterations=1,
        seconds=None,
    )
    result = run_engine_bench(config, report.Progress("test", enabled=False))
    skipped = {s["id"]: s["reason"] for s in result["skipped"]}
    assert "cuda" in skipped["torch/fp16/cpu"].lower()  # torch runs fp16 on CUDA only
    assert [e["id"] for e in result["engines"]] == ["ort/fp16/cpu"] and not result["comparisons"]


def test_engine_bench_without_default_bundle_says_so(monkeypatch, tmp_path, capsys):
    import latcomp.runtime.bundle

    monkeypatch.setattr(latcomp.runtime.bundle, "DEFAULT_BUNDLE", tmp_path / "none")
    assert main(["bench", "engine", "--iterations", "1"]) == 2
    assert "no default bundle" in capsys.readouterr().err


# ---- serve ----------------------------------------------------------------------------------------------


def test_serve_bench_on_its_own_loopback_server(bundle, tmp_path, capsys):
    paths = {kind: tmp_path / f"serve.{kind}" for kind in ("json", "md", "png")}
    argv = ["bench", "serve", str(bundle), *"--backend ort --concurrency 1,4 --requests 8 --rate 40".split()]
    argv += ["--warmup", "1", "--json", str(paths["json"]), "--markdown", str(paths["md"])]
    argv += ["--plot", str(paths["png"])]
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads(paths["json"].read_text())
    assert result["server"]["started_by_benchmark"] and result["target"].startswith("127.0.0.1:")
    assert result["server"]["metrics_url"].startswith("http://127.0.0.1:")
    runs = result["runs"]
    assert [(r["mode"], r.get("concurrency"), r["payload"]) for r in runs] == [
        ("closed", 1, "raw"),
        ("closed", 1, "png"),
        ("closed", 4, "raw"),
        ("closed", 4, "png"),
        ("open", None, "raw"),
        ("open", None, "png"),
    ]
    for run in runs:
        assert run["sent"] == run["ok"] == 8 and run["errors"] == {}
        assert run["server_status_counts"] == {"OK": 8}
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] and run["throughput_rps"] > 0
        assert run["server_ms"]["compute"]["p50"] > 0
        histogram = run["batch_sizes_from_metrics"]  # scraped from the server's /metrics
        assert (
            histogram["engine_calls"] >= 1 and sum(histogram["buckets"].values()) == histogram["engine_calls"]
        )
        assert sum(run["batch_size_per_answer"].values()) == 8
    headline = result["headline"]
    assert {(s["payload"], s["low"], s["high"]) for s in headline["scaling"]} == {
        ("raw", 1, 4),
        ("png", 1, 4),
    }
    assert len(headline["latency_at_lowest_concurrency"]) == 2
    markdown = paths["md"].read_text()
    assert "Throughput c=4 / c=1" in markdown and "Latency at c=1" in markdown
    with Image.open(paths["png"]) as image:
        image.verify()


def test_serve_bench_against_a_target_with_token(bundle):
    from latcomp.runtime import open_bundle
    from latcomp.service.server import ServerConfig, ServerThread

    config = ServerConfig(
        host="127.0.0.1", port=0, metrics_port=0, metrics_host="127.0.0.1", auth_token="s3cret-s3cret-s3cret"
    )
    with open_bundle(bundle, backend="ort") as engine, ServerThread(engine, config) as server:
        metrics = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
        bench = ServeBenchConfig(
            target=server.target,
            metrics_url=metrics,
            token="s3cret-s3cret-s3cret",
            concurrency=(2,),
            requests=4,
            payloads=("raw",),
            image_size=3 * engine.resolution,  # photos larger than the model: resized and answered at size
            rpcs=("inpaint",),
            warmup=0,
        )
        result = run_serve_bench(bench, report.Progress("test", enabled=False))
    (run,) = result["runs"]
    assert run["rpc"] == "inpaint" and run["ok"] == 4 and run["server_status_counts"] == {"OK": 4}
    assert f"Images sent: {3 * engine.resolution} px" in serve_markdown(result)
    assert not result["server"]["started_by_benchmark"] and "token" not in result["settings"]
    assert result["headline"]["scaling"] == []  # one level: nothing to compare


def test_batch_histogram_from_prometheus_text():
    def text(counts: dict[str, float], total: float) -> str:
        lines = [f'latcomp_batch_size_bucket{{kind="run",le="{le}"}} {n}' for le, n in counts.items()]
        calls = counts["+Inf"]
        return "\n".join(
            [
                *lines,
                f'latcomp_batch_size_count{{kind="run"}} {calls}',
                f'latcomp_batch_size_sum{{kind="run"}} {total}',
            ]
        )

    before = parse_metrics(text({"1.0": 2, "2.0": 2, "4.0": 2, "6.0": 2, "+Inf": 2}, 2))
    after = parse_metrics(text({"1.0": 5, "2.0": 6, "4.0": 6, "6.0": 8, "+Inf": 8}, 2 + 3 + 2 + 11))
    histogram = batch_histogram(before, after)
    assert histogram == {"engine_calls": 6, "mean": 16 / 6, "buckets": {"1": 3, "2": 1, "5-6": 2}}
    assert batch_histogram(None, after) is None


def test_parse_metrics_keeps_commas_in_label_values_and_reads_timestamped_samples():
    text = ('# TYPE latcomp_requests counter\n'
            'latcomp_requests_total{method="Composite",code="INVALID_ARGUMENT",detail="a, b"} 3 1700000000000\n')
    assert parse_metrics(text) == [
        ("latcomp_requests_total", {"method": "Composite", "code": "INVALID_ARGUMENT", "detail": "a, b"}, 3.0)]


# ---- command line ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["bench"], ["bench", "engine"], ["bench", "serve"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert {"bench": "engine", "engine": "--backends", "serve": "--concurrency"}[command[-1]] in shown


def test_bench_without_subcommand_shows_help(capsys):
    assert main(["bench"]) == 1
    assert "engine" in capsys.readouterr().out


def test_bad_lists_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "engine", "--backends", "ort,onnx"])
    assert "onnx: choose from" in capsys.readouterr().err
