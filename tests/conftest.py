"""Shared fixtures: a private cache/HOME per session, tiny configs, exported small models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Baselines cached per test session, never in the user's ~/.cache."""
    os.environ["EDGE_TUNE_CACHE"] = str(tmp_path_factory.mktemp("edge_tune_cache"))


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would; output captured as text."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ}, check=False)


@pytest.fixture(scope="session")
def small_config() -> dict:
    """The small CNN on digits at 16x16, short training: seconds, not minutes."""
    return {"model": "simple_cnn", "data": {"image_size": 16},
            "baseline": {"epochs": 4, "lr": 0.05}, "finetune": {"epochs": 1},
            "bench": {"warmup": 5, "iterations": 30, "rounds": 2, "fps_seconds": 0.1},
            "quantize": {"calibration_images": 32}}
