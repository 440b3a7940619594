"""Post-training int8 quantisation with NNCF, on the OpenVINO model converted from ONNX.

NNCF's OpenVINO backend is the one OpenVINO's own runtime is tuned for: on a 50%-filter-pruned
ResNet-20 it kept top-1 within 0.4 points of f32, where quantising the ONNX graph (standard
QuantizeLinear/DequantizeLinear) lost 3.3 points as OpenVINO ran it. The result is OpenVINO IR
(``.xml`` + ``.bin``), stored in f32 (no f16 compression) so the weights are exactly NNCF's.
Torch-free: an edge node can quantise too.

Calibration runs one image per inference: batches of 16 took NNCF from 3.3 s to 1.9 s for 128
images but cost a pruned Fashion-MNIST ResNet-20 8 points of top-1 (its activation ranges are
reduced per batch, so a batch's extremes widen them).

Where NNCF puts its quantisers depends on the graph's topology, not its widths: a trial's probe
and its final model, and every trial of one model with filters removed, reuse the setup NNCF
found for the first such graph in the process (:func:`_share_setups`; ResNet-20 0.1-0.3 s and
MobileNetV2 0.5-1.2 s less per call on 2 cores; the same FakeQuantize nodes).
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from edge_tune.edge.verify import node_layers


@dataclass(frozen=True)
class Int8Options:
    """How NNCF quantises: what a Distiller quantizer's options map to (the defaults are
    edge_tune's own int8: symmetric, per-channel weights, min/max activation ranges)."""

    asymmetric_activations: bool = False  # Distiller's ASYMMETRIC_* modes (NNCF preset MIXED)
    per_channel: bool = True  # weights: one scale per output channel
    mean_ranges: bool = False  # activation range = mean of per-image min/max (clip_acts AVG)
    # layers (torch names or regular expressions over them, Distiller's override keys) left in
    # float; with ``int8_layers`` set every layer that matches none of those is left in float
    float_layers: tuple[str, ...] = ()
    int8_layers: tuple[str, ...] | None = None

    def in_float(self, layer: str) -> bool:
        """Whether NNCF leaves ``layer`` in float."""
        if any(re.fullmatch(p, layer) for p in self.float_layers):
            return True
        return self.int8_layers is not None and not any(
            re.fullmatch(p, layer) for p in self.int8_layers)


def _advanced(options: Int8Options, bias_correction: bool) -> object:
    import nncf  # heavy: only when a model is quantised
    from nncf.quantization.advanced_parameters import QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    extra: dict[str, object] = {}
    if not options.per_channel:
        extra["weights_quantization_params"] = QuantizationParameters(per_channel=False)
    if options.mean_ranges:
        extra["activations_range_estimator_params"] = RangeEstimatorParametersSet.MEAN_MINMAX
    return nncf.AdvancedQuantizationParameters(disable_bias_correction=not bias_correction,
                                               **extra)


def _ignored(src: str | Path, options: Int8Options) -> object:
    """NNCF's ignored scope: the ONNX nodes (and the nodes OpenVINO derives from them) that
    compute the layers left in float."""
    import nncf

    nodes = [node for node, layer in node_layers(src).items() if options.in_float(layer)]
    return nncf.IgnoredScope(patterns=[f"^{re.escape(n)}(/.*)?$" for n in nodes],
                             validate=False)


def _scheme(src: str | Path, options: Int8Options) -> dict[str, object]:
    """The preset and ignored scope ``options`` ask NNCF for (none when the defaults do)."""
    import nncf

    extra: dict[str, object] = {}
    if options.asymmetric_activations:
        extra["preset"] = nncf.QuantizationPreset.MIXED
    if options.float_layers or options.int8_layers is not None:
        extra["ignored_scope"] = _ignored(src, options)
    return extra


# NNCF's quantizer setup (where FakeQuantize nodes go) by the graph's topology and the
# algorithm's settings: a trial's probe and its final model, and every trial of one model
# whose filters were removed, share it (ResNet-20: about half of each NNCF call, 0.4-0.8 s)
_SETUPS: dict[str, Any] = {}
_SETTINGS = ("_target_device", "_model_type", "_preset", "_ignored_scope",
             "_quantization_params", "_overflow_fix", "_quantize_outputs",
             "_activations_quantization_params", "_weights_quantization_params",
             "_quantizer_propagation_rule")


def topology(graph: Any) -> str:
    """NNCF's graph without its tensor shapes: each node's name, type and metatype, each edge's
    ends and ports (filters removed change shapes, not this)."""
    nodes = sorted(f"{n.node_name}|{n.node_type}|{n.metatype.__name__}"
                   for n in graph.get_all_nodes())
    edges = sorted(f"{e.from_node.node_name}>{e.to_node.node_name}|{e.output_port_id}|"
                   f"{e.input_port_id}" for e in graph.get_all_edges())
    return "\n".join(nodes + edges)


_AUTO_NAME = re.compile(r"[A-Za-z]+_\d+")  # OpenVINO's own names: a process-wide counter


