"""One trial's compression: planned once on the baseline model, then carried out.

:func:`plan_compression` turns a :class:`~edge_tune.search.params.Schedule` into each conv's
filter ratio and the Distiller-style recipe that carries it out (pruning keeps the layers'
names, so the plan holds for the pruned model too). :func:`compress` runs that recipe on a
model (filters masked by L1 rank and removed at epoch 0, BatchNorm statistics re-estimated,
then fine-tuning with the masks held); :func:`build` also deploys the result.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from edge_tune.catalog.models import model_stages
from edge_tune.catalog.splits import Splits
from edge_tune.compression.allocation import Allocation, Allocator
from edge_tune.compression.deployment import Artifact, Images, deploy
from edge_tune.compression.distill import Teacher
from edge_tune.compression.layers import aligned_ratios, filter_ratios, fine_layers, widths
from edge_tune.compression.recipe import Recipe, recipe_from_dict
from edge_tune.compression.runner import EpochHook, RecipeRun, fit_recipe
from edge_tune.config import Config
from edge_tune.core.console import log_stderr
from edge_tune.search.params import Schedule

Log = Callable[[str], None]


@dataclass(frozen=True)
class CompressionPlan:
    """A schedule worked out for one model: each conv's filter ratio and the recipe."""

    schedule: Schedule
    ratios: dict[str, float]  # conv -> fraction of its filters removed
    recipe: dict[str, Any]  # Distiller-style, ``module.``-prefixed weight names
    loaded: Recipe  # the same, validated: what the runner runs
    left_whole: dict[str, str] = field(default_factory=dict)  # conv -> why (channel multiple)
    allocation: Allocation | None = None  # per group, when the schedule has a latency target

    @property
    def finetunes(self) -> bool:
        """Whether the schedule removes or zeroes anything (else it fine-tunes nothing)."""
        return self.schedule.prunes_filters or self.schedule.fine_sparsity > 0

    def write(self, path: Path) -> Path:
        """The recipe as a YAML file a person can read and rerun."""
        epochs = self.schedule.finetune_epochs
        kd = " --kd-teacher baseline" if self.schedule.distill else ""
        header = (f"# edge_tune trial {json.dumps(self.schedule.params)}: pruning and thinning "
                  f"at epoch 0, then {epochs} fine-tuning epochs"
                  f"{' distilled from the baseline' if kd else ''}. Rerun:\n# python -m "
                  f"edge_tune.compress --recipe {path.name} --config config.yaml "
                  f"--recipe-epochs {max(1, epochs)} --epochs {epochs}{kd}\n")
        path.write_text(header + yaml.safe_dump(self.recipe, sort_keys=False))
        return path


def plan_compression(schedule: Schedule, model: nn.Module, config: Config,
                     allocator: Allocator | None = None) -> CompressionPlan:
    """``schedule`` worked out for ``model`` (the configured model's stages), the filters each
    conv keeps rounded to ``prune.channel_multiple`` (an integer by now: ``auto`` is measured
    and replaced before trials plan); with a latency target, allocated per group by
    ``allocator`` (prepared before trials: the device's profile and the groups' sensitivity)."""
    multiple = config.prune.channel_multiple
    if not isinstance(multiple, int):
        raise ValueError(f"prune.channel_multiple {multiple!r} was not resolved to a number")
    if schedule.latency_target is not None:
        if allocator is None:
            raise ValueError("a latency target needs the device's profile, prepared before "
                             "trials (edge_tune.run.allocating)")
        allocation = allocator.allocate(schedule.latency_target, schedule.int8,
                                        schedule.by_device, multiple)
        return allocated_plan(schedule, allocation, allocator, model, config)
    ratios, whole = aligned_ratios(
        filter_ratios(model, model_stages(config.model), schedule.filter_ratios),
        widths(model), multiple)
    recipe = schedule.to_recipe(ratios, fine_layers(model), config.model, config.data.name)
    return CompressionPlan(schedule, ratios, recipe, recipe_from_dict(recipe), whole)


def in_float(plan: CompressionPlan) -> CompressionPlan:
    """The same plan without int8: the graph it removes filters from, deployed in float."""
    schedule = dataclasses.replace(plan.schedule, int8=False)
    recipe = {k: v for k, v in plan.recipe.items() if k != "quantizers"}
    return dataclasses.replace(plan, schedule=schedule, recipe=recipe,
                               loaded=recipe_from_dict(recipe))


def allocated_plan(schedule: Schedule, allocation: Allocation, allocator: Allocator,
                   model: nn.Module, config: Config) -> CompressionPlan:
    """The plan that keeps ``allocation``'s filters in every group."""
    ratios = allocator.ratios(allocation)
    recipe = schedule.to_recipe(ratios, fine_layers(model), config.model, config.data.name)
    return CompressionPlan(schedule, ratios, recipe, recipe_from_dict(recipe), {}, allocation)


def compress(model: nn.Module, plan: CompressionPlan, splits: Splits, config: Config,
             log: Log = log_stderr, after_epoch: EpochHook | None = None,
             finetune: bool = True, teacher: Teacher | None = None) -> RecipeRun:
    """Run the plan's recipe on ``model`` in place; ``finetune=False``: the epoch-0 actions
    only (filters removed; BatchNorm not re-estimated: the latency probe needs the graph's
    shapes, not its accuracy); a ``teacher``: fine-tuning distils from it when the schedule
    asks to."""
    epochs = plan.schedule.finetune_epochs if plan.finetunes and finetune else 0
    if epochs:
        log(f"fine-tuning {epochs} epochs" + (" distilling" if plan.schedule.distill else ""))
    return fit_recipe(model, plan.loaded, splits, config, epochs, log, after_epoch=after_epoch,
                      teacher=teacher if plan.schedule.distill else None, recalibrate=finetune)


def build(model: nn.Module, plan: CompressionPlan, splits: Splits, config: Config, out: Path,
          baseline_shapes: dict[str, tuple[int, ...]], test: Images, name: str = "model",
          log: Log = log_stderr, after_epoch: EpochHook | None = None,
          teacher: Teacher | None = None) -> Artifact:
    """Compress (in place), export, quantise and verify ``model``; accuracy as deployed."""
    start = time.perf_counter()
    run = compress(model, plan, splits, config, log, after_epoch, teacher=teacher)
    artifact = deploy(model, plan.schedule.int8, splits, config, out, baseline_shapes, test,
                      name, {"compress_s": time.perf_counter() - start})
    artifact.thinned = run.thinned
    artifact.skipped = {**plan.left_whole,
                        **skipped_layers(model, baseline_shapes, plan, run.skipped)}
    return artifact


def skipped_layers(model: nn.Module, baseline_shapes: dict[str, tuple[int, ...]],
                   plan: CompressionPlan, why: dict[str, str]) -> dict[str, str]:
    """Convs the plan asked to lose filters that kept them all, and why (left whole)."""
    modules = dict(model.named_modules())
    return {name: why.get(name, "its filters are tied to a layer that keeps them")
            for name, ratio in plan.ratios.items()
            if round(ratio * baseline_shapes[f"{name}.weight"][0]) > 0
            and modules[name].weight.shape[0] == baseline_shapes[f"{name}.weight"][0]}
