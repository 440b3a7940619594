import pytest
import yaml

from edge_tune.core.errors import UserError
from edge_tune.search.params import PARAMETERS, format_params, schedule_from_params

STAGES = ("layer1", "layer2", "layer3")


def test_params_become_a_schedule() -> None:
    schedule = schedule_from_params({"filter_ratio": 0.5, "filter_ratio_layer3": 0.7,
                                     "fine_sparsity": 0.3, "int8": 0.6,
                                     "finetune_epochs": 2.4}, STAGES, 3)
    assert schedule.filter_ratios == {"*": 0.5, "layer3": 0.7}
    assert schedule.fine_sparsity == 0.3 and schedule.int8 and schedule.finetune_epochs == 2
    assert schedule.prunes_filters
    assert not schedule_from_params({"int8": 0.49}, STAGES, 3).int8
    assert schedule_from_params({}, STAGES, 3).finetune_epochs == 3


@pytest.mark.parametrize(("params", "message"), [
    ({"filter_ration": 0.5}, "params: unknown 'filter_ration' (did you mean 'filter_ratio'?)"),
    ({"filter_ratio": 1.0}, "params.filter_ratio: expected a value in [0, 1), got 1.0"),
    ({"fine_sparsity": -0.1}, "params.fine_sparsity: expected a value in [0, 1), got -0.1"),
    ({"int8": 2}, "params.int8: expected a value in [0, 1], got 2"),
    ({"int8": "yes"}, "params.int8: expected a number, got 'yes'"),
    ({"filter_ratio_layer4": 0.1}, "params.filter_ratio_layer4: the model has no stage "
                                   "'layer4'; stages: layer1, layer2, layer3"),
    ({"filter_ratoi": 0.1}, "params: unknown 'filter_ratoi' (did you mean 'filter_ratio'?)"),
])
def test_bad_params_are_named(params: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        schedule_from_params(params, STAGES, 3)
    assert message in str(err.value)


def test_stage_params_need_a_model_with_stages() -> None:
    with pytest.raises(UserError, match="params.filter_ratio_layer2: the model has no stage"):
        schedule_from_params({"filter_ratio_layer2": 0.3}, (), 3)


def test_recipe_is_distiller_shaped_yaml() -> None:
    schedule = schedule_from_params({"filter_ratio": 0.5, "fine_sparsity": 0.8, "int8": 1},
                                    STAGES, 2)
    recipe = schedule.to_recipe({"conv1": 0.5, "layer1.0.conv1": 0.5}, ["layer1.0.conv1"],
                                "resnet20_cifar", "digits")
    text = yaml.safe_dump(recipe)
    again = yaml.safe_load(text)
    pruner = again["pruners"]["filter_pruner_0"]
    assert pruner["class"] == "L1RankedStructureParameterPruner"
    assert pruner["weights"] == ["module.conv1.weight", "module.layer1.0.conv1.weight"]
    assert again["extensions"]["net_thinner"]["class"] == "FilterRemover"
    assert again["pruners"]["fine_pruner"]["levels"] == {"module.layer1.0.conv1.weight": 0.8}
    assert again["quantizers"]["post_train_int8"]["class"] == "PostTrainLinearQuantizer"
    kinds = ("pruner", "extension", "lr_scheduler")
    assert [next(p[k] for k in kinds if k in p)["instance_name"] for p in again["policies"]] == [
        "filter_pruner_0", "net_thinner", "fine_pruner", "finetune_lr"]
    assert again["lr_schedulers"]["finetune_lr"] == {"class": "CosineAnnealingLR", "T_max": 2}
    assert again["policies"][-1]["ending_epoch"] == 2
    from edge_tune.compression.recipe import recipe_from_dict

    loaded = recipe_from_dict(again)  # the round trip: Distiller's loader accepts it
    assert loaded.instances["filter_pruner_0"].weights() == ("conv1.weight",
                                                             "layer1.0.conv1.weight")


def test_every_parameter_is_documented() -> None:
    for name, spec in PARAMETERS.items():
        assert spec.doc and spec.low < spec.high, name


def test_params_read_as_a_person_would() -> None:
    assert format_params({"filter_ratio": 0.456, "int8": 0.6, "finetune_epochs": 5.0}) == \
        "filter_ratio=0.46, int8=on, finetune_epochs=5"
    assert "int8=off" in format_params({"int8": 0.0})
