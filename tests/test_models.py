import pytest
import torch

from edge_tune.errors import UserError
from edge_tune.models import MODELS, create_model, model_spec


def test_resnet20_has_distiller_names_and_size() -> None:
    model = create_model("resnet20_cifar", 10)
    names = set(model.state_dict())
    for name in ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer1.2.bn2.bias",
                 "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                 "layer3.0.downsample.0.weight", "layer3.2.conv2.weight", "fc.weight"]:
        assert name in names
    assert "layer1.0.downsample.0.weight" not in names  # same shape: identity shortcut
    params = sum(p.numel() for p in model.parameters())
    assert 270_000 < params < 275_000  # Distiller's table: 270,896 weights incl. BN + fc
    stages = model_spec("resnet20_cifar").stages
    assert stages == ("layer1", "layer2", "layer3")
    assert all(isinstance(getattr(model, s), torch.nn.Sequential) for s in stages)


def test_resnet56_has_nine_blocks_per_stage() -> None:
    model = create_model("resnet56_cifar", 100)
    assert len(model.layer3) == 9
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_runs_at_other_input_sizes(name: str) -> None:
    model = create_model(name, 7).eval()
    for size in (16, 32, 64):
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 7)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UserError, match="valid: resnet20_cifar, resnet56_cifar, simple_cnn"):
        create_model("resnet18", 10)
