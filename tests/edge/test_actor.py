"""The benchmark actor, alone and as a real Ray actor on the node with the ``ncs`` resource."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest
import torch

from edge_tune.catalog.models import create_model
from edge_tune.compression.export import export_onnx
from edge_tune.config import config_from_dict
from edge_tune.edge.actor import BenchActor, model_files
from edge_tune.edge.bench import BenchSettings

SETTINGS = BenchSettings(warmup=5, iterations=200, rounds=2, fps_seconds=0.1)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("actor")
    example = torch.zeros(1, 3, 32, 32)
    return {"small": export_onnx(create_model("simple_cnn", 10), example, folder / "s.onnx"),
            "resnet": export_onnx(create_model("resnet20_cifar", 10), example, folder / "r.onnx")}


def test_actor_benchmarks_against_its_baseline(models: dict[str, Path]) -> None:
    actor = BenchActor(model_files(models["resnet"]), SETTINGS)
    result = actor.benchmark(model_files(models["small"]))
    model, baseline = result.models["model"], result.baseline
    assert model.latency_ms < baseline.latency_ms  # 0.2M vs 41M MACs
    assert result.speedup() == pytest.approx(baseline.latency_ms / model.latency_ms)
    assert model.latency_ms <= model.latency_p90_ms and model.samples == 200
    assert {layer.type for layer in baseline.layers} >= {"Convolution"}
    assert result.started <= result.ended and result.call == 1 and result.node_id is None
    assert actor.info()["calls"] == 1


def test_model_files_carry_ir_weights(tmp_path: Path) -> None:
    (tmp_path / "m.xml").write_text("<net/>")
    (tmp_path / "m.bin").write_bytes(b"\x00\x01")
    assert list(model_files(tmp_path / "m.xml")) == ["m.xml", "m.bin"]


def test_ray_actor_sits_on_ncs_node_and_never_overlaps(models: dict[str, Path]) -> None:
    import ray

    from edge_tune.run.cluster import start_actors

    ray.init(address="local", num_cpus=2, resources={"ncs": 1}, include_dashboard=False,
             namespace="edge_tune_test", log_to_driver=False)
    try:
        pinned: list = []
        [actor] = start_actors(models["resnet"], config_from_dict(
            {"bench": {"warmup": 5, "iterations": 200, "rounds": 2, "fps_seconds": 0.1}}).bench,
            pinned)
        info = ray.get(actor.info.remote())
        node = next(n for n in ray.nodes() if n["NodeID"] == info["node_id"])
        assert node["Resources"].get("ncs") == 1
        files = model_files(models["small"])
        results: list = []

        def call() -> None:
            results.append(ray.get(actor.benchmark.remote(files, per_layer=False,
                                                          baseline=pinned)))

        threads = [threading.Thread(target=call) for _ in range(3)]
        for thread in threads:
            thread.start()
        queued = []
        while any(t.is_alive() for t in threads):  # the actor answers while it measures
            queued.append(ray.get(actor.load.remote())[0])
            time.sleep(0.05)
        for thread in threads:
            thread.join()
        assert max(queued) >= 2 and ray.get(actor.load.remote()) == (0, 3)
        spans = sorted((r.started, r.ended) for r in results)
        assert len(spans) == 3
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, f"benchmarks overlapped: {spans}"
    finally:
        ray.shutdown()


def test_a_noisy_session_is_repeated_and_the_calmest_kept(models: dict[str, Path]) -> None:
    from dataclasses import replace

    from edge_tune.edge.bench import BenchResult, ratio_cv

    steady = BenchResult(1.0, 1.0, 1.0, 0.0, 0.0, 4, rounds=[1.0, 2.0, 1.0, 2.0])
    assert ratio_cv(steady, steady) == 0.0
    moved = BenchResult(1.0, 1.0, 1.0, 0.0, 0.0, 4, rounds=[1.0, 1.0, 1.0, 1.0])
    assert ratio_cv(moved, steady) == pytest.approx(1 / 3)
    files = model_files(models["small"])
    never_calm = BenchActor(model_files(models["resnet"]),
                            replace(SETTINGS, max_ratio_cv=0.0, max_sessions=2))
    result = never_calm.benchmark(files, per_layer=False)
    assert result.models["model"].sessions == 2 and result.models["model"].ratio_cv > 0
    calm = BenchActor(model_files(models["resnet"]), replace(SETTINGS, max_ratio_cv=1.0))
    assert calm.benchmark(files, per_layer=False).models["model"].sessions == 1


def test_a_model_openvino_cannot_read_is_that_calls_error(models: dict[str, Path]) -> None:
    actor = BenchActor(model_files(models["resnet"]), SETTINGS)
    with pytest.raises(RuntimeError):  # OpenVINO's own error, raised to the calling trial
        actor.benchmark({"broken.onnx": b"this is not an ONNX model"}, per_layer=False)
    assert actor.load() == (0, 1)  # nothing left waiting; the device lock is free
    ok = actor.benchmark(model_files(models["small"]), per_layer=False)
    assert ok.call == 2 and ok.models["model"].latency_ms < ok.baseline.latency_ms


def test_an_actor_can_keep_cores_to_itself(models: dict[str, Path]) -> None:
    """Trials beside the device keep off the cores the actor measures on: it pins every
    thread of its process (those OpenVINO starts later inherit it) to its last cores."""
    import os

    from edge_tune.edge.actor import pin_to

    every = os.sched_getaffinity(0)
    try:
        actor = BenchActor(model_files(models["resnet"]), SETTINGS, reserve=1)
        kept = {max(every)} if len(every) > 1 else every
        assert set(actor.cores) == kept and actor.info()["cores"] == actor.cores
        result = actor.benchmark(model_files(models["small"]), per_layer=False)
        assert os.sched_getaffinity(0) == kept  # still, with OpenVINO's threads started
        threads = [int(t) for t in os.listdir("/proc/self/task")]
        assert all(os.sched_getaffinity(t) == kept for t in threads)
        assert result.speedup() > 1
    finally:
        pin_to(every)
    assert BenchActor(model_files(models["resnet"]), SETTINGS).cores == []
