"""Shared by the benchmark scripts: the machine and versions, and BENCHMARKS.md sections."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
PACKAGES = ["torch", "openvino", "nncf", "torch-pruning", "ray", "bayesian-optimization"]


def machine() -> str:
    """Cores, CPU model, Python and the versions that shape the figures."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1).strip() if found else cpu
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return (f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}; "
            + ", ".join(versions))


def write_section(title: str, command: str, body: str) -> Path:
    """Replace (or add) the ``## title`` section of BENCHMARKS.md with today's figures."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.is_file() else (
        "# edge_tune benchmarks\n\nFigures written by the scripts in `benchmarks/`; each "
        "section says how to reproduce it.\n")
    stamp = datetime.date.today().isoformat()
    section = (f"## {title}\n\n`{command}` ({stamp}; {machine()})\n\n{body.strip()}\n")
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.M | re.S)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + section)
    BENCHMARKS_MD.write_text(text.rstrip() + "\n")
    return BENCHMARKS_MD


def resnet20_pair(folder: Path) -> dict[str, Path]:
    """ONNX files of ResNet-20 (``baseline``) and its 50%-filter version (``model``), seed 0,
    pruned through the tuner's own recipe (filters ranked by L1 and removed)."""
    import torch

    from edge_tune.catalog.models import create_model
    from edge_tune.compression.export import export_onnx
    from edge_tune.compression.plan import plan_compression
    from edge_tune.compression.runner import apply_recipe
    from edge_tune.config import config_from_dict
    from edge_tune.search.params import schedule_from_params

    torch.manual_seed(0)
    example = torch.zeros(1, 3, 32, 32)
    dense = create_model("resnet20_cifar", 10).eval()
    pruned = create_model("resnet20_cifar", 10).eval()
    schedule = schedule_from_params({"filter_ratio": 0.5}, (), 0)
    apply_recipe(pruned, plan_compression(schedule, pruned, config_from_dict({})).recipe, example)
    return {"baseline": export_onnx(dense, example, folder / "dense.onnx"),
            "model": export_onnx(pruned, example, folder / "pruned.onnx")}
