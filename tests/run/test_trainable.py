"""The trainable's own decisions, on real plans: which precision an int8 trial deploys."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_tune.catalog.models import create_model
from edge_tune.compression.plan import CompressionPlan, in_float, plan_compression
from edge_tune.config import config_from_dict
from edge_tune.edge.actor import BenchCall, Measurement
from edge_tune.run.trainable import faster_precision
from edge_tune.search.params import schedule_from_params


def _measured(ms: float) -> Measurement:
    return Measurement(ms, ms * 1.1, ms, 0.01, 1000 / ms, 100, 0.01, 1)


def _call(int8_ms: float, float_ms: float) -> BenchCall:
    return BenchCall(_measured(1.0), {"model": _measured(int8_ms), "float": _measured(float_ms)},
                     0.0, 1.0, 1, None, 1)


def _plan() -> CompressionPlan:
    config = config_from_dict({})
    schedule = schedule_from_params({"filter_ratio": 0.5, "int8": 1.0, "finetune_epochs": 2.0},
                                    (), 2)
    return plan_compression(schedule, create_model(config.model, 10), config)


def test_the_plan_in_float_removes_the_same_filters_without_int8() -> None:
    plan = _plan()
    assert plan.schedule.int8 and "post_train_int8" in plan.loaded.instances
    floated = in_float(plan)
    assert not floated.schedule.int8 and "quantizers" not in floated.recipe
    assert "post_train_int8" not in floated.loaded.instances
    assert floated.ratios == plan.ratios and floated.recipe["pruners"] == plan.recipe["pruners"]


@pytest.mark.parametrize(("int8_ms", "float_ms", "keep", "deployed_int8"), [
    (0.5, 0.8, False, True),  # int8 faster: deployed as asked
    (0.9, 0.6, False, False),  # int8 slower: the same graph in float
    (0.9, 0.6, True, True),  # int8 slower, quantize.keep_slower_int8: as asked
])
def test_an_int8_trial_deploys_the_faster_precision(int8_ms: float, float_ms: float,
                                                    keep: bool, deployed_int8: bool) -> None:
    plan = _plan()
    measured, chosen, ratio = faster_precision(_call(int8_ms, float_ms), plan, keep)
    assert ratio == pytest.approx(int8_ms / float_ms)
    assert chosen.schedule.int8 == deployed_int8 and list(measured.models) == ["model"]
    assert measured.models["model"].latency_ms == (int8_ms if deployed_int8 else float_ms)
    assert measured.speedup() == pytest.approx(1.0 / measured.models["model"].latency_ms)


def test_a_float_trial_measures_one_graph() -> None:
    plan = in_float(_plan())
    call = BenchCall(_measured(1.0), {"model": _measured(0.7)}, 0.0, 1.0, 1, None, 1)
    assert faster_precision(call, plan, False) == (call, plan, None)


def test_a_deployed_graph_unlike_the_probes_is_measured_again(tmp_path: Path) -> None:
    """int8 under quantize.max_drop may leave layers in float: the trial's latency figures
    are then the deployed model's, measured at the real benchmark actor."""
    import ray
    import torch

    from edge_tune.compression.deployment import Artifact
    from edge_tune.compression.export import export_onnx
    from edge_tune.run.cluster import actor_name, start_actors
    from edge_tune.run.context import TrialContext
    from edge_tune.run.trainable import remeasure
    from edge_tune.search.result import Probe, TrialResult

    example = torch.zeros(1, 3, 32, 32)
    base = export_onnx(create_model("resnet20_cifar", 10).eval(), example, tmp_path / "r.onnx")
    small = export_onnx(create_model("simple_cnn", 10).eval(), example, tmp_path / "s.onnx")
    config = config_from_dict({"bench": {"warmup": 5, "iterations": 50, "rounds": 2,
                                         "fps_seconds": 0.1}})
    ray.init(address="local", num_cpus=1, resources={"ncs": 1}, include_dashboard=False,
             log_to_driver=False)
    try:
        pinned: list = []
        [_actor] = start_actors(base, config.bench, pinned)  # held while it measures
        context = TrialContext(config, {}, {}, 90.0, 89.0, (actor_name(0),), tuple(pinned))
        probe = Probe(9.0, 9.5, 100.0, 0.01, 0.01, 1, 1.0, 1 / 9, 0.0, 1, "n", 1, 0.0, 1.0,
                      0.1, 0.1, "n", "127.0.0.1")
        latency = TrialResult("latency", 9.0, 89.0, int8=True, probe=probe)
        artifact = Artifact(small, small, 90.0, 99.0, 1, 1, [], {}, "f32",
                            float_layers=["conv1"])
        measured, again = remeasure(artifact, context, latency)
        assert again.probe is not None and again.probe.bench_call == measured.call == 1
        assert again.latency_ratio == pytest.approx(1 / measured.speedup())
        assert again.latency_ratio < 1.0  # the small CNN, not the probe's 9x slower graph
        assert again.probe.latency_ms == measured.models["model"].latency_ms
        assert again.probe.trial_node_ip == "127.0.0.1" and again.int8  # the rest is kept
    finally:
        ray.shutdown()
