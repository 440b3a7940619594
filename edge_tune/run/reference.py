"""The run's reference: the baseline in int8, nothing removed and not fine-tuned.

It costs one int8 conversion, one accuracy as deployed and one benchmark call (about 5 s for
ResNet-20), and it is often the answer: on Fashion-MNIST ResNet-20 it ran 4.00x at -0.02
points (BENCHMARKS.md), where trials that removed filters and fine-tuned on 2,000 images with
labels only stayed under 3.8x within a point. Measured before the trials when the space can
choose int8 (``tune.reference: false`` skips it); within the threshold, it is the ratio every
trial must beat (EarlyStop stops slower ones before fine-tuning) and the closing table says
whether any did. Where it runs slower than the baseline in float, int8 is taken out of the
space (:func:`float_only`; ``quantize.keep_slower_int8: true`` keeps it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_tune.catalog.splits import Splits
from edge_tune.compression.baseline import Baseline
from edge_tune.compression.deployment import Images, deploy, deployed_accuracy
from edge_tune.config import Config
from edge_tune.edge.actor import BenchCall, ModelFiles, model_files
from edge_tune.search.space import SearchSpace, drop_param, int8_choices, without

FOLDER = "reference"  # in the run directory: model.onnx, model_int8.xml/.bin


@dataclass(frozen=True)
class Reference:
    """The baseline in int8 as the device runs it."""

    val_top1: float  # percent, as deployed
    test_top1: float  # percent, measured once (reported, never chosen on)
    latency_ms: float  # median, batch 1, the session's baseline interleaved
    baseline_latency_ms: float
    speedup: float  # baseline latency / the reference's, same session
    feasible: bool  # val_top1 within the run's threshold
    macs: int
    folder: str

    @property
    def to_beat(self) -> bool:
        """Within the threshold and faster than the baseline: an answer trials must beat."""
        return self.feasible and self.speedup > 1.0

    @property
    def int8_slower(self) -> bool:
        """int8 ran slower than float on the baseline's graph on this device (MobileNetV2's
        depthwise convolutions on this CPU: 0.94-0.98x over four runs)."""
        return self.speedup < 1.0

    @property
    def ratio(self) -> float:
        """Its latency over the baseline's (the searcher's objective, lower is better)."""
        return 1.0 / self.speedup

    def line(self, stopping: bool = True) -> str:
        """The console's line about it; ``stopping``: trials slower than it stop early
        (``tune.early_stop``)."""
        verdict = ("within the threshold: " + (
            "trials no faster than it stop before fine-tuning" if stopping
            else "the answer trials must beat (tune.early_stop is off: slower ones run on)")
            if self.to_beat else "under the threshold" if not self.feasible
            else "slower than the baseline in float on this device")
        return (f"reference: the baseline in int8 (nothing removed, not fine-tuned) -> "
                f"validation top-1 {self.val_top1:.2f}%, {self.latency_ms:.3f} ms, "
                f"{self.speedup:.2f}x; {verdict} ({self.folder}/)")

    def front_entry(self) -> dict[str, Any]:
        """The reference as an entry of pareto.json (edge_tune.run.front)."""
        return {"id": FOLDER, "params": {}, "shown": "the baseline in int8, not fine-tuned",
                "speedup": self.speedup, "val_top1": self.val_top1,
                "latency_ms": self.latency_ms, "macs": self.macs, "int8": True,
                "feasible": self.feasible, "files": self.folder}

    def numbers(self) -> dict[str, float]:
        """Its figures, for W&B: top-1 (%), latency (ms), speed-up, MACs, feasible (0/1), and
        latency_ratio under the name trials log it."""
        return {**{key: float(value) for key, value in asdict(self).items()
                   if isinstance(value, (int, float))}, "latency_ratio": self.ratio}

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "to_beat": self.to_beat}


def float_only(config: Config, space: SearchSpace,
               reference: Reference) -> tuple[Config, SearchSpace] | None:
    """Where the reference ran slower than the baseline in float and the space chooses
    between int8 and float: the config and space without int8 (trials run in float; int8
    trials would be deployed in float anyway, on filters allocated for int8's profile). None
    otherwise, or when ``quantize.keep_slower_int8`` keeps it."""
    if not reference.int8_slower or config.quantize.keep_slower_int8 \
            or int8_choices(space) != (False, True) or len(space.bounds) == 1:
        return None  # nothing to choose, or nothing left to search without int8
    points = drop_param(config.tune.points_to_evaluate, "int8")
    return (dataclasses.replace(config, tune=dataclasses.replace(
        config.tune, points_to_evaluate=points)), without(space, "int8"))


def wanted(config: Config, space: SearchSpace) -> bool:
    """Measure it: ``tune.reference`` is on and the space can choose int8."""
    return config.tune.reference and True in int8_choices(space)


def measure_reference(base: Baseline, splits: Splits, config: Config, val: Images,
                      test: Images, measure: Callable[[dict[str, ModelFiles]], BenchCall],
                      threshold_top1: float, out: Path) -> Reference:
    """The baseline converted to int8 as a trial's model would be, its accuracy as deployed
    (validation, and test once) and one benchmark call against the baseline (``measure``:
    the run's watched call, see :func:`edge_tune.run.device_call.call_device`)."""
    folder = out / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    artifact = deploy(base.model, True, splits, config, folder, base.shapes, val)
    call = measure({"reference": model_files(artifact.deployed)})
    measured = call.models["reference"]
    return Reference(
        val_top1=artifact.top1, test_top1=deployed_accuracy(artifact.deployed, test,
                                                            config.bench)[0],
        latency_ms=measured.latency_ms, baseline_latency_ms=call.baseline.latency_ms,
        speedup=call.speedup("reference"), feasible=artifact.top1 >= threshold_top1,
        macs=artifact.macs, folder=FOLDER)
