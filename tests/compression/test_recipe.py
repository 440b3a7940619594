"""Distiller recipes: every CNN example recipe of Distiller loads on its architecture or is
refused by name; the forms they use; errors name their key."""

from __future__ import annotations

import functools
import itertools

import pytest
import yaml

from edge_tune.catalog.models import create_model
from edge_tune.compression.classes import CLASSES
from edge_tune.compression.recipe import (
    agp_sparsity,
    check_weights,
    load_recipe,
    read_header,
    recipe_from_dict,
    rescale,
)
from edge_tune.core.errors import UserError
from tests.conftest import ROOT

RECIPES = ROOT / "examples" / "distiller"
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
     "pruners.p.group_type: expected one of Filters, Channels, Rows, Blocks, 3D, got 'Kernels'"),
    ({"pruners": {"p": {"class": "L1RankedStructureParameterPruner", "group_type": "Filters",
                        "weights": ["fc.weight"]}}},
     "pruners.p.desired_sparsity: required by L1RankedStructureParameterPruner (or give "
     "reg_regims"),
    ({**_pruner(), "policies": [{"pruner": {"instance_name": "low_pruner",
                                            "args": {"keep_mask": "yes"}}, "epochs": [0]}]},
     "policies[0].pruner.args.keep_mask: expected true or false, got 'yes'"),
    ({**_pruner(), "policies": [{"pruner": {"instance_name": "low_pruner",
                                            "args": {"mask_gradient": True}}, "epochs": [0]}]},
     "policies[0].pruner.args: unknown 'mask_gradient' (did you mean 'mask_gradients'?)"),
    ({**_pruner(), "policies": [{"pruner": {"instance_name": "low_pruner",
                                            "args": {"mask_gradients": True}}, "epochs": [0]}]},
     "policies[0].pruner.args.mask_gradients: needs mask_on_forward_only: true"),
    ({"quantizers": {"q": {"class": "DorefaQuantizer", "bits_activations": 8,
                           "bits_weights": 3}}},
     "quantizers.q.bits_weights: 3 bits: the deployed device runs int8"),
    ({"quantizers": {"q": {"class": "PostTrainLinearQuantizer", "clip_acts": "GAUSS"}}},
     "quantizers.q.clip_acts: 'GAUSS': NNCF has no equivalent"),
    ({"quantizers": {"q": {"class": "PostTrainLinearQuantizer",
                           "mode": {"weights": "ASYMMETRIC_UNSIGNED"}}}},
     "quantizers.q.mode.weights: 'ASYMMETRIC_UNSIGNED': NNCF quantises weights symmetrically"),
    ({"quantizers": {"q": {"class": "PostTrainLinearQuantizer", "bits_activations": None,
                           "bits_parameters": 8}}},
     "quantizers.q: int8 weights with float activations"),
    ({"quantizers": {"q": {"class": "PACTQuantizer", "bits_activations": 4}}},
     "quantizers.q.bits_activations: 4 bits: the deployed device runs int8"),
    ({"regularizers": {"r": {"class": "GroupVarianceRegularizer",
                             "reg_regims": {"fc.weight": [0.1, "Filters"]}}}},
     "regularizers.r.reg_regims.fc.weight[1]: GroupVarianceRegularizer groups Channels only"),
    ({"pruners": {"p": {"class": "RandomLevelStructureParameterPruner", "group_type": "Filters",
                        "sparsity_range": [0.5, 0.1], "weights": ["fc.weight"]}}},
     "pruners.p.sparsity_range: expected low <= high"),
    ({**_pruner(), "policies": [{"pruner": {"instance_name": "lo_pruner"}, "epochs": [0]}]},
     "policies[0].pruner.instance_name: unknown 'lo_pruner' (did you mean 'low_pruner'?)"),
    ({**_pruner(), "policies": [{"pruner": {"instance_name": "low_pruner"}}]},
     "policies[0]: needs epochs: [...] or starting_epoch and ending_epoch"),
    ({**_pruner(), "policies": [{"pruner": {"instance_name": "low_pruner"},
                                 "starting_epoch": 5, "ending_epoch": 2}]},
     "policies[0].ending_epoch: expected > starting_epoch 5, got 2"),
    ({"quantizers": {"q": {"class": "PostTrainLinearQuantizer", "bits_parameters": 4}}},
     "quantizers.q.bits_parameters: 4 bits: the deployed device runs int8 (OpenVINO on a CPU)"),
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


ARCHES = yaml.safe_load((RECIPES / "architectures.yaml").read_text())
SHIPPED = sorted(p.relative_to(RECIPES).as_posix() for p in RECIPES.glob("*/**/*.yaml"))
# what edge_tune cannot honour, refused in one line naming the key (README lists them)
REFUSED = {
    "quantization/post_train_quant/resnet18_imagenet_post_train_lapq.yaml":
        "overrides.layer.*conv.*.bits_weights: 4 bits: the deployed device runs int8",
    "quantization/quant_aware_train/preact_resnet20_cifar_pact.yaml":
        "quantizers.pact_quantizer.bits_activations: 4 bits: the deployed device runs int8",
    "quantization/quant_aware_train/preact_resnet_cifar_dorefa.yaml":
        "quantizers.dorefa_quantizer.bits_weights: 3 bits: the deployed device runs int8",
    "ssl/ssl_filter-removal_training-shortcut.yaml":
        "reg_regims.module.layer3.0.conv3.weight: expected [strength, group type], got [0.005",
}


