"""torchvision's CNNs through the tuner's filter pruning: every graph kind torch-pruning follows
(residual adds, concatenation, depthwise and grouped convs, squeeze-excitation, linear heads),
and the one it cannot trace whole (ShuffleNet's channel shuffle), pruned block by block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge_tune.catalog.models import create_model, model_stages
from edge_tune.compression.export import count_macs, export_onnx, weight_stats
from edge_tune.compression.plan import plan_compression
from edge_tune.compression.runner import apply_recipe
from edge_tune.config import config_from_dict
from edge_tune.edge.verify import verify
from edge_tune.search.params import schedule_from_params

EXAMPLE = torch.zeros(1, 3, 32, 32)


def _half_filters(name: str) -> tuple[torch.nn.Module, int, int, dict[str, str]]:
    torch.manual_seed(0)
    model = create_model(name, 10).eval()
    before, _ = count_macs(model, EXAMPLE)
    schedule = schedule_from_params({"filter_ratio": 0.5}, model_stages(name), 0)
    plan = plan_compression(schedule, model, config_from_dict({"model": name}))
    run = apply_recipe(model, plan.recipe, EXAMPLE)
    after, _ = count_macs(model, EXAMPLE)
    return model, before, after, run.skipped


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small",
                                  "efficientnet_b0", "densenet121", "vgg11_bn",
                                  "regnet_x_400mf"])
def test_half_the_filters_go_and_the_head_keeps_its_classes(name: str) -> None:
    model, before, after, skipped = _half_filters(f"torchvision:{name}")
    # half the filters of every conv: MACs fall to about a quarter (at most 40% here)
    assert after < 0.4 * before, (before, after)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert skipped == {}


def test_a_graph_torch_pruning_cannot_trace_is_pruned_block_by_block() -> None:
    """ShuffleNet's channel shuffle defeats torch-pruning's whole-model graph: the channels
    inside each branch still go, the convs whose channels leave a branch stay and are listed."""
    model, before, after, skipped = _half_filters("torchvision:shufflenet_v2_x1_0")
    assert after < 0.75 * before and model(EXAMPLE).shape == (1, 10)
    assert model.stage2[1].branch2[0].out_channels == 29  # inside a branch: half of 58 went
    assert model.stage2[1].branch2[5].out_channels == 58  # leaves the branch: kept
    assert "stage2.1.branch2.5" in skipped and "stage2.1.branch2.0" not in skipped
    assert all("traced alone" in why for why in skipped.values())


def test_depthwise_and_squeeze_excitation_layers_are_verified_by_name(tmp_path: Path) -> None:
    dense = create_model("torchvision:mobilenet_v3_small", 10).eval()
    shapes = {k: v[0] for k, v in weight_stats(dense).items()}
    model, _, _, _ = _half_filters("torchvision:mobilenet_v3_small")
    onnx = export_onnx(model, EXAMPLE, tmp_path / "m.onnx")
    checks = verify(weight_stats(model), shapes, onnx)
    by_layer = {c.layer: c for c in checks}
    assert len(checks) == len(shapes) and all(c.reached for c in checks), \
        [c.layer for c in checks if not c.reached]
    depthwise = by_layer["features.1.block.0.0.weight"]  # groups == channels
    assert depthwise.torch_shape[1] == 1 and depthwise.torch_shape[0] < depthwise.baseline_shape[0]
    squeeze = by_layer["features.1.block.1.fc2.weight"]  # SE: its output scales the block
    assert squeeze.openvino_shape is not None
    assert squeeze.torch_shape[0] == depthwise.torch_shape[0]