def stable_names(model: ov.Model) -> ov.Model:
    """``model`` with the nodes OpenVINO named itself (``Broadcast_363``: the number counts
    every node made in this process) renamed by their place in the graph, so that two graphs
    of one topology have the same names (:func:`_share_setups` depends on it)."""
    for index, op in enumerate(model.get_ordered_ops()):
        if _AUTO_NAME.fullmatch(op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_et{index}")
    return model


def _share_setups() -> None:
    """Make NNCF's min-max algorithm reuse the quantizer setup it found for a graph of the
    same topology and settings (:data:`_SETUPS`). Settings whose text names an object's
    address never match, so they are computed afresh; an NNCF without this method is left
    alone."""
    from nncf.quantization.algorithms.min_max.algorithm import MinMaxQuantization

    find = getattr(MinMaxQuantization, "find_quantization_setup", None)
    if find is None or getattr(find, "edge_tune_shared", False):
        return

    def shared(self: Any, model: Any, nncf_graph: Any) -> Any:
        settings = repr([getattr(self, name, None) for name in _SETTINGS])
        if " at 0x" in settings:
            return find(self, model, nncf_graph)
        key = settings + "\n" + topology(nncf_graph)
        if key not in _SETUPS:
            _SETUPS[key] = find(self, model, nncf_graph)
        return copy.deepcopy(_SETUPS[key])

    shared.edge_tune_shared = True  # type: ignore[attr-defined]
    MinMaxQuantization.find_quantization_setup = shared


def quantize(src: str | Path, dst: str | Path, calibration: np.ndarray,
             bias_correction: bool = True, options: Int8Options | None = None) -> Path:
    """Write an int8 OpenVINO IR of the ONNX model ``src`` to ``dst`` (``.xml``).

    ``calibration`` is (N, C, H, W) float32 training images; each is one calibration sample.
    ``bias_correction=False`` skips NNCF's bias correction (about 0.3 s for ResNet-20): the
    graph is the same, only bias values differ, so a latency probe needs none.
    """
    options = options or Int8Options()
    logging.getLogger("nncf").setLevel(logging.WARNING)
    model = ov.Core().read_model(str(src))
    samples = [calibration[i:i + 1] for i in range(len(calibration))]
    import nncf  # heavy: only when a model is quantised

    _share_setups()
    stable_names(model)
    extra = _scheme(src, options)
    quantized = nncf.quantize(
        model, nncf.Dataset(samples), subset_size=len(samples),
        advanced_parameters=_advanced(options, bias_correction), **extra)
    out = Path(dst).with_suffix(".xml")
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def quantize_controlled(src: str | Path, dst: str | Path, calibration: np.ndarray,
                        validation: tuple[np.ndarray, np.ndarray], max_drop: float,
                        options: Int8Options | None = None) -> tuple[Path, list[str]]:
    """int8 that loses at most ``max_drop`` points of top-1 against float on ``validation``
    ((N, C, H, W) float32 images and their labels): NNCF's accuracy-controlled quantisation
    quantises as :func:`quantize` does, then returns the layers that cost most to float
    until the drop holds (or nothing is left to return). The IR's path and its compute
    layers (convolutions, matrix products) that run in float, by torch name where known."""
    options = options or Int8Options()
    logging.getLogger("nncf").setLevel(logging.WARNING)
    import nncf  # heavy: only when a model is quantised

    model = ov.Core().read_model(str(src))
    samples = [calibration[i:i + 1] for i in range(len(calibration))]
    items = [(validation[0][i:i + 1], int(validation[1][i])) for i in range(len(validation[1]))]

    def top1(compiled: ov.CompiledModel, data: object) -> tuple[float, list[float]]:
        hits = [float(np.argmax(compiled(x)[0]) == y) for x, y in data]  # type: ignore[attr-defined]
        return float(np.mean(hits)), hits

    extra = _scheme(src, options)
    quantized = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(samples), nncf.Dataset(items, lambda item: item[0]), top1,
        max_drop=max_drop / 100, subset_size=len(samples),
        advanced_quantization_parameters=_advanced(options, True), **extra)
    out = Path(dst).with_suffix(".xml")
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    nodes = node_layers(src)  # ONNX node -> torch layer; OpenVINO appends /WithoutBiases
    return out, [nodes.get(name.removesuffix("/WithoutBiases"), name)
                 for name in float_layers(quantized)]


COMPUTE = ("Convolution", "GroupConvolution", "MatMul")


def float_layers(model: ov.Model) -> list[str]:
    """The compute ops of an OpenVINO model that no FakeQuantize feeds, directly or through
    one node (a weight's Reshape or Convert): they run in float."""
    def quantised(source: ov.Output) -> bool:
        node = source.get_node()
        return node.get_type_name() == "FakeQuantize" or any(
            i.get_node().get_type_name() == "FakeQuantize" for i in node.input_values())

    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in COMPUTE and not any(map(quantised, op.input_values()))]

