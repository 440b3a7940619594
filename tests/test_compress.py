"""Running Distiller recipes: each pruner kind's effect, policy timing, thinning consistency."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from edge_tune.catalog.models import create_model
from edge_tune.compression.recipe import agp_sparsity, recipe_from_dict
from edge_tune.compression.runner import RecipeRun, _prune, run_recipe, thin
from tests.conftest import ROOT, run_module

EXAMPLE = torch.zeros(1, 3, 32, 32)
LAYER2 = ["layer2.0.conv1.weight", "layer2.0.conv2.weight", "layer2.0.downsample.0.weight",
          "layer2.1.conv1.weight", "layer2.1.conv2.weight", "layer2.2.conv1.weight",
          "layer2.2.conv2.weight"]
RECIPES = ROOT / "examples" / "distiller"


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


@pytest.mark.slow
def test_compress_runs_quantisation_aware_training(tmp_path: Path) -> None:
    """Distiller's 8-bit QAT recipe, unchanged: NNCF fake-quantisation trains with the model,
    the deployed file carries the quantisers and OpenVINO runs int8 kernels."""
    import openvino as ov

    config = {"data": {"image_size": 16}, "baseline": {"epochs": 3},
              "bench": {"warmup": 5, "iterations": 40, "rounds": 2, "fps_seconds": 0.1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    recipe = RECIPES / "quantization/quant_aware_train/quant_aware_train_linear_quant.yaml"
    result = run_module("edge_tune.compress", "--recipe", str(recipe), "--config",
                        str(tmp_path / "c.yaml"), "--epochs", "1", "--output",
                        str(tmp_path / "out"), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recipe written for 10 epochs (its header" in result.stderr
    r = json.loads(result.stdout)
    assert r["int8"] == "quantisation-aware (NNCF)" and r["int8_options"] is None
    assert any("ema_decay" in line for line in r["ignored"])
    compiled = ov.Core().compile_model(r["deployed"], "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str)
                  for op in compiled.get_runtime_model().get_ops()
                  if "runtimePrecision" in op.get_rt_info()}
    assert {"i8", "u8"} & precisions  # int8 kernels run
    assert r["top1"] > 50  # trained, not collapsed (digits, 3+1 epochs at 16x16)


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


@pytest.mark.parametrize(("flags", "message"), [
    (["--kd-dw", "1.5"], "--kd-dw: expected 0 <= x <= 1, got 1.5"),
    (["--kd-teacher", "resnet56_cifar"], "--kd-teacher: 'resnet56_cifar' with --kd-resume None"),
])
def test_bad_distillation_flags_fail_before_training(tmp_path: Path, flags: list[str],
                                                     message: str) -> None:
    recipe = RECIPES / "agp-pruning/resnet20_filters.schedule_agp.yaml"
    result = run_module("edge_tune.compress", "--recipe", str(recipe), *flags,
                        "--output", str(tmp_path / "out"), timeout=120)
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


def _train(recipe: dict, epochs: int = 2, model: str = "simple_cnn",
           **kwargs: object) -> RecipeRun:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(48, 3, 16, 16), torch.randint(0, 10, (48,)))
    options: dict[str, Any] = {"log": lambda _: None, "validate": lambda m: (1.0, 50.0), **kwargs}
    return run_recipe(create_model(model, 10), recipe_from_dict(recipe), data, epochs, 0.05,
                      0.0, 16, torch.zeros(1, 3, 16, 16), **options)


def _zeros(run: RecipeRun, name: str) -> float:
    return float((run.params()[name] == 0).float().mean())


def _policy(pruner: dict, args: dict, epochs: tuple[int, int] = (0, 2)) -> dict:
    return {"pruners": {"p": pruner},
            "policies": [{"pruner": {"instance_name": "p", "args": args},
                          "starting_epoch": epochs[0], "ending_epoch": epochs[1]}]}


DROP = {"class": "BernoulliFilterPruner", "desired_sparsity": 0.5, "group_type": "Filters",
        "weights": ["conv2.weight"]}
SPLICE = {"class": "SplicingPruner", "low_thresh_mult": 0.9, "hi_thresh_mult": 1.1,
          "sensitivities": {"conv2.weight": 0.1}}


def test_training_only_masks_leave_the_network_dense() -> None:
    """Drop-filter (Distiller's args): filters masked on the forward pass while the policy
    runs, the dense weights trained; without keep_mask nothing stays pruned."""
    run = _train(_policy(DROP, {"mini_batch_pruning_frequency": 1, "use_double_copies": True,
                                "mask_on_forward_only": True}))
    assert _zeros(run, "conv2.weight") == 0.0 and not run.held and not run.masks


def test_keep_mask_makes_held_masks_permanent_and_surgery_splices() -> None:
    run = _train(_policy(SPLICE, {"keep_mask": True, "mini_batch_pruning_frequency": 1,
                                  "mask_on_forward_only": True}))
    assert 0.2 < _zeros(run, "conv2.weight") < 0.9 and "conv2.weight" in run.masks
    dense = _train(_policy(SPLICE, {"mini_batch_pruning_frequency": 1,
                                    "mask_on_forward_only": True, "use_double_copies": True}))
    assert _zeros(dense, "conv2.weight") == 0.0  # not kept: the network is dense again


def test_masks_are_recomputed_every_n_mini_batches() -> None:
    """Bernoulli masks drawn anew every mini-batch (3 per epoch here): the held mask at the
    end is the last draw, and a discarded one is gone."""
    seen: list[torch.Tensor] = []
    run = _train(_policy(DROP, {"mini_batch_pruning_frequency": 1, "keep_mask": True,
                                "mask_on_forward_only": True}), epochs=1,
                 after_epoch=lambda _, m: seen.append(m.conv2.weight.detach() == 0))
    assert 0.0 < _zeros(run, "conv2.weight") < 1.0 and len(run.last["p"]) == 1
    gone = _train(_policy(DROP, {"mini_batch_pruning_frequency": 1, "use_double_copies": True,
                                 "discard_masks_at_minibatch_end": True,
                                 "mask_on_forward_only": True, "keep_mask": True}), epochs=1)
    assert _zeros(gone, "conv2.weight") == 0.0 and not gone.masks  # nothing left to keep


def test_fold_batchnorm_ranks_filters_as_deployed() -> None:
    """A filter with large weights but a tiny BatchNorm scale is weak in the deployed model."""
    from edge_tune.compression.ranking import folded_weights

    model = create_model("simple_cnn", 10).eval()
    with torch.no_grad():
        model.conv2.weight[0].mul_(100)
        model.bn2.weight[0] = 1e-6
    folded = folded_weights(model)
    assert set(folded) == {"conv1.weight", "conv2.weight", "conv3.weight"}
    pruner = {"class": "L1RankedStructureParameterPruner", "group_type": "Filters",
              "desired_sparsity": 0.1, "weights": ["conv2.weight"]}
    for fold, dropped in ((False, False), (True, True)):
        recipe = recipe_from_dict(_policy(pruner, {"fold_batchnorm": fold}, (0, 1)))
        run = RecipeRun(copy.deepcopy(model), torch.zeros(1, 3, 16, 16), recipe, lambda _: None)
        _prune(run, recipe.instances["p"], recipe.policies[0], 0, 0)
        assert bool(run.masks["conv2.weight"][0].sum() == 0) == dropped


def test_apoz_ranks_filters_by_their_dead_activations() -> None:
    from edge_tune.compression.ranking import activation_apoz

    model = create_model("simple_cnn", 10).eval()
    with torch.no_grad():
        model.bn2.bias[3] = -100.0  # filter 3 of conv2 never fires after BN + ReLU
        model.bn2.bias[5] = 100.0  # filter 5 always does
    data = TensorDataset(torch.randn(16, 3, 16, 16), torch.zeros(16, dtype=torch.long))
    apoz = activation_apoz(model, ("conv2.weight",), data, 16)["conv2.weight"]
    assert apoz[3] == 1.0 and apoz[5] == 0.0 and apoz.shape == (32,)


def test_lr_schedulers_that_follow_a_metric_or_several_gammas() -> None:
    steps: list[str] = []
    _train({"lr_schedulers": {"lr": {"class": "ReduceLROnPlateau", "patience": 0,
                                     "factor": 0.5}},
            "policies": [{"lr_scheduler": {"instance_name": "lr"}, "starting_epoch": 0,
                          "ending_epoch": 3}]}, epochs=3, log=steps.append)
    # the validation loss stays 1.0: no improvement after the first epoch halves the lr
    assert [line.split("lr ")[1].split(",")[0] for line in steps] == ["0.05", "0.025", "0.0125"]
    lines: list[str] = []
    _train({"lr_schedulers": {"lr": {"class": "MultiStepMultiGammaLR", "milestones": [1, 2],
                                     "gammas": [0.1, 0.5]}},
            "policies": [{"lr_scheduler": {"instance_name": "lr"}, "starting_epoch": 0,
                          "ending_epoch": 3}]}, epochs=3, log=lines.append)
    assert [line.split("lr ")[1].split(",")[0] for line in lines] == ["0.005", "0.0025", "0.0025"]


def test_regularisers_penalise_their_weights() -> None:
    from edge_tune.compression.regularizers import L1, GroupVariance

    weights = {"w": torch.tensor([[1.0, -2.0], [0.0, 3.0]])}
    assert float(L1().penalty(weights, {"reg_regims": {"w": 0.5}})) == 3.0
    assert L1().masks(weights, {"reg_regims": {"w": 1.0}, "threshold_criteria": "Mean_Abs"}
                      )["w"].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    spread = GroupVariance().penalty({"w": torch.ones(4, 3, 1, 1) * torch.tensor(
        [1.0, 2.0, 3.0]).view(1, 3, 1, 1)}, {"reg_regims": {"w": (1.0, "Channels")}})
    assert float(spread) == pytest.approx(1.0 / torch.tensor([2.0, 4.0, 6.0]).var().item())


SHIPPED = {p.relative_to(RECIPES).as_posix(): p for p in sorted(RECIPES.glob("*/**/*.yaml"))}
ARCHES = yaml.safe_load((RECIPES / "architectures.yaml").read_text())
CHEAP = ("resnet20_cifar", "plain20_cifar", "preact_resnet20_cifar", "resnet56_cifar",
         "mobilenet", "vgg16_cifar", "torchvision:resnet18", "torchvision:alexnet",
         "torchvision:resnet50", "torchvision:vgg19")  # cheapest first


def _arch(path: str) -> str:
    return str(ARCHES[max((p for p in ARCHES if path.startswith(p)), key=len)])


def _representatives() -> dict[str, str]:
    """Per Distiller class: the cheapest shipped recipe that uses it and loads."""
    from edge_tune.compression.recipe import load_recipe
    from edge_tune.core.errors import UserError

    found: dict[str, str] = {}
    for path in sorted(SHIPPED, key=lambda p: (CHEAP.index(_arch(p)), p)):
        try:
            recipe = load_recipe(SHIPPED[path])
        except UserError:
            continue
        for inst in recipe.instances.values():
            found.setdefault(inst.cls, path)
    return found


REPRESENTATIVE = _representatives()


def test_every_class_distillers_examples_use_has_a_representative() -> None:
    from edge_tune.compression.classes import CLASSES

    assert set(REPRESENTATIVE) <= set(CLASSES) and len(REPRESENTATIVE) == 23


@pytest.mark.parametrize("cls", sorted(REPRESENTATIVE))
def test_a_representative_recipe_per_class_runs(cls: str) -> None:
    """Each class Distiller's examples use, in the first shipped recipe that uses it, run
    unchanged for one epoch (rescaled from its header) on its architecture, 32 images."""
    from edge_tune.compression.recipe import check_weights, fit_epochs, load_recipe

    path = REPRESENTATIVE[cls]
    arch = _arch(path)
    if cls == "QuantAwareTrainRangeLinearQuantizer":
        pytest.skip("NNCF's torch extension compiles for a minute: "
                    "test_compress_runs_quantisation_aware_training runs this recipe")
    size = 64 if arch == "torchvision:alexnet" else 32
    model = create_model(arch, 10)
    recipe = load_recipe(SHIPPED[path])
    check_weights(recipe, [n for n, _ in model.named_parameters()])
    recipe, epochs = fit_epochs(recipe, None, 1)
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 3, size, size), torch.randint(0, 10, (32,)))
    example = torch.zeros(1, 3, size, size)
    run = run_recipe(model, recipe, data, epochs, 0.01, 1e-4, 16, example, log=lambda _: None,
                     validate=lambda m: (1.0, 50.0), calibration_images=8)
    assert run.model(example).shape == (1, 10)
    names = [i.name for i in recipe.instances.values() if i.cls == cls]
    spec = recipe.instances[names[0]].spec
    if spec.pruner is not None:
        assert any(run.last.get(n) for n in names)  # it set masks
    if spec.removes:
        assert any(n in run.thinned for n in names)  # it thinned (maybe nothing was zero)
    if spec.int8 is not None:
        assert run.qat if spec.qat else run.int8 is not None
    if spec.regularizer is not None:
        inst = recipe.instances[names[0]]
        assert float(spec.regularizer.penalty(run.params(), inst.args)) > 0
