"""What per-layer allocation needs, prepared once per run before any trial plans: the model's
groups, the device's profile of it (cached; measured at the benchmark actor, or on this
machine for a one-trial command) and each group's sensitivity (measured on validation images
here). A latency target the profile says cannot be reached is refused in one line."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from edge_tune.catalog.splits import Splits
from edge_tune.compression.allocation import Allocator
from edge_tune.compression.baseline import cache_dir
from edge_tune.compression.groups import structure
from edge_tune.compression.profile import cached_profile, measure_profile, profile_key
from edge_tune.compression.sensitivity import Sensitivity, cached_sensitivity
from edge_tune.config import Config
from edge_tune.core.console import log_stderr
from edge_tune.core.errors import UserError
from edge_tune.edge import bench

Log = Callable[[str], None]


def profile_settings(settings: bench.BenchSettings) -> bench.BenchSettings:
    """The profile's measurement: the configured settings, one session, no throughput."""
    return dataclasses.replace(settings, fps_seconds=0.0, max_sessions=1)


def prepare_allocator(config: Config, model: nn.Module, splits: Splits,
                      identity: dict[str, str], measure: bench.Measure, lowest: float,
                      int8_choices: tuple[bool, ...], key: str,
                      log: Log = log_stderr) -> Allocator:
    """The groups of ``model`` (the baseline), the device's profile of it and the groups'
    sensitivity; a target of ``lowest`` (``key``: where it was asked for, with int8 on or off
    as ``int8_choices`` allow) that the profile says no allocation reaches is refused."""
    multiple = config.prune.channel_multiple
    if not isinstance(multiple, int):
        raise ValueError(f"prune.channel_multiple {multiple!r} was not resolved to a number")
    example = torch.zeros(1, 3, config.data.image_size, config.data.image_size)
    shape = structure(model, example)
    if not shape.groups:
        raise UserError(f"params.latency_target: torch-pruning finds no group of filters in "
                        f"{config.model} to allocate; use filter_ratio (uniform)")
    cached_as = profile_key(config, identity, splits.num_classes)
    folder = cache_dir(config).parent / "profiles"
    cached = (folder / f"{cached_as}.json").is_file()
    log(f"device profile: {'cached' if cached else 'measuring'} {cached_as} "
        f"({len(shape.groups)} groups of filters)")
    profile = cached_profile(folder, cached_as,
                             lambda: measure_profile(model, config, identity, measure))
    # refused before the sensitivity's minutes: reachability is the profile's alone
    check_reachable(Allocator(shape, profile, Sensitivity(0.0, {})), lowest, int8_choices,
                    multiple, key)
    sensitivity = cached_sensitivity(cache_dir(config).parent / "sensitivity", model, shape,
                                     splits, config, log)
    return Allocator(shape, profile, sensitivity)


def check_reachable(allocator: Allocator, lowest: float, int8_choices: tuple[bool, ...],
                    multiple: int, key: str) -> None:
    """A target of ``lowest`` the profile says no allocation reaches is a UserError naming
    ``key`` and the fastest ratio it can reach."""
    fastest, int8 = min((allocator.fastest(int8, multiple), int8) for int8 in int8_choices)
    if lowest < fastest:
        device = allocator.profile.identity.get("device_name", "this device")
        raise UserError(f"{key}: {lowest:g} cannot be reached on {device}: its profile "
                        f"predicts at best {fastest:.3f} (every group at its floor"
                        f"{', int8' if int8 else ', float'})")
