"""How much accuracy each group of filters carries, measured cheaply on validation images:
each group alone loses :data:`LEVELS` of its filters (L1-ranked and removed, as a trial
removes them, BatchNorm statistics re-estimated, no fine-tuning) and the baseline's torch top-1
on :data:`IMAGES` validation images is measured again. Per-layer allocation takes filters
first where the device saves the most time per point of accuracy lost."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge_tune.catalog.splits import Splits, take
from edge_tune.compression.groups import Structure
from edge_tune.compression.runner import apply_recipe
from edge_tune.compression.train import evaluate, recalibrate_batchnorm
from edge_tune.config import Config
from edge_tune.core.files import write_atomic
from edge_tune.search.params import Schedule

LEVELS = (0.25, 0.5, 0.75)  # fraction of a group's filters removed, one measurement each
IMAGES = 512  # validation images per measurement (torch, f32)
RECALIBRATION = 512  # training images that re-estimate BatchNorm after each removal


@dataclass(frozen=True)
class Sensitivity:
    """Points of top-1 each group loses with a fraction of its filters removed."""

    top1: float  # the baseline's, on the same images
    drops: dict[str, list[tuple[float, float]]]  # group -> (removed fraction, points lost)

    def drop(self, group: str, removed: float) -> float:
        """Points lost with ``removed`` (0..1) of ``group``'s filters gone: linear between
        the measured levels from 0 at 0, the last slope beyond them, never negative."""
        points = [(0.0, 0.0), *self.drops.get(group, [])]
        if len(points) == 1:
            return 0.0  # not measured: a group the model cannot lose filters from
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if removed <= x1:
                return max(0.0, y0 + (y1 - y0) * (removed - x0) / (x1 - x0))
        (x0, y0), (x1, y1) = points[-2], points[-1]
        return max(0.0, y1 + (y1 - y0) / (x1 - x0) * (removed - x1))


def measure_sensitivity(model: nn.Module, shape: Structure, splits: Splits, config: Config,
                        log: Callable[[str], None] = lambda _: None) -> Sensitivity:
    """Each group of ``shape`` alone at every level of :data:`LEVELS` (see the module
    docstring)."""
    val = take(splits.val, IMAGES)
    top1 = evaluate(model, val)[0]
    example = torch.zeros(1, 3, config.data.image_size, config.data.image_size)
    drops: dict[str, list[tuple[float, float]]] = {}
    for i, group in enumerate(shape.groups, 1):
        for level in LEVELS:
            pruned = copy.deepcopy(model)
            recipe = Schedule().to_recipe({c: level for c in group.convs}, [], config.model,
                                          config.data.name)
            apply_recipe(pruned, recipe, example)
            recalibrate_batchnorm(pruned, splits.train, RECALIBRATION)
            drops.setdefault(group.name, []).append((level, top1 - evaluate(pruned, val)[0]))
        log(f"sensitivity {i}/{len(shape.groups)}: {group.name} "
            + ", ".join(f"{lv:.0%} -{d:.1f}" for lv, d in drops[group.name]))
    return Sensitivity(top1, drops)


def sensitivity_key(model: nn.Module, config: Config) -> str:
    """What the measurement depends on: the weights, the data (its split and size), the
    model's name and this module's levels and image counts."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps({"model": config.model, "data": dataclasses.asdict(config.data),
                              "levels": LEVELS, "images": IMAGES,
                              "recalibration": RECALIBRATION}, sort_keys=True).encode())
    return f"{config.model.rsplit('/', 1)[-1].replace(':', '_')}-{digest.hexdigest()[:12]}"


def cached_sensitivity(folder: Path, model: nn.Module, shape: Structure, splits: Splits,
                       config: Config, log: Callable[[str], None] = lambda _: None
                       ) -> Sensitivity:
    """:func:`measure_sensitivity`, cached under ``folder`` by :func:`sensitivity_key` (the
    same baseline and data: a re-run, another arm of a comparison, takes it from there)."""
    path = folder / f"{sensitivity_key(model, config)}.json"
    if path.is_file():
        raw = json.loads(path.read_text())
        log(f"sensitivity: cached {path.stem}")
        return Sensitivity(raw["top1"], {g: [(float(a), float(b)) for a, b in points]
                                         for g, points in raw["drops"].items()})
    log("sensitivity: each group alone at 25/50/75% of its filters removed")
    measured = measure_sensitivity(model, shape, splits, config)
    write_atomic(path, json.dumps(dataclasses.asdict(measured), indent=1))
    return measured
