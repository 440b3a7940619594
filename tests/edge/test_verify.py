"""Verification reads the weights back from ONNX and OpenVINO, fp32 and int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge_tune.catalog.models import create_model
from edge_tune.compression.export import export_onnx, weight_stats
from edge_tune.compression.quantize import quantize
from edge_tune.compression.runner import apply_recipe
from edge_tune.edge.verify import match_name, verify

EXAMPLE = torch.zeros(1, 3, 32, 32)


def test_match_name_picks_the_exact_layer() -> None:
    names = ["conv1.weight", "layer1.0.conv1.weight", "fc.weight"]
    assert match_name("conv1.weight", names) == "conv1.weight"
    assert match_name("q_output_layer1.0.conv1.weight_1", names) == "layer1.0.conv1.weight"
    assert match_name("q_output_conv1.weight_1", names) == "conv1.weight"
    assert match_name("val_12", names) is None


@pytest.fixture(scope="module")
def sparse_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = create_model("resnet20_cifar", 10).eval()
    baseline = {k: v[0] for k, v in weight_stats(model).items()}
    apply_recipe(model, {
        "pruners": {"f": {"class": "L1RankedStructureParameterPruner", "group_type": "Filters",
                          "desired_sparsity": 0.5, "weights": ["layer2.1.conv1.weight"]},
                    "z": {"class": "SparsityLevelParameterPruner",
                          "levels": {"layer3.2.conv2.weight": 0.8}}},
        "extensions": {"t": {"class": "FilterRemover"}},
        "policies": [{"pruner": {"instance_name": "f"}, "epochs": [0]},
                     {"extension": {"instance_name": "t"}, "epochs": [0]},
                     {"pruner": {"instance_name": "z"}, "epochs": [0]}]}, EXAMPLE)
    path = export_onnx(model, EXAMPLE, tmp_path_factory.mktemp("verify") / "m.onnx")
    model.baseline_shapes = baseline  # type: ignore[assignment]
    return model, path


def test_fp32_export_carries_shapes_and_zeros(sparse_model: tuple) -> None:
    model, path = sparse_model
    rows = {r.layer: r for r in verify(weight_stats(model), model.baseline_shapes, path)}
    assert len(rows) == 22 and all(r.reached for r in rows.values())
    thin = rows["layer2.1.conv1.weight"]
    assert thin.baseline_shape == [32, 32, 3, 3]
    assert thin.torch_shape == thin.onnx_shape == thin.openvino_shape == [16, 32, 3, 3]
    sparse = rows["layer3.2.conv2.weight"]
    assert sparse.torch_sparsity == sparse.onnx_sparsity == sparse.openvino_sparsity == 80.0
    assert rows["layer1.0.conv1.weight"].openvino_sparsity == 0.0
    assert rows["fc.weight"].openvino_shape is not None


def test_int8_export_is_read_as_stored(sparse_model: tuple, tmp_path: Path) -> None:
    model, path = sparse_model
    calibration = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    int8 = quantize(path, tmp_path / "q.xml", calibration)
    assert int8.suffix == ".xml" and int8.with_suffix(".bin").is_file()
    rows = {r.layer: r for r in verify(weight_stats(model), model.baseline_shapes, path, int8)}
    assert len(rows) == 22 and all(r.reached for r in rows.values()), [
        r for r in rows.values() if not r.reached]
    assert rows["layer3.2.conv2.weight"].openvino_sparsity >= 80.0
    assert rows["layer2.1.conv1.weight"].openvino_shape == [16, 32, 3, 3]
    from edge_tune.edge.verify import openvino_weights

    assert {a.dtype.name for a in openvino_weights(int8).values()} == {"int8"}


def test_unreached_compression_is_reported(sparse_model: tuple) -> None:
    model, path = sparse_model
    stats = weight_stats(model)
    shape, _ = stats["layer1.0.conv2.weight"]
    stats["layer1.0.conv2.weight"] = (shape, 0.5)  # torch claims zeros the file does not hold
    rows = {r.layer: r for r in verify(stats, model.baseline_shapes, path)}
    assert not rows["layer1.0.conv2.weight"].reached
    assert rows["layer1.0.conv1.weight"].reached
