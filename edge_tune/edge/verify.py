"""Did the compression reach the deployed model? Weights read back from ONNX and OpenVINO.

For every conv / linear layer: its weight's shape and sparsity (fraction of exact zeros) in
torch, in the ONNX file and in the OpenVINO model converted from it. Torch-free, like ``bench``.
Weights are traced from each Conv/Gemm/MatMul's weight input back through dequantisation,
conversion and reshaping to the stored constant, so int8 models are read as they are stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import openvino as ov
from onnx import numpy_helper

WeightStats = dict[str, tuple[tuple[int, ...], float]]  # name -> (shape, sparsity 0..1)
_PASS_THROUGH = {"DequantizeLinear", "QuantizeLinear", "Cast", "Transpose", "Identity",
                 "Reshape", "Convert", "Subtract", "Multiply", "FakeQuantize", "Unsqueeze"}


def sparsity(array: np.ndarray) -> float:
    """Fraction of exactly-zero elements (0..1)."""
    return float(np.count_nonzero(array == 0)) / max(1, array.size)


def match_name(stored: str, names: list[str]) -> str | None:
    """The torch weight name that a stored constant's name refers to (longest match).

    Exporters and quantisers decorate names (``q_output_layer1.0.conv1.weight_1``); a torch
    name matches when it ends the stored name (bar a ``_N`` suffix) after ``_`` or nothing.
    """
    best = None
    for name in names:
        found = re.search(rf"(^|_){re.escape(name)}(_\d+)?$", stored)
        if found and (best is None or len(name) > len(best)):
            best = name
    return best


def _onnx_layers(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Weights of every Conv/Gemm/MatMul by initializer name, and node name -> that name."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    weights, nodes = {}, {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        name = node.input[1]
        while name not in inits and name in producer and producer[name].op_type in _PASS_THROUGH:
            name = producer[name].input[0]
        if name in inits:
            weights[name] = numpy_helper.to_array(inits[name])
            nodes[node.name] = name
    return weights, nodes


def node_layers(path: str | Path) -> dict[str, str]:
    """ONNX Conv/Gemm node name -> the layer it computes (``layer1.0.conv1``), from its weight.

    OpenVINO keeps those node names in its per-layer profile (``node_Conv_311/WithoutBiases``),
    so runtime times can be charged to the model's own layer names.
    """
    return {node: name.removesuffix(".weight") for node, name in _onnx_layers(path)[1].items()}


def layer_of(node: str, names: dict[str, str]) -> str:
    """The layer an OpenVINO runtime node computes (``/layer1/layer1.0/conv1/Conv/WithoutBiases``
    -> ``layer1.0.conv1``): the longest leading part of its name that is an ONNX node of
    :func:`node_layers`; the node's own name when none is."""
    parts = node.split("/")
    for end in range(len(parts), 0, -1):
        found = names.get("/".join(parts[:end]))
        if found is not None:
            return found
    return node


COMPUTE = ("Convolution", "FullyConnected", "MatMul")  # OpenVINO types charged to a layer
OTHER = "other ops"  # reorders, pooling, adds, activations: summed


def layer_ms(rows: Iterable[tuple[str, str, float]], names: dict[str, str]) -> dict[str, float]:
    """Per-layer ms of a profile's (node, type, ms) rows, by the model's own layer names
    (:func:`layer_of` over :func:`node_layers`); other ops summed under :data:`OTHER`."""
    out: dict[str, float] = {}
    for node, kind, ms in rows:
        layer = layer_of(node, names) if kind in COMPUTE else OTHER
        out[layer] = out.get(layer, 0.0) + float(ms)
    return out


def openvino_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Weight constants of every Convolution/MatMul in the OpenVINO model read from ``path``."""
    model = ov.Core().read_model(str(path))
    weights = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "MatMul", "GroupConvolution"):
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in _PASS_THROUGH and node.get_input_size() > 0:
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant":
            # Quantised constants lose their names; the op keeps the ONNX node's name.
            names = sorted(node.get_output_tensor(0).get_names())
            key = names[0] if names else op.get_friendly_name().removesuffix("/WithoutBiases")
            weights[key] = node.get_data().copy()
    return weights


@dataclass(frozen=True)
class LayerCheck:
    """One layer's weight as trained, exported and converted (shapes, sparsity in %)."""

    layer: str
    baseline_shape: list[int]
    torch_shape: list[int]
    onnx_shape: list[int] | None
    openvino_shape: list[int] | None
    torch_sparsity: float
    onnx_sparsity: float | None
    openvino_sparsity: float | None
    reached: bool


def _by_torch_name(stored: dict[str, np.ndarray], names: list[str],
                   aliases: dict[str, str] | None = None) -> WeightStats:
    found: WeightStats = {}
    for key, array in stored.items():
        name = match_name(key, names) or match_name((aliases or {}).get(key, ""), names)
        if name is not None:
            found[name] = (tuple(int(d) for d in array.shape), sparsity(array))
    return found


def _same_shape(torch_shape: tuple[int, ...], other: tuple[int, ...] | None) -> bool:
    # A linear layer may be stored transposed (MatMul), a grouped or depthwise conv as
    # (groups, out/groups, in/groups, kh, kw) (GroupConvolution): the dims other than 1 agree.
    def dims(shape: tuple[int, ...]) -> list[int]:
        return sorted(d for d in shape if d != 1)

    return other is not None and dims(other) == dims(torch_shape)


def verify(torch_stats: WeightStats, baseline_shapes: dict[str, tuple[int, ...]],
           onnx_path: str | Path, deployed: str | Path | None = None) -> list[LayerCheck]:
    """Per-layer table comparing torch with the ONNX file and the deployed OpenVINO model.

    ``deployed`` is what the device runs (int8 IR, say); by default the ONNX file as OpenVINO
    reads it. A layer's compression ``reached`` the deployed model when its shape is the same
    in all three and its ONNX and OpenVINO sparsity are at least torch's (int8 rounding may
    add zeros).
    """
    names = list(torch_stats)
    onnx_arrays, onnx_nodes = _onnx_layers(onnx_path)
    onnx_stats = _by_torch_name(onnx_arrays, names)
    ov_stats = _by_torch_name(openvino_weights(deployed or onnx_path), names, onnx_nodes)
    rows = []
    tolerance = 1e-3
    for name, (shape, torch_sp) in torch_stats.items():
        onnx_shape, onnx_sp = onnx_stats.get(name, (None, None))
        ov_shape, ov_sp = ov_stats.get(name, (None, None))
        reached = (_same_shape(shape, onnx_shape) and _same_shape(shape, ov_shape)
                   and onnx_sp is not None and ov_sp is not None
                   and onnx_sp >= torch_sp - tolerance and ov_sp >= torch_sp - tolerance)
        rows.append(LayerCheck(
            layer=name, baseline_shape=list(baseline_shapes.get(name, shape)),
            torch_shape=list(shape),
            onnx_shape=None if onnx_shape is None else list(onnx_shape),
            openvino_shape=None if ov_shape is None else list(ov_shape),
            torch_sparsity=round(100 * torch_sp, 2),
            onnx_sparsity=None if onnx_sp is None else round(100 * onnx_sp, 2),
            openvino_sparsity=None if ov_sp is None else round(100 * ov_sp, 2),
            reached=reached))
    return rows


def table(rows: list[LayerCheck]) -> list[dict[str, Any]]:
    """Rows as plain dicts for JSON."""
    return [asdict(r) for r in rows]
