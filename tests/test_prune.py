"""Contract over every registered pruner, plus what each kind must do to a residual network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_tune import prune
from edge_tune.errors import UserError
from edge_tune.models import create_model
from edge_tune.recipe import schedule_from_params

EXAMPLE = torch.zeros(1, 3, 32, 32)


def _kept_fraction(model: nn.Module, name: str, baseline_filters: int) -> float:
    """Fraction of the layer's weights still doing work: filters left x non-zeros among them."""
    weight = dict(model.named_modules())[name].weight.detach()
    filters = weight.shape[0] / baseline_filters
    return filters * float((weight != 0).sum()) / weight.numel()


@pytest.mark.parametrize("kind", sorted(prune.PRUNERS))
def test_pruner_contract(kind: str) -> None:
    """Every pruner: prunes the named layers by about the ratio, leaves others, model runs."""
    model = create_model("resnet20_cifar", 10).eval()
    before = model(torch.randn(2, 3, 32, 32)).shape
    target, other = "layer3.1.conv1", "layer1.0.conv1"
    filters = {n: m.weight.shape[0] for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    prune.get_pruner(kind).apply(model, EXAMPLE, {target: 0.5})
    prune.finalize(model)
    assert _kept_fraction(model, target, filters[target]) == pytest.approx(0.5, abs=0.02)
    assert _kept_fraction(model, other, filters[other]) == 1.0
    assert model(torch.randn(2, 3, 32, 32)).shape == before
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


def test_unknown_pruner_lists_names() -> None:
    with pytest.raises(UserError, match="valid: filters, fine"):
        prune.get_pruner("channels")


def test_filter_pruning_keeps_residual_groups_consistent() -> None:
    model = create_model("resnet20_cifar", 10).eval()
    schedule = schedule_from_params({"filter_ratio_layer1": 0.5, "filter_ratio_layer2": 0.25,
                                     "filter_ratio_layer3": 0.75}, model.stages, 0)
    prune.get_pruner("filters").apply(model, EXAMPLE, prune.filter_ratios(model, schedule))
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules()
              if isinstance(m, nn.Conv2d | nn.Linear)}
    assert shapes["conv1"][0] == 8  # stem feeds layer1's residual stream: layer1's ratio
    assert {shapes[f"layer1.{b}.conv2"][0] for b in range(3)} == {8}
    assert shapes["layer2.0.downsample.0"] == (24, 8, 1, 1)
    assert {shapes[f"layer2.{b}.conv2"][0] for b in range(3)} == {24}
    assert shapes["layer3.1.conv1"][0] == 16
    assert shapes["fc"] == (10, 16)  # the classifier's inputs follow, its outputs stay
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_fine_pruning_zeroes_smallest_weights_and_keeps_masks_while_training() -> None:
    model = create_model("simple_cnn", 10)
    conv = model.conv2
    smallest = conv.weight.detach().abs().flatten().argsort()[:10]
    prune.get_pruner("fine").apply(model, EXAMPLE, {"conv2": 0.8})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.randn(4, 3, 16, 16)).sum()
    loss.backward()
    optimizer.step()
    prune.finalize(model)
    weight = conv.weight.detach().flatten()
    assert float((weight == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
    assert (weight[smallest] == 0).all()


def test_fine_layers_skip_the_input_conv() -> None:
    model = create_model("resnet20_cifar", 10)
    layers = prune.fine_layers(model)
    assert "conv1" not in layers and "layer1.0.conv1" in layers and len(layers) == 20
