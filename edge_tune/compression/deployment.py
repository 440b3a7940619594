"""From a compressed torch model to what the device runs: ONNX, int8, verification, accuracy.

:func:`deploy` exports the model, quantises it when asked (NNCF on the OpenVINO model),
verifies layer by layer that the compression reached the ONNX file and the OpenVINO model,
and measures top-1 as OpenVINO runs it. The :class:`Artifact` it returns is everything the
benchmark side needs. Export and int8 work on CPU copies; the model may live on a GPU.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edge_tune.catalog.splits import Splits, take
from edge_tune.compression.export import count_macs, export_onnx, weight_stats
from edge_tune.compression.quantize import Int8Options, quantize, quantize_controlled
from edge_tune.compression.train import topk_accuracy
from edge_tune.config import Config
from edge_tune.edge import bench
from edge_tune.edge.verify import LayerCheck, verify

Images = tuple[np.ndarray, np.ndarray]  # (N, C, H, W) float32 images and their labels


def arrays(dataset: Dataset, count: int | None = None) -> Images:
    """Images (N, C, H, W float32) and labels of the first ``count`` items (all if None)."""
    items = take(dataset, count if count is not None else len(dataset))  # type: ignore[arg-type]
    xs, ys = zip(*(items[i] for i in range(len(items))), strict=True)
    return torch.stack(list(xs)).numpy(), np.asarray([int(y) for y in ys])


def deployed_accuracy(deployed: Path, test: Images,
                      settings: bench.BenchSettings) -> tuple[float, float]:
    """Top-1/top-5 (percent) of the deployed model as OpenVINO runs it."""
    logits = bench.infer(deployed, test[0], settings)
    return topk_accuracy(torch.as_tensor(logits), torch.as_tensor(test[1]))


@dataclass
class Artifact:
    """What the torch side hands to the benchmark side: a deployable model and its facts."""

    onnx_path: Path  # f32 export
    deployed: Path  # what runs on the device: the ONNX file, or int8 OpenVINO IR (.xml)
    top1: float  # percent, as deployed
    top5: float
    macs: int  # multiply-accumulates per batch-1 inference
    params: int
    verification: list[LayerCheck]
    timings: dict[str, float]  # s per step
    precision: str  # OpenVINO's inference precision the accuracy ran at (int8 layers: int8)
    thinned: dict[str, dict[str, int]] = field(default_factory=dict)  # extension -> removed
    skipped: dict[str, str] = field(default_factory=dict)  # conv asked to shrink -> why not
    # int8 under quantize.max_drop: the compute layers NNCF returned to float to keep top-1
    float_layers: list[str] = field(default_factory=list)


def deploy(model: nn.Module, int8: bool | Int8Options, splits: Splits, config: Config,
           out: Path, baseline_shapes: dict[str, tuple[int, ...]], test: Images,
           name: str = "model", timings: dict[str, float] | None = None,
           fake_quantised: bool = False) -> Artifact:
    """Export ``model`` (int8 when asked: True for edge_tune's defaults, or a recipe's
    :class:`Int8Options`), verify it and measure its accuracy as deployed.
    ``fake_quantised``: the model trained with NNCF's quantisers, which the export keeps
    (OpenVINO runs it as int8)."""
    timings = dict(timings or {})
    cpu_model = copy.deepcopy(model).cpu().eval()  # export and int8 run on the CPU
    example = torch.zeros(1, 3, splits.image_size, splits.image_size)
    macs, n_params = count_macs(cpu_model, example)
    start = time.perf_counter()
    onnx_path = export_onnx(cpu_model, example, out / f"{name}.onnx", fold=not fake_quantised)
    timings["export_s"] = time.perf_counter() - start
    deployed = onnx_path
    in_float: list[str] = []
    if int8:
        start = time.perf_counter()
        q = config.quantize
        options = int8 if isinstance(int8, Int8Options) else None
        if q.max_drop is None:
            calibration, _ = arrays(splits.train, q.calibration_images)
            deployed = quantize(onnx_path, out / f"{name}_int8.xml", calibration,
                                options=options)
        else:  # control images follow the calibration ones: none is both
            images, labels = arrays(splits.train, q.calibration_images + q.control_images)
            deployed, in_float = quantize_controlled(
                onnx_path, out / f"{name}_int8.xml", images[:q.calibration_images],
                (images[q.calibration_images:], labels[q.calibration_images:]), q.max_drop,
                options)
        timings["quantize_s"] = time.perf_counter() - start
    start = time.perf_counter()
    checks = verify(weight_stats(cpu_model), baseline_shapes, onnx_path, deployed)
    top1, top5 = deployed_accuracy(deployed, test, config.bench)
    timings["verify_eval_s"] = time.perf_counter() - start
    return Artifact(onnx_path, deployed, top1, top5, macs, n_params, checks, timings,
                    config.bench.precision, float_layers=in_float)


def deploy_graph(model: nn.Module, int8: bool, image_size: int, out: Path,
                 calibration: np.ndarray) -> Path:
    """The graph the device will run, before fine-tuning, for a latency measurement:
    fine-tuning changes weights, not latency. int8 is calibrated on the few ``calibration``
    images without bias correction (the graph NNCF writes depends on neither); nothing is
    verified or evaluated."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    onnx_path = export_onnx(cpu_model, torch.zeros(1, 3, image_size, image_size),
                            out / "probe.onnx")
    if not int8:
        return onnx_path
    return quantize(onnx_path, out / "probe_int8.xml", calibration, bias_correction=False)


def verdict(checks: list[LayerCheck], removes_structures: bool,
            zeroes_weights: bool) -> dict[str, Any]:
    """Did the compression reach the deployed model, and is the model physically smaller?

    ``removes_structures`` / ``zeroes_weights``: whether the compression asked for either, so the
    notes can say when the deployed model shows none of it.
    """
    unreached = [c.layer for c in checks if not c.reached]
    smaller = [c.layer for c in checks if c.openvino_shape is not None
               and np.prod(c.openvino_shape) < np.prod(c.baseline_shape)]
    sparse = [c.layer for c in checks if (c.openvino_sparsity or 0) >= 1.0]
    notes = []
    if unreached:
        notes.append(f"compression did NOT reach the deployed model in {len(unreached)} "
                     f"layer(s): {', '.join(unreached[:5])}")
    if removes_structures and not smaller:
        notes.append("structured pruning removed nothing from the deployed model: no filter "
                     "or channel was zero everywhere it is used")
    if smaller:
        notes.append(f"{len(smaller)} layer(s) physically smaller in the deployed model: "
                     f"{', '.join(smaller[:5])}{' ...' if len(smaller) > 5 else ''}")
    if zeroes_weights and sparse and not smaller:
        notes.append("zeros are present in ONNX and OpenVINO but tensors stay dense: the same "
                     "dense kernels run, so fine-grained sparsity alone does not cut latency")
    return {"reached": not unreached, "unreached_layers": unreached,
            "smaller_layers": len(smaller), "sparse_layers": len(sparse), "notes": notes}
