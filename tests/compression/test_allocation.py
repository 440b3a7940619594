"""Per-layer allocation: a model's groups, the profile's interpolation, the groups'
sensitivity, and the greedy and uniform allocations that reach a latency target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge_tune.catalog.models import create_model
from edge_tune.compression.allocation import MIN_KEPT, Allocator
from edge_tune.compression.groups import Group, Structure, structure
from edge_tune.compression.profile import DeviceProfile, _interp
from edge_tune.compression.sensitivity import Sensitivity


def test_resnet20s_groups_are_its_residual_streams_and_block_convs() -> None:
    shape = structure(create_model("resnet20_cifar", 10).eval(), torch.zeros(1, 3, 32, 32))
    by_name = {g.name: g for g in shape.groups}
    assert len(shape.groups) == 12  # 3 residual streams + 9 first convs of the blocks
    stream = by_name["conv1"]
    assert stream.width == 16 and set(stream.convs) == {
        "conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"}
    assert "layer1.0.conv1" in stream.readers and "layer2.0.downsample.0" in stream.readers
    assert by_name["layer3.1.conv1"].readers == ("layer3.1.conv2",)
    half = shape.layer_fractions({"layer3.1.conv1": 0.5})
    assert half["layer3.1.conv1"] == 0.5 and half["layer3.1.conv2"] == 0.5  # out, then in
    assert half["layer3.2.conv1"] == 1.0 and shape.macs_fraction(half) < 1.0


def test_mobilenet_v2s_depthwise_convs_shrink_with_their_input() -> None:
    shape = structure(create_model("torchvision:mobilenet_v2", 10).eval(),
                      torch.zeros(1, 3, 32, 32))
    group = next(g for g in shape.groups if g.name == "features.2.conv.0.0")
    depthwise = next(c for c in group.convs if c in shape.depthwise)
    layers = shape.layer_fractions({group.name: 0.5})
    assert layers[depthwise] == 0.5 and layers["features.2.conv.0.0"] == 0.5


def test_the_profile_interpolates_between_measured_points() -> None:
    points = [(0.25, 1.0), (0.5, 2.0), (1.0, 3.0)]
    assert _interp(points, 1.0) == 3.0 and _interp(points, 0.75) == pytest.approx(2.5)
    assert _interp(points, 0.125) == pytest.approx(0.5)  # the line of the two lowest...
    assert _interp(points, 0.01) == pytest.approx(0.5)  # ...never under half the lowest


def _toy() -> Allocator:
    """Two groups of 16 filters, one layer each: ``a`` costs the time, ``b`` the accuracy."""
    shape = Structure((Group("a", 16, ("a",), ()), Group("b", 16, ("b",), ())),
                      {"a": 100, "b": 100}, frozenset())
    curve = [(0.125, 0.125), (0.5, 0.5), (1.0, 1.0)]  # time in proportion to channels
    profile = DeviceProfile({"device": "toy"}, {"f32": {"a": curve, "b": [
        (x, 0.2 * y) for x, y in curve]}, "int8": {"a": curve, "b": curve}},
        {"f32": [(0.0, 0.0), (1.0, 0.0)], "int8": [(0.0, 0.0), (1.0, 0.0)]},
        {"f32": [1.2, 0.6], "int8": [2.0, 1.0]}, {"f32": [1.2, 0.6], "int8": [2.0, 1.0]})
    sensitivity = Sensitivity(99.0, {"a": [(0.5, 0.1)], "b": [(0.5, 5.0)]})
    return Allocator(shape, profile, sensitivity)


def test_greedy_cuts_where_time_is_cheap_in_accuracy() -> None:
    allocator = _toy()
    device = allocator.allocate(0.5, int8=False, device=True, multiple=1)
    uniform = allocator.allocate(0.5, int8=False, device=False, multiple=1)
    assert device.reached and uniform.reached
    assert device.predicted <= 0.5 and uniform.predicted <= 0.5
    assert device.kept["a"] < device.kept["b"] == 16  # ``a`` holds the time, ``b`` the top-1
    assert uniform.kept["a"] == uniform.kept["b"]
    cost = (allocator.sensitivity.drop("a", 1 - device.kept["a"] / 16)
            + allocator.sensitivity.drop("b", 1 - device.kept["b"] / 16))
    uniform_cost = (allocator.sensitivity.drop("a", 1 - uniform.kept["a"] / 16)
                    + allocator.sensitivity.drop("b", 1 - uniform.kept["b"] / 16))
    assert cost < uniform_cost
    ratios = allocator.ratios(device)
    assert ratios["b"] == 0.0 and ratios["a"] == 1 - device.kept["a"] / 16


def test_floors_multiples_and_what_cannot_be_reached() -> None:
    allocator = _toy()
    fastest = allocator.fastest(int8=False, multiple=1)
    assert fastest == pytest.approx(allocator.predict({"a": 2, "b": 2}, False))  # 1/8 kept
    too_far = allocator.allocate(fastest / 2, int8=False, device=True, multiple=1)
    assert not too_far.reached and min(too_far.kept.values()) >= MIN_KEPT * 16
    aligned = allocator.allocate(0.6, int8=False, device=True, multiple=4)
    assert all(k % 4 == 0 for k in aligned.kept.values())
    assert allocator.allocate(0.6, int8=False, device=False, multiple=8).kept == {"a": 8, "b": 8}


def test_sensitivity_is_linear_between_levels_and_never_negative() -> None:
    s = Sensitivity(90.0, {"g": [(0.25, 1.0), (0.5, 3.0), (0.75, 2.0)]})
    assert s.drop("g", 0.0) == 0.0 and s.drop("g", 0.125) == pytest.approx(0.5)
    assert s.drop("g", 0.6) == pytest.approx(2.6) and s.drop("g", 1.0) == pytest.approx(1.0)
    assert Sensitivity(90.0, {"g": [(0.25, -1.0), (0.5, -2.0)]}).drop("g", 0.4) == 0.0
    assert s.drop("unknown", 0.5) == 0.0


def test_sensitivity_is_measured_once_per_baseline_and_data(tmp_path: Path) -> None:
    from edge_tune.catalog.data import load_data
    from edge_tune.compression.sensitivity import cached_sensitivity, sensitivity_key
    from edge_tune.config import config_from_dict

    config = config_from_dict({"model": "simple_cnn", "data": {"image_size": 16}})
    splits = load_data(config.data)
    torch.manual_seed(0)
    model = create_model("simple_cnn", splits.num_classes).eval()
    shape = structure(model, torch.zeros(1, 3, 16, 16))
    said: list[str] = []
    first = cached_sensitivity(tmp_path, model, shape, splits, config, said.append)
    again = cached_sensitivity(tmp_path, model, shape, splits, config, said.append)
    assert again == first and set(first.drops) == {g.name for g in shape.groups}
    assert said[0].startswith("sensitivity: each group") and said[1].startswith(
        "sensitivity: cached")
    key = sensitivity_key(model, config)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # other weights: another baseline
    assert sensitivity_key(model, config) != key
    other = config_from_dict({"model": "simple_cnn", "data": {"image_size": 16, "seed": 1}})
    assert sensitivity_key(model, other) != sensitivity_key(model, config)
