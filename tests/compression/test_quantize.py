"""int8 with NNCF: the latency probe's quick quantisation writes the graph the final one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import torch

from edge_tune.catalog.models import create_model
from edge_tune.compression.export import export_onnx
from edge_tune.compression.quantize import quantize

# OpenVINO runs an f32 model in bf16 on CPUs that have it (AVX512-BF16, AMX) unless told: every
# comparison with torch's numbers pins f32
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


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
    out = [core.compile_model(str(p), "CPU", F32)(x)[0] for p in (onnx, final, probe)]
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
    f32 = ov.Core().compile_model(str(onnx), "CPU", F32)(x)[0]
    assert np.abs(f32 - model(torch.as_tensor(x)).detach().numpy()).max() < 1e-4  # folded right


def _quantised_inputs(path: Path) -> dict[str, int]:
    """Per Convolution / MatMul: how many of its inputs come through a FakeQuantize."""
    model = ov.Core().read_model(str(path))
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            out[op.get_friendly_name()] = sum(
                op.input_value(i).get_node().get_type_name() == "FakeQuantize"
                or any(src.get_node().get_type_name() == "FakeQuantize"
                       for src in op.input_value(i).get_node().inputs()
                       for src in [src.get_source_output()])
                for i in range(op.get_input_size()))
    return out


def test_a_recipes_int8_options_leave_layers_in_float(tmp_path: Path) -> None:
    """Distiller's overrides with null bits (or int8 only where overrides say) reach NNCF's
    ignored scope by the layers' torch names."""
    from edge_tune.compression.quantize import Int8Options

    torch.manual_seed(0)
    onnx = export_onnx(create_model("simple_cnn", 10).eval(), torch.zeros(1, 3, 16, 16),
                       tmp_path / "m.onnx")
    images = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    every = _quantised_inputs(quantize(onnx, tmp_path / "all.xml", images))
    no_fc = _quantised_inputs(quantize(onnx, tmp_path / "no_fc.xml", images,
                                       options=Int8Options(float_layers=("fc",))))
    only = _quantised_inputs(quantize(onnx, tmp_path / "only.xml", images, options=Int8Options(
        float_layers=(), int8_layers=("conv[23]",), asymmetric_activations=True,
        mean_ranges=True, per_channel=False)))
    fc = next(name for name in every if "fc" in name)
    conv1 = next(name for name in every if "conv1" in name)
    assert every[fc] > 0 and no_fc[fc] == 0 and no_fc[conv1] == every[conv1] > 0
    assert only[conv1] == 0 and only[fc] == 0 and sum(only.values()) > 0


def test_accuracy_controlled_int8_returns_layers_to_float_until_top1_holds(
        tmp_path: Path) -> None:
    """An untrained model's logits lie close together, so plain int8 flips predictions; with
    no drop allowed, NNCF returns layers to float until top-1 on the control images holds."""
    from edge_tune.compression.quantize import float_layers, quantize_controlled

    torch.manual_seed(0)
    onnx = export_onnx(create_model("simple_cnn", 10).eval(), torch.zeros(1, 3, 16, 16),
                       tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 3, 16, 16)).astype(np.float32)
    core = ov.Core()
    f32 = core.compile_model(str(onnx), "CPU", F32)
    labels = np.array([int(np.argmax(f32(x[None])[0])) for x in images])  # float: 100%
    plain = quantize(onnx, tmp_path / "plain.xml", images[:16])

    def top1(path: Path) -> float:
        compiled = core.compile_model(str(path), "CPU", F32)
        return float(np.mean([np.argmax(compiled(x[None])[0]) == y
                              for x, y in zip(images[16:], labels[16:], strict=True)]))

    assert top1(plain) < 1.0  # plain int8 loses some: the case the option is for
    assert float_layers(core.read_model(str(plain))) == []  # every layer in int8
    kept, in_float = quantize_controlled(onnx, tmp_path / "kept.xml", images[:16],
                                         (images[16:], labels[16:]), max_drop=0.0)
    assert top1(kept) == 1.0 and in_float  # no drop: some layers went back to float
    assert len(in_float) == len(float_layers(core.read_model(str(kept))))
    assert set(in_float) <= {"conv1", "conv2", "conv3", "fc"}  # by their torch names
    assert len(in_float) < len(_quantised_inputs(onnx))  # not simply all of them


def test_graphs_of_one_topology_share_nncfs_quantizer_setup(tmp_path: Path) -> None:
    """A thinned ResNet-20 reuses the setup NNCF found for the dense one (OpenVINO's own node
    names made stable first), and places exactly the FakeQuantize nodes NNCF finds afresh."""
    from edge_tune.compression import quantize as q
    from edge_tune.compression.plan import plan_compression
    from edge_tune.compression.runner import apply_recipe
    from edge_tune.config import config_from_dict
    from edge_tune.search.params import schedule_from_params

    example = torch.zeros(1, 3, 32, 32)
    files = []
    for ratio in (0.0, 0.5):
        torch.manual_seed(0)
        model = create_model("resnet20_cifar", 10).eval()
        if ratio:
            schedule = schedule_from_params({"filter_ratio": ratio}, (), 0)
            apply_recipe(model, plan_compression(schedule, model, config_from_dict({})).recipe,
                         example)
        files.append(export_onnx(model, example, tmp_path / f"m{ratio}.onnx"))
    images = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)

    def quantizers(path: Path) -> list[str]:
        return sorted(op.get_friendly_name() for op in ov.Core().read_model(str(path)).get_ops()
                      if op.get_type_name() == "FakeQuantize")

    q._SETUPS.clear()
    quantize(files[0], tmp_path / "dense.xml", images, bias_correction=False)
    shared = quantize(files[1], tmp_path / "shared.xml", images, bias_correction=False)
    assert len(q._SETUPS) == 1  # the thinned graph found the dense one's setup
    q._SETUPS.clear()
    fresh = quantize(files[1], tmp_path / "fresh.xml", images, bias_correction=False)
    assert len(quantizers(shared)) >= 20 and quantizers(shared) == quantizers(fresh)
    assert _ops(shared) == _ops(fresh)
