"""Contract over every registered Distiller pruner class, plus the layer choices the tuner's
recipes use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from edge_tune.catalog.models import create_model, model_stages
from edge_tune.compression.classes import CLASSES
from edge_tune.compression.layers import filter_ratios, fine_layers
from edge_tune.compression.recipe import recipe_from_dict
from edge_tune.compression.runner import RecipeRun, apply_recipe
from edge_tune.compression.structures import weakest

EXAMPLE = torch.zeros(1, 3, 32, 32)
TARGET = "layer3.1.conv1.weight"  # not tied by a residual add: one layer, one ratio


@dataclass(frozen=True)
class Case:
    """Arguments naming TARGET, the level the runner passes, the zero fraction expected."""

    args: dict[str, Any]
    level: float
    zeros: float
    tolerance: float = 0.01
    by_magnitude: bool = False  # fine-grained: the smallest magnitudes go first
    repeats: bool = True  # the same masks when asked twice (random pruners draw anew)


# kaiming-normal weights: |w| <= 0.5 std is 38% of them, |w| < mean |w| 58%
CASES: dict[str, Case] = {
    "SparsityLevelParameterPruner": Case({"levels": {TARGET: 0.6}}, 0.0, 0.6, by_magnitude=True),
    "MagnitudeParameterPruner": Case({"thresholds": {TARGET: 0.0}}, 0.0, 0.0, by_magnitude=True),
    "AutomatedGradualPruner": Case({"weights": [TARGET]}, 0.4, 0.4, by_magnitude=True),
    "SensitivityPruner": Case({"sensitivities": {TARGET: 0.5}}, 0.0, 0.38, 0.03,
                              by_magnitude=True),
    "SplicingPruner": Case({"sensitivities": {TARGET: 0.0}, "low_thresh_mult": 1.0,
                            "hi_thresh_mult": 1.0}, 0.0, 0.58, 0.03, by_magnitude=True),
    "L1RankedStructureParameterPruner": Case({"weights": [TARGET], "group_type": "Filters"},
                                             0.25, 0.25),
    "L1RankedStructureParameterPruner_AGP": Case({"weights": [TARGET],
                                                  "group_type": "Channels"}, 0.5, 0.5),
    "ActivationAPoZRankedFilterPruner": Case({"weights": [TARGET], "group_type": "Filters"},
                                             0.25, 0.25),
    "ActivationAPoZRankedFilterPruner_AGP": Case({"weights": [TARGET],
                                                  "group_type": "Filters"}, 0.5, 0.5),
    "RandomLevelStructureParameterPruner": Case(
        {"weights": [TARGET], "group_type": "Filters", "sparsity_range": (0.25, 0.5)}, 0.0,
        0.375, 0.13, repeats=False),
    "BernoulliFilterPruner": Case({"weights": [TARGET], "group_type": "Filters"}, 0.5, 0.5,
                                  0.2, repeats=False),
    "BernoulliFilterPruner_AGP": Case({"weights": [TARGET], "group_type": "Filters"}, 0.25,
                                      0.25, 0.2, repeats=False),
}


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def _context(model: nn.Module) -> RecipeRun:
    """The recipe runner as the pruners' context, over 64 random training images."""
    data = TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    return RecipeRun(model, EXAMPLE, recipe_from_dict({}), lambda _: None, dataset=data)


PRUNERS = {name: spec.pruner for name, spec in CLASSES.items() if spec.pruner is not None}
STAGES = model_stages("resnet20_cifar")


def test_every_pruner_class_has_a_pruner_and_a_case() -> None:
    assert set(PRUNERS) == {c for c, s in CLASSES.items() if s.section == "pruners"}
    assert set(CASES) == set(PRUNERS)  # a new pruner needs a case below


@pytest.mark.parametrize("cls", sorted(PRUNERS))
def test_pruner_contract(cls: str) -> None:
    """Every pruner: 0/1 masks of the weight's shape for the named weight only, at the level."""
    torch.manual_seed(0)
    model = create_model("resnet20_cifar", 10).eval()
    weights = _weights(model)
    case = CASES[cls]
    ctx = _context(model)
    masks = PRUNERS[cls].masks(weights, case.args, case.level, ctx)
    assert set(masks) == {TARGET}
    mask = masks[TARGET]
    assert mask.shape == weights[TARGET].shape
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert float((mask == 0).float().mean()) == pytest.approx(case.zeros, abs=case.tolerance)
    kept = weights[TARGET].abs()[mask == 1]
    dropped = weights[TARGET].abs()[mask == 0]
    if dropped.numel() and case.by_magnitude:
        assert float(dropped.max()) <= float(kept.min())
    if not case.by_magnitude:  # structured: whole filters (dim 0) or input channels (dim 1)
        per_filter = (mask == 0).flatten(1).float().mean(1)
        per_channel = (mask == 0).transpose(0, 1).flatten(1).float().mean(1)
        assert set(per_filter.tolist()) <= {0.0, 1.0} or set(per_channel.tolist()) <= {0.0, 1.0}
    again = PRUNERS[cls].masks(weights, case.args, case.level, ctx)
    assert torch.equal(again[TARGET], mask) == case.repeats