def _arch(path: str) -> str:
    return str(ARCHES[max((p for p in ARCHES if path.startswith(p)), key=len)])


@functools.cache
def _names(arch: str) -> list[str]:
    return [n for n, _ in create_model(arch, 10).named_parameters()]


def test_distillers_example_recipes_ship() -> None:
    assert len(SHIPPED) == 60 and all(any(s.startswith(p) for p in ARCHES) for s in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_recipe_loads_on_its_architecture_or_is_refused_by_name(path: str) -> None:
    """The loader's verdict on each of Distiller's CNN recipes, as written (no training)."""
    if path in REFUSED:
        with pytest.raises(UserError) as err:
            check_weights(load_recipe(RECIPES / path), _names(_arch(path)))
        assert REFUSED[path] in str(err.value) and "\n" not in str(err.value)
        return
    recipe = load_recipe(RECIPES / path)
    check_weights(recipe, _names(_arch(path)))
    assert recipe.policies or any(i.spec.int8 for i in recipe.instances.values())


def test_header_says_how_long_and_whether_resumed() -> None:
    surgery = load_recipe(RECIPES / "network_surgery/resnet20.network_surgery.yaml")
    assert (surgery.header_epochs, surgery.resumed, surgery.origin()) == (180, True, 180)
    short = rescale(surgery, 180, 10, surgery.origin())
    pruner, lr = short.policies
    assert (pruner.starting_epoch, pruner.ending_epoch) == (0, 6)  # 180-280 of 180-360
    assert (lr.starting_epoch, lr.ending_epoch) == (2, 12)  # 225-400: from epoch 2 to the end
    assert read_header("# python compress_classifier.py --epochs=70 -b 128\n") == (70, False)
    assert read_header("epochs: 5  # --epochs 9 in a value's comment\n") == (None, False)


def test_distiller_forms_the_examples_use() -> None:
    recipe = recipe_from_dict({
        "pruners": {
            "fc": {"class": "AutomatedGradualPruner", "initial_sparsity": 0.05,
                   "final_sparsity": 0.5, "weights": "module.fc.weight"},
            "alex": {"class": "SensitivityPruner",
                     "sensitivities": {"features.module.3.weight": 0.5, "*": 0.25}},
            "old": {"class": "L1RankedStructureParameterPruner",
                    "reg_regims": {"module.conv1.weight": [0.2, "3D"]}},
            "blocks": {"class": "L1RankedStructureParameterPruner_AGP",
                       "initial_sparsity": 0.05, "final_sparsity": 0.7, "group_type": "Blocks",
                       "kwargs": {"block_shape": [1, 8, 1, 1]}, "weights": ["conv2.weight"]}},
        "extensions": {"t": {"class": "FilterRemover", "arch": "resnet20_cifar",
                             "dataset": "cifar10"}},
        "policies": [{"pruner": {"instance_name": "fc", "args": {"skip_first_minibatch": True}},
                      "epochs": [0]},
                     {"pruner": {"instance_name": "alex"}, "epochs": [0]},
                     {"pruner": {"instance_name": "old"}, "epochs": [0]},
                     {"pruner": {"instance_name": "blocks"}, "epochs": [0]}]})
    assert recipe.instances["fc"].weights() == ("fc.weight",)
    assert recipe.instances["alex"].weights() == ("features.3.weight",)
    assert recipe.instances["old"].weights() == ("conv1.weight",)
    assert recipe.instances["blocks"].args["kwargs"] == {"block_shape": (1, 8, 1, 1)}
    assert set(recipe.ignored) == {
        "extensions.t: no policy uses it",
        "extensions.t.arch: edge_tune thins the configured model, whatever its name",
        "extensions.t.dataset: edge_tune thins the configured model, whatever its data",
        "policies[0].pruner.args.skip_first_minibatch: the first masks are set at the start of "
        "the epoch either way (one mini-batch of difference)"}


def test_quantizer_options_map_to_nncf() -> None:
    ptq = recipe_from_dict({"quantizers": {"q": {
        "class": "PostTrainLinearQuantizer", "bits_activations": 8, "bits_parameters": 8,
        "bits_accum": 32, "mode": "ASYMMETRIC_UNSIGNED", "per_channel_wts": False,
        "clip_acts": "AVG", "model_activation_stats": "stats.yaml",
        "overrides": {"fc": {"bits_activations": None, "bits_weights": None},
                      "conv1": {"clip_acts": "NONE"}}}}}).instances["q"]
    options = ptq.spec.int8(ptq.args)  # type: ignore[misc]
    assert (options.asymmetric_activations, options.per_channel, options.mean_ranges) == \
        (True, False, True)
    assert options.in_float("fc") and not options.in_float("conv1")
    only = recipe_from_dict({"quantizers": {"q": {
        "class": "PostTrainLinearQuantizer", "bits_activations": None, "bits_parameters": None,
        "overrides": {"layer.*conv.*": {"bits_activations": 8, "bits_weights": 8}}}}})
    inst = only.instances["q"]
    options = inst.spec.int8(inst.args)  # type: ignore[misc]
    assert not options.in_float("layer1.0.conv2") and options.in_float("fc")
    assert any("overrides.conv1.clip_acts" in line for line in recipe_from_dict(
        {"quantizers": {"q": ptq.args | {"class": "PostTrainLinearQuantizer",
                                         "overrides": {"conv1": {"clip_acts": "NONE"}}}}}
    ).ignored)
