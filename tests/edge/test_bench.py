"""The benchmark side: real OpenVINO on CPU, and no torch in its imports."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edge_tune.catalog.models import create_model
from edge_tune.compression.export import export_onnx
from edge_tune.core.errors import UserError
from edge_tune.edge import bench

FAST = bench.BenchSettings(warmup=5, iterations=40, rounds=2, fps_seconds=0.1)


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    small = create_model("simple_cnn", 10)
    large = create_model("resnet20_cifar", 10)
    example = torch.zeros(1, 3, 32, 32)
    return {"small": export_onnx(small, example, folder / "small.onnx"),
            "large": export_onnx(large, example, folder / "large.onnx")}


def test_benchmark_reports_latency_fps_and_layers(onnx_pair: dict[str, Path],
                                                  tmp_path: Path) -> None:
    results = bench.benchmark_models(onnx_pair, FAST)
    for result in results.values():
        assert 0 < result.latency_ms <= result.latency_p90_ms
        assert result.samples == 40 and result.fps > 0 and result.cv >= 0
        assert any(layer.type == "Convolution" and layer.ms > 0 for layer in result.layers)
    # ResNet-20 does ~20x the MACs of the small CNN: the timings must tell them apart.
    assert results["large"].latency_ms > results["small"].latency_ms
    path = bench.write_layers_csv(results["large"].layers, tmp_path / "layers.csv")
    rows = list(csv.DictReader(path.open()))
    assert rows[0].keys() == {"node", "type", "kernel", "ms"}
    assert float(rows[0]["ms"]) >= float(rows[-1]["ms"])
    assert sum(r["type"] == "Convolution" for r in rows) >= 19


def test_infer_matches_torch(onnx_pair: dict[str, Path]) -> None:
    torch.manual_seed(0)
    model = create_model("simple_cnn", 10).eval()
    x = torch.randn(5, 3, 32, 32)
    logits = bench.infer(onnx_pair["small"], x.numpy(), FAST, batch=2)
    assert logits.shape == (5, 10)
    assert abs(logits - model(x).detach().numpy()).max() < 1e-4  # f32 pinned: no bf16 drift


def test_compile_settings_pin_precision_threads_and_hint() -> None:
    import openvino as ov

    props = bench.compile_settings(ov.Core(), bench.BenchSettings(threads=2))
    assert props["INFERENCE_PRECISION_HINT"] == "f32"
    assert props["INFERENCE_NUM_THREADS"] == 2
    assert props["PERFORMANCE_HINT"] == "LATENCY" and props["NUM_STREAMS"] == 1


@pytest.mark.parametrize("device", ["MYRIAD", "NPU", "GPU.1"])
def test_unavailable_device_lists_available(device: str) -> None:
    with pytest.raises(UserError, match=rf"bench.device: '{device}' is not available here; "
                                        r"available: .*CPU"):
        bench.check_device(device)
    bench.check_device("CPU")


def test_bench_and_verify_do_not_import_torch() -> None:
    code = ("import sys, edge_tune.edge.bench, edge_tune.edge.verify, edge_tune.core.errors; "
            "import openvino, onnx; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_model_is_compiled_once_until_its_file_changes(onnx_pair: dict[str, Path],
                                                         tmp_path: Path) -> None:
    copy = tmp_path / "m.onnx"
    copy.write_bytes(onnx_pair["small"].read_bytes())
    first = bench.compile_model(copy, FAST)
    assert bench.compile_model(copy, FAST) is first  # the actor's baseline, call after call
    assert bench.compile_model(copy, FAST, perf_count=True) is not first  # other settings
    copy.write_bytes(onnx_pair["large"].read_bytes())  # same path, new model
    recompiled = bench.compile_model(copy, FAST)
    assert recompiled is not first
    assert len(recompiled.inputs) == 1 and recompiled.input(0).get_shape()[1] == 3
    for other in range(bench._KEEP_COMPILED + 1):  # candidates come and go; a few are kept
        (tmp_path / f"{other}.onnx").write_bytes(onnx_pair["small"].read_bytes())
        bench.compile_model(tmp_path / f"{other}.onnx", FAST)
    assert len(bench._COMPILED) == bench._KEEP_COMPILED
    assert bench.compile_model(copy, FAST) is not recompiled  # evicted, compiled again