def test_magnitude_threshold_zeroes_what_is_below_it() -> None:
    model = create_model("resnet20_cifar", 10)
    weights = _weights(model)
    masks = PRUNERS["MagnitudeParameterPruner"].masks(
        weights, {"thresholds": {TARGET: 0.05}}, 0.0, _context(model))
    assert torch.equal(masks[TARGET], (weights[TARGET].abs() > 0.05).float())


def _tuner_recipe(model: nn.Module, ratios: dict[str, float]) -> dict[str, Any]:
    return {"pruners": {"f": {"class": "L1RankedStructureParameterPruner",
                              "group_type": "Filters", "desired_sparsity": 0.5,
                              "weights": [f"{n}.weight" for n, r in ratios.items() if r]}},
            "extensions": {"t": {"class": "FilterRemover"}},
            "policies": [{"pruner": {"instance_name": "f"}, "epochs": [0]},
                         {"extension": {"instance_name": "t"}, "epochs": [0]}]}


def test_filter_pruning_and_thinning_keep_residual_groups_consistent() -> None:
    from edge_tune.search.params import schedule_from_params

    model = create_model("resnet20_cifar", 10).eval()
    schedule = schedule_from_params({"filter_ratio": 0.5}, STAGES, 0)
    ratios = filter_ratios(model, STAGES, schedule.filter_ratios)
    assert set(ratios.values()) == {0.5} and "conv1" in ratios
    run: RecipeRun = apply_recipe(model, _tuner_recipe(model, ratios), EXAMPLE)
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules()
              if isinstance(m, nn.Conv2d | nn.Linear)}
    assert shapes["conv1"][0] == 8  # the stem feeds layer1's residual stream
    assert {shapes[f"layer1.{b}.conv2"][0] for b in range(3)} == {8}
    assert shapes["layer2.0.downsample.0"] == (16, 8, 1, 1)
    assert shapes["layer3.1.conv1"] == (32, 32, 3, 3)
    assert shapes["fc"] == (10, 32)  # the classifier's inputs follow, its outputs stay
    assert sum(run.thinned["t"].values()) > 0
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_stage_ratios_and_fine_layers() -> None:
    from edge_tune.search.params import schedule_from_params

    model = create_model("resnet20_cifar", 10)
    schedule = schedule_from_params({"filter_ratio_layer1": 0.5, "filter_ratio_layer3": 0.75},
                                    STAGES, 0)
    ratios = filter_ratios(model, STAGES, schedule.filter_ratios)
    assert ratios["conv1"] == ratios["layer1.2.conv2"] == 0.5
    assert ratios["layer2.0.downsample.0"] == 0.0 and ratios["layer3.0.conv1"] == 0.75
    layers = fine_layers(model)
    assert "conv1" not in layers and "layer1.0.conv1" in layers and len(layers) == 20
    assert recipe_from_dict(_tuner_recipe(model, ratios)).policies


def test_weakest_cuts_the_same_positions_in_every_channel_group() -> None:
    scores = torch.tensor([5.0, 1.0, 4.0, 2.0, 6.0, 0.0, 4.0, 3.0])  # 2 groups of 4
    assert sorted(weakest(scores, 0.25).tolist()) == [1, 5]
    # per position summed over the groups: 11, 1, 8, 5 -> positions 1 and 3 in both groups
    assert sorted(weakest(scores, 0.5, channel_groups=2).tolist()) == [1, 3, 5, 7]


def test_leader_channels_cut_one_residual_stream_everywhere() -> None:
    """Distiller's ResNet-56 channel ranking: every reader of layer1's stream loses the
    leader's weakest channels, so thinning removes them with the convs that write them."""
    model = create_model("resnet20_cifar", 10).eval()
    readers = ["layer1.1.conv1.weight", "layer1.0.conv1.weight", "layer1.2.conv1.weight",
               "layer2.0.conv1.weight", "layer2.0.downsample.0.weight"]
    run = apply_recipe(model, {
        "pruners": {"p": {"class": "L1RankedStructureParameterPruner", "group_type": "Channels",
                          "desired_sparsity": 0.5, "group_dependency": "Leader",
                          "weights": readers}},
        "extensions": {"t": {"class": "StructureRemover"}},
        "policies": [{"pruner": {"instance_name": "p"}, "epochs": [0]},
                     {"extension": {"instance_name": "t"}, "epochs": [0]}]}, EXAMPLE)
    assert model.conv1.weight.shape[0] == 8  # the stream's writers lose the same 8 channels
    assert {model.layer1[b].conv2.weight.shape[0] for b in range(3)} == {8}
    assert {dict(model.named_parameters())[w].shape[1] for w in readers} == {8}
    assert sum(run.thinned["t"].values()) > 0 and model(EXAMPLE).shape == (1, 10)
