from pathlib import Path

import pytest

from edge_tune.config import Config, config_from_dict, load_config
from edge_tune.core.errors import UserError
from tests.conftest import ROOT


def test_default_is_resnet20_on_digits() -> None:
    config = load_config(None)
    assert isinstance(config, Config)
    assert config.model == "resnet20_cifar"
    assert config.data.name == "digits"
    assert config.bench.device == "CPU" and config.bench.precision == "f32"


def test_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: simple_cnn\nfinetune:\n  epochs: 7\n")
    config = load_config(path)
    assert config.model == "simple_cnn"
    assert config.finetune.epochs == 7
    assert config.finetune.lr == Config().finetune.lr


@pytest.mark.parametrize(("raw", "message"), [
    ({"modle": "x"}, "config: unknown 'modle' (did you mean 'model'?)"),
    ({"finetune": {"epochs": -1}}, "finetune.epochs: expected an integer >= 0, got -1"),
    ({"finetune": {"epocs": 3}}, "finetune: unknown 'epocs' (did you mean 'epochs'?)"),
    ({"bench": {"precision": "f64"}}, "bench.precision: expected one of f32, f16, bf16, got 'f64'"),
    ({"data": {"val_fraction": 0.9}}, "data.val_fraction: expected 0 <= x < 0.5, got 0.9"),
    ({"model": "resnet21"}, "model: unknown 'resnet21' (did you mean 'resnet20_cifar'?)"),
    ({"data": {"name": "mnist"}}, "data.name: unknown 'mnist'"),
    ({"data": 3}, "data.: expected a mapping, got 3"),
    ({"data": {"download": "yes"}}, "data.download: expected true or false, got 'yes'"),
    ({"quantize": {"max_drop": -1}}, "quantize.max_drop: expected 0 <= x <= 100, got -1"),
    ({"quantize": {"keep_slower_int8": 1}},
     "quantize.keep_slower_int8: expected true or false, got 1"),
    ({"bench": {"devices": "GPU.0"}}, "bench.devices: expected a list of OpenVINO device names"),
    ({"bench": {"devices": ["GPU.0", ""]}}, "bench.devices: expected a list of OpenVINO device"),
])
def test_bad_values_name_their_yaml_path(raw: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        config_from_dict(raw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="malformed YAML"):
        load_config(bad)
    with pytest.raises(UserError, match="--config: no such file"):
        load_config(tmp_path / "absent.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="malformed YAML"):
        load_config(evil)


def test_every_example_config_loads() -> None:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(examples) >= 5
    for path in examples:
        config = load_config(path)
        assert config.model and config.data.name, path
