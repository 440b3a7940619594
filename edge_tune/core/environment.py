"""The process environment a command sets before Ray starts (Ray's workers inherit it): W&B's
mode, and Ray Tune's console reporter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal


def wandb_mode() -> Literal["online", "offline"]:
    """W&B runs online only with a key from the environment (never from a file we write)."""
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def wandb_folder(run: Path) -> Path:
    """Where a run's W&B files go (``run``/wandb, made here): the trials', the reference's and
    the report's runs side by side."""
    folder = (run / "wandb").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wandb_environment(wandb: bool) -> None:
    """W&B's mode in the environment before Ray starts: its workers inherit it."""
    if wandb:
        os.environ.setdefault("WANDB_MODE", wandb_mode())
        os.environ.setdefault("WANDB_SILENT", "true")


def quiet_tune() -> None:
    """One console line per trial is ours: Tune's own reporter (the experiment box, the
    TensorBoard hint) becomes its legacy one, which at verbosity 0 prints nothing."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


