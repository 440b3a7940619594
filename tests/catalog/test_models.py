from pathlib import Path

import pytest
import torch

from edge_tune.catalog.models import MODELS, create_model, model_stages
from edge_tune.core.errors import UserError


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
    stages = model_stages("resnet20_cifar")
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
        if size >= MODELS[name].min_image_size:
            assert model(torch.zeros(1, 3, size, size)).shape == (1, 7)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UserError, match="valid: mobilenet, plain20_cifar, preact_resnet20_cifar, "
                       "resnet20_cifar, resnet56_cifar, simple_cnn, vgg16_cifar"):
        create_model("resnet18", 10)


USER_MODEL = '''
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.head(self.body(x))

def make(num_classes):
    return Tiny(num_classes)

def not_a_model(num_classes):
    return {"num_classes": num_classes}

def wrong_output(num_classes):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
'''


def test_a_model_in_the_users_file_builds_with_the_class_count(tmp_path: Path) -> None:
    from edge_tune.catalog.models import check_model

    (tmp_path / "mine.py").write_text(USER_MODEL)
    name = f"{tmp_path / 'mine.py'}:make"
    model = create_model(name, 7)
    assert type(model).__name__ == "Tiny" and model.head[2].out_features == 7
    assert model_stages(name) == ("body",)  # the one child holding convs (head has none)
    check_model(name, 7, 16)  # (2, 7) logits: accepted


@pytest.mark.parametrize(("target", "message"), [
    ("torchvision:resnet19", "model: torchvision has no image-classification model 'resnet19' "
                             "(did you mean torchvision:resnet18?)"),
    ("{tmp}/absent.py:make", "model: no such file"),
    ("{tmp}/mine.py:mkae", "model: '{tmp}/mine.py' has no callable 'mkae'; callables: Tiny, "
                           "make, not_a_model, wrong_output"),
    ("{tmp}/broken.py:make", "model: importing '{tmp}/broken.py' raised ValueError: no "
                             "weights here"),
    ("{tmp}/mine.py:not_a_model", "returned a dict, expected a torch.nn.Module"),
    ("{tmp}/mine.py:wrong_output", "gives (2, 3600) for 2 images, expected (2, 10) logits"),
    ("no_such_module_xyz:make", "model: no module 'no_such_module_xyz'"),
])
def test_bad_models_are_one_line_errors(tmp_path: Path, target: str, message: str) -> None:
    from edge_tune.catalog.models import check_model, model_spec

    (tmp_path / "mine.py").write_text(USER_MODEL)
    (tmp_path / "broken.py").write_text("x = 1\nraise ValueError('no weights here\\nsecond')\n")
    name = target.format(tmp=tmp_path)
    model_spec.cache_clear()
    with pytest.raises(UserError) as err:
        check_model(name, 10, 32)
    assert message.format(tmp=tmp_path) in str(err.value)
    assert "\n" not in str(err.value)


# Distiller's weights tables (recipe headers) for each architecture: the dense baselines where
# one is published, else a fine-grained run (shapes stay dense there)
PUBLISHED = {
    "resnet20_cifar": ("ssl/resnet20_cifar_baseline_training.yaml", 10),
    "resnet56_cifar": ("pruning_filters_for_efficient_convnets/"
                       "resnet56_cifar_baseline_training.yaml", 10),
    "plain20_cifar": ("auto_compression/plain20_cifar_baseline_training.yaml", 10),
    "vgg16_cifar": ("baseline_networks/cifar/vgg16_cifar_baseline_training.yaml", 10),
    "mobilenet": ("agp-pruning/mobilenet.imagenet.schedule_agp.yaml", 1000),
    "torchvision:resnet18": ("agp-pruning/resnet18.schedule_agp.yaml", 1000),
    "torchvision:resnet50": ("agp-pruning/resnet50.schedule_agp.yaml", 1000),
    "torchvision:alexnet": ("agp-pruning/alexnet.schedule_agp.yaml", 1000),
}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_architectures_match_distillers_published_weight_shapes(arch: str) -> None:
    """Every conv/fc weight Distiller lists, with its shape and element count, and no other:
    the recipes written for these architectures name exactly these tensors."""
    from edge_tune.compression.recipe import published_layers
    from tests.conftest import ROOT

    recipe, classes = PUBLISHED[arch]
    table = published_layers((ROOT / "examples" / "distiller" / recipe).read_text())
    model = create_model(arch, classes)
    ours = {f"{n}.weight": tuple(m.weight.shape) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}
    assert {n: row.shape for n, row in table.items()} == ours
    assert sum(row.dense for row in table.values()) == sum(
        torch.Size(s).numel() for s in ours.values())


def test_distiller_architectures_by_name() -> None:
    plain = create_model("plain20_cifar", 10)
    assert not any("downsample" in n for n, _ in plain.named_modules())  # no shortcuts
    preact = create_model("preact_resnet20_cifar", 10)
    names = set(preact.state_dict())
    assert {"layer1.0.pre_bn.weight", "layer2.0.bn.weight", "final_bn.weight"} <= names
    assert sum(p.numel() for p in preact.parameters()) == sum(
        p.numel() for p in plain.parameters())  # same convs, BN moved, parameter-free shortcut
    assert sum(p.numel() for p in create_model("mobilenet", 1000).parameters()) == 4_231_976
    with pytest.raises(UserError, match="data.image_size: vgg16_cifar needs at least 32 px"):
        from edge_tune.catalog.models import check_model
        check_model("vgg16_cifar", 10, 16)
