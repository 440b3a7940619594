"""edge_tune: find the compression that makes a CNN fastest on an edge device.

The public API, imported lazily (``import edge_tune`` loads nothing heavy, and the edge side,
:mod:`edge_tune.edge`, runs on a node without torch)::

    import edge_tune

    config = edge_tune.load_config("my.yaml")        # or None: ResNet-20 on digits
    result = edge_tune.run_trial(config, {"filter_ratio": 0.5, "int8": 1}, out_dir)
    summary = edge_tune.run_tune(config)             # a Ray Tune search on a local Ray
    study = edge_tune.run_study(config, out_dir)     # each method alone, then composed

Registries (one entry adds a model, data set, Distiller class, searcher or parameter):
``MODELS``, ``DATASETS``, ``CLASSES``, ``SEARCHERS``, ``PARAMETERS``.

The package by role, each folder importing only those before it (core < catalog, edge,
search < config < compression < run < the commands ``tune``, ``trial``, ``study``,
``compress``, ``report``, ``node``): see ARCHITECTURE.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first use)
_API = {
    "load_config": "edge_tune.config",
    "Config": "edge_tune.config",
    "run_trial": "edge_tune.run.pipeline",
    "run_recipe_trial": "edge_tune.run.pipeline",
    "run_tune": "edge_tune.run.api",
    "run_study": "edge_tune.run.api",
    "write_report": "edge_tune.run.report",
    "MODELS": "edge_tune.catalog.models",
    "DATASETS": "edge_tune.catalog.data",
    "CLASSES": "edge_tune.compression.classes",
    "SEARCHERS": "edge_tune.search.searchers",
    "PARAMETERS": "edge_tune.search.params",
    "UserError": "edge_tune.core.errors",
}
__all__ = ["CLASSES", "DATASETS", "MODELS", "PARAMETERS", "SEARCHERS", "Config", "UserError",
           "load_config", "run_recipe_trial", "run_study", "run_trial", "run_tune",
           "write_report"]

if TYPE_CHECKING:
    from edge_tune.catalog.data import DATASETS
    from edge_tune.catalog.models import MODELS
    from edge_tune.compression.classes import CLASSES
    from edge_tune.config import Config, load_config
    from edge_tune.core.errors import UserError
    from edge_tune.run.api import run_study, run_tune
    from edge_tune.run.pipeline import run_recipe_trial, run_trial
    from edge_tune.run.report import write_report
    from edge_tune.search.params import PARAMETERS
    from edge_tune.search.searchers import SEARCHERS


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'edge_tune' has no attribute {name!r}")
    return getattr(import_module(_API[name]), name)
