"""Searchers by name (``tune.searcher``): a dict registry of builders of Ray Tune searchers.

A builder takes the search settings (the ``tune:`` config section answers them) and the search
space and returns a Ray Tune :class:`~ray.tune.search.Searcher` that minimises ``objective``
(it may read the rest of what a trial reports through
:func:`edge_tune.search.result.read_result`); :func:`create_searcher` limits it to
``max_concurrent`` trials at once. Adding a searcher is one entry in :data:`SEARCHERS` plus its
builder.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from ray.tune.search import ConcurrencyLimiter, Searcher

from edge_tune.core.errors import lookup
from edge_tune.search.objective import METRIC, MODE
from edge_tune.search.params import param_spec
from edge_tune.search.space import SearchSpace


class SearchSettings(Protocol):
    """What a searcher is built with; the config's ``tune:`` section answers it."""

    @property
    def searcher(self) -> str: ...  # a name in SEARCHERS
    @property
    def seed(self) -> int: ...
    @property
    def random_steps(self) -> int: ...  # trials before the model guides
    @property
    def points_to_evaluate(self) -> list[dict[str, float]]: ...  # replace the space's own
    @property
    def num_samples(self) -> int: ...  # the whole budget, in trials
    @property
    def max_concurrent(self) -> int: ...


SearcherBuilder = Callable[[SearchSettings, SearchSpace], Searcher]


def _points(tune: SearchSettings, space: SearchSpace) -> list[dict[str, float]]:
    """Hand-made starting points: the config's replace the space's own."""
    return tune.points_to_evaluate or space.points


def bayesopt(tune: SearchSettings, space: SearchSpace) -> Searcher:
    """Latency ratio as the target, validation top-1 >= threshold as a modelled constraint,
    int8 as a choice (:class:`edge_tune.search.bayesopt.ConstrainedBayesOpt`)."""
    from edge_tune.search.bayesopt import ConstrainedBayesOpt  # bayes_opt, scikit-learn: ~2 s

    return ConstrainedBayesOpt(space.bounds, choices(space), integers(space),
                               _points(tune, space), tune.random_steps, tune.seed)


def bayesopt_penalty(tune: SearchSettings, space: SearchSpace) -> Searcher:
    """Ray Tune's BayesOptSearch on the penalty objective (what ``bayesopt`` replaced)."""
    from edge_tune.search.bayesopt import PenaltyBayesOpt

    # patience = the whole budget: with trials in flight it re-suggests points already
    # running and would stop early at its default of 5 repeats
    return PenaltyBayesOpt(metric=METRIC, mode=MODE, random_state=tune.seed,
                           random_search_steps=tune.random_steps,
                           points_to_evaluate=_points(tune, space) or None,
                           patience=tune.num_samples)


def choices(space: SearchSpace) -> dict[str, tuple[float, ...]]:
    """The space's choice parameters and the values inside its bounds (int8: off, on)."""
    found = {}
    for name, (low, high) in space.bounds.items():
        values = tuple(v for v in param_spec(name).choices if low <= v <= high)
        if values:
            found[name] = values
    return found


def integers(space: SearchSpace) -> frozenset[str]:
    return frozenset(n for n in space.bounds if param_spec(n).integer)


class RandomSearch(Searcher):
    """Uniform random points in the space's bounds (seeded), after the starting points."""

    def __init__(self, bounds: dict[str, tuple[float, float]], points: list[dict[str, float]],
                 seed: int, choices: dict[str, tuple[float, ...]] | None = None,
                 integers: frozenset[str] = frozenset()) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.bounds, self.choices, self.integers = bounds, choices or {}, integers
        self.pending = list(points)
        self.rng = np.random.default_rng(seed)

    def set_search_properties(self, metric: str | None, mode: str | None,
                              config: dict[str, Any], **spec: Any) -> bool:
        """The space is its own (bounds): Tune's ``param_space`` needs nothing more."""
        return True

    def suggest(self, trial_id: str) -> dict[str, float] | None:
        if self.pending:
            return self.pending.pop(0)
        params = {}
        for name, (low, high) in self.bounds.items():
            if name in self.choices:
                params[name] = float(self.rng.choice(self.choices[name]))
            elif name in self.integers:
                params[name] = float(self.rng.integers(math.ceil(low), math.floor(high) + 1))
            else:
                params[name] = float(self.rng.uniform(low, high))
        return params

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        """Random search learns nothing from results."""

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        # our own file, written by save() into the run directory
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))  # noqa: S301


def random_search(tune: SearchSettings, space: SearchSpace) -> Searcher:
    return RandomSearch(space.bounds, _points(tune, space), tune.seed, choices(space),
                        integers(space))


SEARCHERS: dict[str, SearcherBuilder] = {
    "bayesopt": bayesopt,
    "bayesopt_penalty": bayesopt_penalty,
    "random": random_search,
}


def check_searcher(tune: SearchSettings) -> SearcherBuilder:
    """The configured searcher's builder (a miss names ``tune.searcher`` and the valid names)."""
    return lookup(SEARCHERS, "tune.searcher", tune.searcher)


def create_searcher(tune: SearchSettings, space: SearchSpace) -> Searcher:
    """The configured searcher, at most ``tune.max_concurrent`` trials at once."""
    return ConcurrencyLimiter(check_searcher(tune)(tune, space), tune.max_concurrent)
