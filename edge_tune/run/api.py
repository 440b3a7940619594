"""The tuner and the study from Python, as :mod:`edge_tune`'s public API runs them: checked
first, on a Ray started here (or joined at ``address``), left again when done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edge_tune.config import Config, config_to_dict
from edge_tune.core.environment import wandb_environment
from edge_tune.core.files import check_output, new_run_dir
from edge_tune.run.cluster import connect, shutdown
from edge_tune.run.pipeline import check_inputs
from edge_tune.run.study import run_methods
from edge_tune.run.tuner import launch, validate
from edge_tune.search.space import load_space


def run_tune(config: Config, output: str | Path | None = None, address: str | None = None,
             wandb: bool = False) -> dict[str, Any] | None:
    """A tune run in ``output`` (None: ``runs/tune-<time>``), as ``python -m edge_tune.tune``
    does it: what summary.json holds (with ``interrupted`` when the device left and did not
    come back), or None when it was interrupted (``--resume`` goes on)."""
    space = load_space(config.tune.search_space)
    validate(config, space, device_here=address is None)
    check_output(output)
    summary, _ = launch(config, space, address, wandb, lambda: new_run_dir(output, "tune"),
                        resume=False)
    return summary


def run_study(config: Config, output: str | Path, wandb: bool = False) -> dict[str, Any]:
    """A study in ``output``, as ``python -m edge_tune.study`` does it: what study.json
    holds."""
    check_inputs(config)
    check_output(output)
    wandb_environment(wandb)
    _, config = connect(None, config)
    try:
        out = new_run_dir(output, "study")
        (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        return run_methods(config, out, wandb=wandb)
    finally:
        shutdown()
