"""Channel counts the device likes: kept filters rounded to a multiple, the multiple measured
on the device (``auto``), a multiple no layer can take refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from edge_tune.catalog.models import create_model
from edge_tune.compression.channels import PROBE_WIDTH, pick_multiple, resolve_multiple
from edge_tune.compression.layers import aligned_ratios, check_multiple
from edge_tune.compression.plan import plan_compression
from edge_tune.compression.runner import apply_recipe
from edge_tune.config import config_from_dict
from edge_tune.core.errors import UserError
from edge_tune.search.params import schedule_from_params


def test_kept_filters_are_the_nearest_multiple() -> None:
    width = {"a": 64, "b": 32, "c": 16, "d": 12, "e": 64}
    ratios = {"a": 0.3, "b": 0.5, "c": 0.5, "d": 0.5, "e": 0.0}
    aligned, whole = aligned_ratios(ratios, width, 16)
    kept = {n: width[n] - round(r * width[n]) for n, r in aligned.items()}
    # 64 -> 45 kept -> 48; 32 -> 16; 16 -> 8 -> at least one multiple: 16 (whole); 12 < 16
    assert kept == {"a": 48, "b": 16, "c": 16, "d": 12, "e": 64}
    assert set(whole) == {"d"} and "narrower than the channel multiple 16" in whole["d"]
    assert aligned_ratios(ratios, width, 1) == (ratios, {})  # 1: as the ratios give them


def test_a_plan_keeps_multiples_and_the_pruned_model_has_them() -> None:
    config = config_from_dict({"model": "resnet20_cifar", "prune": {"channel_multiple": 8}})
    model = create_model("resnet20_cifar", 10).eval()
    for ratio in (0.1, 0.3, 0.45, 0.6):
        plan = plan_compression(schedule_from_params({"filter_ratio": ratio}, (), 0),
                                create_model("resnet20_cifar", 10), config)
        pruned = create_model("resnet20_cifar", 10).eval()
        pruned.load_state_dict(model.state_dict())
        apply_recipe(pruned, plan.recipe, torch.zeros(1, 3, 32, 32))
        convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(c.out_channels % 8 == 0 for c in convs), ratio
    assert plan.left_whole == {}


def test_a_multiple_wider_than_every_layer_is_refused() -> None:
    model = create_model("simple_cnn", 10)
    check_multiple(model, 64, "simple_cnn")  # the widest conv has 64 filters
    with pytest.raises(UserError, match=r"^prune.channel_multiple: 128 is wider than every "
                                        r"conv filter pruning may cut in simple_cnn \(the "
                                        r"widest has 64 filters\)$"):
        check_multiple(model, 128, "simple_cnn")


def _steps(period: int, jump: float) -> dict[int, float]:
    """Latency growing with channels, jumping by ``jump`` after every multiple of period."""
    return {c: 0.01 * c * jump ** ((c - 1) // period) for c in range(1, PROBE_WIDTH + 1)}


@pytest.mark.parametrize(("period", "expected"), [(16, 16), (8, 8), (32, 32)])
def test_auto_finds_the_period_of_the_steps(period: int, expected: int) -> None:
    chosen = pick_multiple(_steps(period, 1.5))
    assert chosen.multiple == expected and chosen.jumps[expected] > 1.3


def test_a_smooth_device_gets_no_rounding() -> None:
    assert pick_multiple(_steps(16, 1.0)).multiple == 1


def test_auto_is_measured_once_and_recorded(tmp_path: Path) -> None:
    config = config_from_dict({"prune": {"channel_multiple": "auto"}, "data": {"image_size": 8}})
    seen: list[dict[str, Path]] = []

    def measure(paths: dict[str, Path]) -> dict[str, tuple[float, list]]:
        seen.append(dict(paths))
        assert all(p.is_file() for p in paths.values())
        return {k: (v, []) for k, v in zip(paths, _steps(16, 1.6).values(), strict=True)}

    resolved, measured = resolve_multiple(config, measure)
    assert resolved.prune.channel_multiple == 16 and measured is not None
    assert len(seen) == 1 and sorted(map(int, seen[0])) == list(range(1, PROBE_WIDTH + 1))
    assert not any(p.exists() for p in seen[0].values())  # the probe's files are gone
    fixed = dataclasses.replace(config, prune=dataclasses.replace(config.prune,
                                                                  channel_multiple=4))
    assert resolve_multiple(fixed, measure) == (fixed, None)
