"""Distiller recipes: the three the study ran load and validate; errors name their key."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from edge_tune.distiller import (
    CLASSES,
    agp_sparsity,
    check_weights,
    load_recipe,
    recipe_from_dict,
    rescale,
)
from edge_tune.errors import UserError
from edge_tune.models import create_model

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "distiller"
NAMES = [n for n, _ in create_model("resnet20_cifar", 10).named_parameters()]


@pytest.mark.parametrize("name", ["resnet20_filters.schedule_agp",
                                  "ssl_channels-removal_training",
                                  "ssl_channels-removal_finetuning"])
def test_distillers_recipes_load_and_name_real_weights(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    check_weights(recipe, NAMES)
    assert recipe.policies


def test_agp_recipe_structure_and_declaration_order() -> None:
    recipe = load_recipe(RECIPES / "resnet20_filters.schedule_agp.yaml")
    low = recipe.instances["low_pruner"]
    assert low.cls == "L1RankedStructureParameterPruner_AGP"
    assert low.args["group_type"] == "Filters"
    assert "layer2.0.downsample.0.weight" in low.weights()  # module. prefix dropped
    # at epoch 30 the thinning fires before the two pruners that start there
    assert [p.instance for p in recipe.at(30)] == ["net_thinner", "fine_pruner", "fc_pruner",
                                                   "pruning_lr"]
    assert [p.instance for p in recipe.at(2)] == ["low_pruner", "pruning_lr"]
    assert [p.instance for p in recipe.at(3)] == ["pruning_lr"]  # frequency 2
    assert max(p.ending_epoch for p in recipe.policies if p.kind == "pruner") == 50


def test_ssl_recipe_keeps_the_last_of_duplicate_keys() -> None:
    recipe = load_recipe(RECIPES / "ssl_channels-removal_training.yaml")
    regims = recipe.instances["Channels_groups_regularizer"].args["reg_regims"]
    assert regims["layer3.1.conv2.weight"] == (0.0008, "Channels")
    assert len(regims) == 7  # 9 lines, two repeated keys
    assert [p.instance for p in recipe.at(179)] == ["training_lr", "net_thinner",
                                                    "Channels_groups_regularizer"]


def test_agp_schedule_values() -> None:
    # Distiller: s_f + (s_i - s_f) * (1 - (t - t0) / span)^3, span = 28 for 0..30 every 2
    assert agp_sparsity(0.1, 0.5, 0, 30, 2, 0) == pytest.approx(0.1)
    assert agp_sparsity(0.1, 0.5, 0, 30, 2, 14) == pytest.approx(0.5 - 0.4 * 0.5**3)
    assert agp_sparsity(0.1, 0.5, 0, 30, 2, 28) == pytest.approx(0.5)
    assert agp_sparsity(0.1, 0.5, 0, 30, 2, 40) == pytest.approx(0.5)
    values = [agp_sparsity(0.05, 0.7, 30, 50, 2, e) for e in range(30, 50, 2)]
    assert values == sorted(values) and values[0] == pytest.approx(0.05)
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert steps == sorted(steps, reverse=True)  # prunes fast first, then slower (cubic)


def test_rescale_keeps_last_epoch_actions_inside_the_run() -> None:
    recipe = load_recipe(RECIPES / "ssl_channels-removal_training.yaml")
    short = rescale(recipe, 180, 6)
    thinner = next(p for p in short.policies if p.instance == "net_thinner")
    assert thinner.epochs == (5,)  # 179 of 180 -> the last of 6 epochs, not past the end
    assert "net_thinner" in [p.instance for p in short.at(5)]
    # 30x fewer mini-batches: the penalty (and Distiller's threshold = strength) 30x stronger
    regims = short.instances["Channels_groups_regularizer"].args["reg_regims"]
    assert regims["layer1.0.conv2.weight"] == (pytest.approx(0.0008 * 30), "Channels")
    assert recipe.instances["Channels_groups_regularizer"].args["reg_regims"][
        "layer1.0.conv2.weight"][0] == 0.0008  # the loaded recipe is left as it was


def test_rescale_maps_epochs_proportionally() -> None:
    recipe = load_recipe(RECIPES / "resnet20_filters.schedule_agp.yaml")
    short = rescale(recipe, 180, 18)
    by_name = {p.instance: p for p in short.policies}
    assert (by_name["low_pruner"].starting_epoch, by_name["low_pruner"].ending_epoch) == (0, 3)
    assert by_name["net_thinner"].epochs == (3,)
    assert by_name["fine_pruner"].starting_epoch == 3 and by_name["fine_pruner"].ending_epoch == 5
    assert short.instances["pruning_lr"].args["step_size"] == 5
    assert [p.instance for p in short.at(3)][:3] == ["net_thinner", "fine_pruner", "fc_pruner"]


def _pruner(**args: object) -> dict:
    return {"pruners": {"low_pruner": {"class": "AutomatedGradualPruner", "initial_sparsity": 0.1,
                                       "final_sparsity": 0.5, "weights": ["module.fc.weight"],
                                       **args}},
            "policies": [{"pruner": {"instance_name": "low_pruner"}, "starting_epoch": 0,
                          "ending_epoch": 4, "frequency": 2}]}


@pytest.mark.parametrize(("raw", "message"), [
    (_pruner(final_sparsity=1.3), "pruners.low_pruner.final_sparsity: expected 0 <= x < 1, "
                                  "got 1.3"),
    (_pruner(initial_sparsty=0.1), "pruners.low_pruner: unknown 'initial_sparsty' (did you mean"),
    ({"pruners": {"p": {"class": "AutomatedGradualPrunr"}}},
     "pruners.p.class: unknown 'AutomatedGradualPrunr' (did you mean 'AutomatedGradualPruner'?)"),
    ({"pruners": {"p": {"class": "StepLR", "step_size": 3}}},
     "pruners.p.class: StepLR belongs under lr_schedulers"),
    ({"pruners": {"p": {"class": "SparsityLevelParameterPruner"}}},
     "pruners.p.levels: required by SparsityLevelParameterPruner, missing"),
    ({"pruners": {"p": {"class": "L1RankedStructureParameterPruner", "group_type": "Kernels",
                        "desired_sparsity": 0.5, "weights": ["fc.weight"]}}},
     "pruners.p.group_type: expected one of Filters, Channels, Rows, got 'Kernels'"),
    ({**_pruner(), "policies": [{"pruner": {"instance_name": "lo_pruner"}, "epochs": [0]}]},
     "policies[0].pruner.instance_name: unknown 'lo_pruner' (did you mean 'low_pruner'?)"),
    ({**_pruner(), "policies": [{"pruner": {"instance_name": "low_pruner"}}]},
     "policies[0]: needs epochs: [...] or starting_epoch and ending_epoch"),
    ({**_pruner(), "policies": [{"pruner": {"instance_name": "low_pruner"},
                                 "starting_epoch": 5, "ending_epoch": 2}]},
     "policies[0].ending_epoch: expected > starting_epoch 5, got 2"),
    ({"quantizers": {"q": {"class": "PostTrainLinearQuantizer", "bits_parameters": 4}}},
     "quantizers.q.bits_parameters: only 8-bit (int8, NNCF) is supported, got 4"),
    ({"prunners": {}}, "recipe: unknown 'prunners' (did you mean 'pruners'?)"),
])
def test_recipe_errors_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        recipe_from_dict(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_weight_names_must_match_the_model() -> None:
    recipe = recipe_from_dict(_pruner(weights=["module.layer2.0.conv3.weight"]))
    with pytest.raises(UserError, match=r"pruners.low_pruner.weights: unknown "
                                        r"'layer2.0.conv3.weight' \(did you mean"):
        check_weights(recipe, NAMES)


def test_every_class_has_a_section() -> None:
    assert {spec.section for spec in CLASSES.values()} == {
        "pruners", "regularizers", "quantizers", "lr_schedulers", "extensions"}
