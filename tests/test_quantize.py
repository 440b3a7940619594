"""int8 with NNCF: the latency probe's quick quantisation writes the graph the final one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import torch

from edge_tune.export import export_onnx
from edge_tune.models import create_model
from edge_tune.quantize import quantize


def _ops(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    model = ov.Core().read_model(str(path))
    return [(op.get_type_name(), tuple(op.get_output_partial_shape(0).get_min_shape()))
            for op in model.get_ordered_ops()]


def test_probe_and_final_int8_graphs_match(tmp_path: Path) -> None:
    torch.manual_seed(0)
    onnx = export_onnx(create_model("simple_cnn", 10), torch.zeros(1, 3, 16, 16),
                       tmp_path / "m.onnx")
    images = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    final = quantize(onnx, tmp_path / "final.xml", images)
    probe = quantize(onnx, tmp_path / "probe.xml", images[:4], bias_correction=False)
    assert _ops(probe) == _ops(final)
    assert sum(kind == "FakeQuantize" for kind, _ in _ops(final)) >= 3  # it is int8
    x = images[:1]
    core = ov.Core()
    out = [core.compile_model(str(p), "CPU")(x)[0] for p in (onnx, final, probe)]
    assert out[1].shape == (1, 10)
    assert np.abs(out[1] - out[0]).max() < 0.5 * np.abs(out[0]).max()  # close to f32
    assert not np.array_equal(out[1], out[2])  # calibrated differently: other values


def test_batchnorm_is_folded_so_nothing_is_quantised_between_conv_and_it(tmp_path: Path) -> None:
    model = create_model("resnet20_cifar", 10).eval()
    onnx = export_onnx(model, torch.zeros(1, 3, 32, 32), tmp_path / "r.onnx")
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    int8 = ov.Core().read_model(str(quantize(onnx, tmp_path / "r.xml", images)))
    kinds = [op.get_type_name() for op in int8.get_ordered_ops()]
    assert "BatchNormInference" not in kinds and kinds.count("Convolution") == 21
    after_conv = [op.get_friendly_name() for op in int8.get_ordered_ops()
                  if op.get_type_name() == "FakeQuantize"
                  and op.input_value(0).get_node().get_type_name() == "Convolution"]
    assert after_conv == []  # a conv's output is quantised after BatchNorm and ReLU, not before
    x = images[:1]
    f32 = ov.Core().compile_model(str(onnx), "CPU")(x)[0]
    assert np.abs(f32 - model(torch.as_tensor(x)).detach().numpy()).max() < 1e-4  # folded right
