"""Running Distiller recipes: each pruner kind's effect, policy timing, thinning consistency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from edge_tune.distiller import agp_sparsity, recipe_from_dict
from edge_tune.models import create_model
from edge_tune.scheduler import RecipeRun, _prune, run_recipe, thin
from tests.conftest import run_module

EXAMPLE = torch.zeros(1, 3, 32, 32)
LAYER2 = ["layer2.0.conv1.weight", "layer2.0.conv2.weight", "layer2.0.downsample.0.weight",
          "layer2.1.conv1.weight", "layer2.1.conv2.weight", "layer2.2.conv1.weight",
          "layer2.2.conv2.weight"]
RECIPES = Path(__file__).resolve().parents[1] / "examples" / "distiller"


def _run(pruners: dict, policies: list | None = None) -> RecipeRun:
    recipe = recipe_from_dict({"pruners": pruners, "policies": policies or [
        {"pruner": {"instance_name": name}, "epochs": [0]} for name in pruners]})
    torch.manual_seed(0)
    run = RecipeRun(create_model("resnet20_cifar", 10).eval(), EXAMPLE, recipe, lambda _: None)
    for policy in recipe.policies:
        _prune(run, recipe.instances[policy.instance], policy, 0)
    return run


def _sparsity(run: RecipeRun, name: str) -> float:
    return float((run.params()[name] == 0).float().mean())


def test_sparsity_level_and_magnitude_pruners() -> None:
    run = _run({"a": {"class": "SparsityLevelParameterPruner",
                      "levels": {"module.layer3.0.conv2.weight": 0.6}},
                "b": {"class": "MagnitudeParameterPruner",
                      "thresholds": {"layer1.0.conv1.weight": 0.05}}})
    assert _sparsity(run, "layer3.0.conv2.weight") == pytest.approx(0.6, abs=0.001)
    weight = run.params()["layer1.0.conv1.weight"]
    assert float(weight.abs()[weight != 0].min()) > 0.05


def test_agp_pruner_follows_the_cubic_schedule() -> None:
    pruner = {"p": {"class": "AutomatedGradualPruner", "initial_sparsity": 0.05,
                    "final_sparsity": 0.7, "weights": ["layer3.1.conv1.weight"]}}
    policy = [{"pruner": {"instance_name": "p"}, "starting_epoch": 0, "ending_epoch": 10,
               "frequency": 2}]
    run = _run(pruner, policy)
    recipe = run.recipe
    for epoch in (4, 8):
        _prune(run, recipe.instances["p"], recipe.policies[0], epoch)
        expected = agp_sparsity(0.05, 0.7, 0, 10, 2, epoch)
        assert _sparsity(run, "layer3.1.conv1.weight") == pytest.approx(expected, abs=0.002)


def test_filter_ranking_is_shared_across_a_residual_group() -> None:
    run = _run({"f": {"class": "L1RankedStructureParameterPruner", "group_type": "Filters",
                      "desired_sparsity": 0.5, "weights": LAYER2}})
    params = run.params()
    zero = {n: set(torch.nonzero(params[n].detach().abs().flatten(1).sum(1) == 0)
                   .flatten().tolist()) for n in LAYER2}
    assert all(len(z) == 16 for z in zero.values())
    tied = ["layer2.0.conv2.weight", "layer2.0.downsample.0.weight", "layer2.1.conv2.weight",
            "layer2.2.conv2.weight"]
    assert len({frozenset(zero[n]) for n in tied}) == 1  # the same channels in the whole group


def test_channel_and_row_pruners() -> None:
    run = _run({"c": {"class": "L1RankedStructureParameterPruner", "group_type": "Channels",
                      "desired_sparsity": 0.25, "weights": ["layer1.0.conv2.weight"]},
                "r": {"class": "L1RankedStructureParameterPruner_AGP", "group_type": "Rows",
                      "initial_sparsity": 0.5, "final_sparsity": 0.5,
                      "weights": ["module.fc.weight"]}})
    conv = run.params()["layer1.0.conv2.weight"].detach()
    assert int((conv.abs().sum(dim=(0, 2, 3)) == 0).sum()) == 4  # input channels
    fc = run.params()["fc.weight"].detach()
    assert int((fc.abs().sum(dim=0) == 0).sum()) == 32  # Distiller's fc rows: input features


@pytest.mark.parametrize(("extension", "pruner", "shapes"), [
    ("FilterRemover", {"class": "L1RankedStructureParameterPruner", "group_type": "Filters",
                       "desired_sparsity": 0.5, "weights": LAYER2},
     {"layer2.0.conv1.weight": (16, 16, 3, 3), "layer2.1.conv2.weight": (16, 16, 3, 3),
      "layer3.0.conv1.weight": (64, 16, 3, 3)}),
    ("ChannelRemover", {"class": "L1RankedStructureParameterPruner", "group_type": "Channels",
                        "desired_sparsity": 0.5, "weights": ["layer1.1.conv2.weight"]},
     {"layer1.1.conv1.weight": (8, 16, 3, 3), "layer1.1.conv2.weight": (16, 8, 3, 3)}),
])
def test_thinning_is_consistent(extension: str, pruner: dict, shapes: dict) -> None:
    run = _run({"p": pruner})
    x = torch.randn(4, 3, 32, 32)
    masked = run.model(x)
    ext = recipe_from_dict({"extensions": {"t": {"class": extension}}}).instances["t"]
    removed = thin(run, ext)
    assert removed and sum(removed.values()) > 0
    for name, shape in shapes.items():
        assert tuple(run.params()[name].shape) == shape
    # fresh BatchNorm (mean 0, var 1, gamma 1, beta 0) maps a zero filter to 0, so here the
    # thinned network must compute exactly what the masked one did
    assert torch.allclose(run.model(x), masked, atol=1e-4)


def test_policies_fire_during_training_and_lr_steps() -> None:
    recipe = recipe_from_dict({
        "pruners": {"agp": {"class": "AutomatedGradualPruner", "initial_sparsity": 0.1,
                            "final_sparsity": 0.6, "weights": ["conv2.weight"]}},
        "lr_schedulers": {"lr": {"class": "StepLR", "step_size": 1, "gamma": 0.5}},
        "policies": [{"pruner": {"instance_name": "agp"}, "starting_epoch": 0,
                      "ending_epoch": 3, "frequency": 1},
                     {"lr_scheduler": {"instance_name": "lr"}, "starting_epoch": 0,
                      "ending_epoch": 3}]})
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,)))
    model = create_model("simple_cnn", 10)
    lines: list[str] = []
    run = run_recipe(model, recipe, data, 3, 0.1, 0.0, 16, torch.zeros(1, 3, 16, 16),
                     log=lines.append)
    weight = dict(model.named_parameters())["conv2.weight"]
    assert float((weight == 0).float().mean()) == pytest.approx(0.6, abs=0.002)
    assert len(lines) == 3 and "agp" in lines[0]
    assert not run.int8


@pytest.mark.slow
def test_compress_runs_distillers_agp_recipe(tmp_path: Path) -> None:
    config = {"data": {"image_size": 16}, "baseline": {"epochs": 3},
              "bench": {"warmup": 10, "iterations": 100, "rounds": 2, "fps_seconds": 0.1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run_module("edge_tune.compress", "--recipe",
                        str(RECIPES / "resnet20_filters.schedule_agp.yaml"), "--config",
                        str(tmp_path / "c.yaml"), "--epochs", "4", "--output",
                        str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rescaled from 180 to 4 epochs" in result.stderr
    r = json.loads(result.stdout)
    rows = {row["layer"]: row for row in r["verification"]}
    assert rows["layer2.1.conv1.weight"]["openvino_shape"][0] == 16  # thinned from 32
    assert rows["layer3.1.conv1.weight"]["openvino_sparsity"] == pytest.approx(70, abs=1)
    assert r["sparsity"]["fc.weight"] == pytest.approx(50, abs=1)
    assert r["compression"]["reached"] and r["thinned"]["net_thinner"]
    # reported side by side: removing a zero filter also drops its BatchNorm constant
    masked, thinned = (r["thinning_top1"]["net_thinner"][k] for k in ("masked", "thinned"))
    assert 0 < masked <= 100 and 0 < thinned <= 100
    assert r["speedup"] > 0 and r["macs"] < r["baseline"]["macs"]


@pytest.mark.parametrize(("recipe", "message"), [
    ({"pruners": {"p": {"class": "AGPruner"}}}, "pruners.p.class: unknown 'AGPruner'"),
    ({"pruners": {"p": {"class": "SparsityLevelParameterPruner",
                        "levels": {"module.layer9.conv1.weight": 0.5}}},
      "policies": [{"pruner": {"instance_name": "p"}, "epochs": [0]}]},
     "pruners.p.weights: unknown 'layer9.conv1.weight'"),
])
def test_bad_recipes_fail_before_training(tmp_path: Path, recipe: dict, message: str) -> None:
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = run_module("edge_tune.compress", "--recipe", str(tmp_path / "r.yaml"),
                        "--epochs", "2", "--output", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_group_lasso_thresholds_channels_then_channel_remover_removes_them() -> None:
    recipe = recipe_from_dict({
        "regularizers": {"ssl": {"class": "GroupLassoRegularizer", "threshold_criteria":
                                 "Mean_Abs", "reg_regims": {"conv2.weight": [0.04, "Channels"]}}},
        "extensions": {"thinner": {"class": "ChannelRemover"}},
        "policies": [{"regularizer": {"instance_name": "ssl", "args": {"keep_mask": True}},
                      "starting_epoch": 0, "ending_epoch": 2},
                     {"extension": {"instance_name": "thinner"}, "epochs": [2]}]})
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,)))
    model = create_model("simple_cnn", 10)
    run = run_recipe(model, recipe, data, 3, 0.01, 0.0, 16, torch.zeros(1, 3, 16, 16),
                     log=lambda _: None)
    removed = run.thinned["thinner"]
    assert removed.get("conv2.channels", 0) > 0
    assert model.conv2.weight.shape[1] == model.conv1.weight.shape[0] == 16 - removed[
        "conv2.channels"]
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
