"""The benchmark scripts' own configurations stay valid as the config and spaces change."""

from pathlib import Path

import pytest
import yaml

from benchmarks.compare import ARMS, arm_space, merge
from edge_tune.config import config_from_dict
from edge_tune.search.space import space_from_dict

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"


@pytest.mark.parametrize("arm", sorted(ARMS))
@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_comparison_arm_is_a_valid_space_and_config(arm: str, config: str,
                                                          tmp_path: Path) -> None:
    params, overrides = ARMS[arm]
    space = space_from_dict({"parameters": params}, arm)
    assert set(space.bounds) == set(params)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"parameters": params}))
    raw = yaml.safe_load((CONFIGS / config).read_text())
    loaded = config_from_dict(merge(raw, merge(overrides, {
        "tune": {"search_space": str(tmp_path / "space.yaml"), "seed": 1}})))
    assert loaded.tune.seed == 1
    assert loaded.prune.channel_multiple == overrides.get("prune", {}).get(
        "channel_multiple", raw.get("prune", {}).get("channel_multiple", 1))


def test_targets_set_the_device_arms_latency_range_and_nothing_else() -> None:
    for arm, (params, _) in ARMS.items():
        space = arm_space(arm, [0.35, 0.9])
        if "latency_target" in params:
            assert space["latency_target"] == [0.35, 0.9]
            assert params["latency_target"] != [0.35, 0.9]  # ARMS itself unchanged
        else:
            assert space == params
