"""``python -m edge_tune.study`` on a small model, and its report: rows, layers, PNGs, W&B."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from edge_tune.compression.methods import METHODS, Layers, merge
from edge_tune.compression.recipe import recipe_from_dict
from tests.conftest import run_module
from tests.wandb_files import history

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_method_is_a_valid_recipe_and_methods_compose() -> None:
    layers = Layers(["conv1.weight", "conv2.weight", "conv3.weight"],
                    ["conv2.weight", "conv3.weight"], ["conv2.weight", "conv3.weight"])
    recipes = {name: m.recipe(layers, 4) for name, m in METHODS.items()}
    for name, recipe in recipes.items():
        loaded = recipe_from_dict(recipe, name)
        assert loaded.instances, name
    both = recipe_from_dict(merge(recipes["filters 50%"], recipes["fine-grained 80%"],
                                  recipes["int8"]))
    kinds = [p.instance for p in both.policies]
    assert kinds.index("filters") < kinds.index("filter_thinner") < kinds.index("fine")
    assert kinds.count("finetune_lr") == 1 and "int8" in both.instances
    ssl = recipe_from_dict(recipes["SSL channels"])
    assert ssl.policies[0].ending_epoch == 2 and ssl.at(2)[0].instance == "ssl_thinner"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory, small_config: dict) -> Path:
    folder = tmp_path_factory.mktemp("study")
    config = {**small_config, "finetune": {"epochs": 3}, "tune": {"trial_cpus": 1}}
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    env_key = os.environ.pop("WANDB_API_KEY", None)
    try:
        result = run_module("edge_tune.study", "--config", str(folder / "c.yaml"), "--output",
                            str(folder / "out"), timeout=900)
    finally:
        if env_key is not None:
            os.environ["WANDB_API_KEY"] = env_key
    assert result.returncode == 0, result.stderr[-4000:]
    assert "stage 1/3 methods alone" in result.stderr and "ETA" in result.stderr
    return folder / "out"


def test_study_rows_verification_and_layers(study_dir: Path) -> None:
    study = json.loads((study_dir / "study.json").read_text())
    rows = {r["method"]: r for r in study["rows"]}
    assert set(METHODS) <= set(rows) and rows["baseline"]["speedup"] == 1.0
    base_ms = rows["baseline"]["latency_ms"]
    for r in rows.values():  # one session: every speed-up is the ratio of its own two medians
        assert r["speedup"] == pytest.approx(base_ms / r["latency_ms"]), r["method"]
        assert r["latency_ms"] <= r["latency_p90_ms"] and r["params"] <= rows["baseline"]["params"]
        assert r["reached"], r["method"]
    fine = rows["fine-grained 80%"]
    assert fine["macs"] == rows["baseline"]["macs"] and fine["sparse_layers"] >= 2
    assert fine["smaller_layers"] == 0 and any("dense" in n for n in fine["notes"])
    assert rows["filters 50%"]["macs"] < 0.5 * rows["baseline"]["macs"]
    assert rows["channels 50%"]["thinned"]["channel_thinner"]
    assert rows["int8"]["int8"] and (study_dir / "methods" / "int8" / "model_int8.xml").is_file()
    composed = [r for r in study["rows"] if r["family"] == "composed"]
    assert all(r["int8"] for r in composed)
    with (study_dir / "layers.csv").open() as handle:
        layers = list(csv.DictReader(handle))
    named = {r["layer"] for r in layers if r["method"] == "baseline"
             and r["type"] == "Convolution"}
    assert {"conv1", "conv2", "conv3"} <= named  # runtime nodes carry the model's names
    recipe = yaml.safe_load((study_dir / "methods" / "filters_50" / "recipe.yaml").read_text())
    assert recipe_from_dict(recipe).instances["filter_thinner"].cls == "FilterRemover"


def test_study_report_pngs_and_wandb(study_dir: Path) -> None:
    report = (study_dir / "report.md").read_text()
    assert "fine-grained 80%" in report and "## Where the time goes" in report
    for name in ["pareto", "layers", "speedup"]:
        png = study_dir / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
        assert f"({name}.png)" in report
    import matplotlib.image

    height, width = matplotlib.image.imread(study_dir / "pareto.png").shape[:2]
    assert width >= 800 and height >= 500
    runs = list((study_dir / "wandb").rglob("run-*.wandb"))
    assert len(runs) == 1
    logged = history(runs[0])
    assert logged["methods/_type"] == "table-file" and logged["methods/nrows"] >= 9
    assert {logged[f"{k}/_type"] for k in ["pareto", "layers", "speedup"]} == {"image-file"}


def test_report_command_rewrites_a_study_report(study_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study_dir, copy, ignore=shutil.ignore_patterns("*.png", "report.md",
                                                                   "wandb"))
    result = run_module("edge_tune.report", str(copy), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(copy / "report.md")
    report = (copy / "report.md").read_text()
    study = json.loads((copy / "study.json").read_text())
    for row in study["rows"][1:]:  # every method is in the table with its speed-up
        assert f"| {row['method']} |" in report
    for name in ["pareto", "layers", "speedup"]:
        assert (copy / f"{name}.png").read_bytes()[:8] == PNG
    assert not (copy / "wandb").exists()  # no --wandb: nothing logged


def test_report_on_a_missing_or_foreign_directory(tmp_path: Path) -> None:
    result = run_module("edge_tune.report", str(tmp_path / "nope"), timeout=60)
    assert result.returncode == 2 and "RUN_DIR: no such directory" in result.stderr
    result = run_module("edge_tune.report", str(tmp_path), timeout=60)
    assert result.returncode == 2 and "holds neither study.json" in result.stderr
