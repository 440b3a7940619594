"""What every tuner trial or study method needs from the driver, shipped once through Ray's
object store: the config and the baseline it starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edge_tune.catalog.models import create_model
from edge_tune.compression.allocation import Allocator
from edge_tune.compression.baseline import Baseline
from edge_tune.config import Config


@dataclass(frozen=True)
class TrialContext:
    """The driver's side of a trial: config, baseline weights and figures, benchmark actors."""

    config: Config
    base_state: dict[str, torch.Tensor]  # baseline state_dict (CPU tensors)
    base_shapes: dict[str, tuple[int, ...]]  # weight name -> shape, for verification
    baseline_top1: float  # percent, as deployed (validation of trials is against it)
    threshold_top1: float  # percent a trial must reach to be feasible
    actors: tuple[str, ...] = ()  # benchmark actor names, one per ncs node
    bench_baseline: tuple[Any, ...] = ()  # (ObjectRef of the baseline's files,) for the actors
    allocator: Allocator | None = None  # per-layer allocation (a latency target in the space)
    call_limit_s: float = 0.0  # s a benchmark call may hold the device (0: no limit)
    actor_where: tuple[str, ...] = ()  # each actor's node (host and address), for messages
    # node id -> cores its benchmark actor keeps to itself (trials running there keep off)
    reserved_cores: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Config, base: Baseline, threshold_top1: float,
           actors: tuple[str, ...] = (), bench_baseline: tuple[Any, ...] = (),
           allocator: Allocator | None = None, call_limit_s: float = 0.0,
           actor_where: tuple[str, ...] = (),
           reserved_cores: dict[str, tuple[int, ...]] | None = None) -> TrialContext:
        return cls(config, base.state(), base.shapes, base.artifact.top1, threshold_top1,
                   actors, bench_baseline, allocator, call_limit_s, actor_where,
                   reserved_cores or {})

    def base_model(self, num_classes: int) -> nn.Module:
        """A fresh copy of the baseline, on the GPU when the trial asked for one and its node
        has one (the one Ray gave it)."""
        model = create_model(self.config.model, num_classes)
        model.load_state_dict(self.base_state)
        if self.config.tune.trial_gpus > 0 and torch.cuda.is_available():
            model.cuda()
        return model
