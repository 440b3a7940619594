"""edge_tune's Gaussian-process searchers, on bayesian-optimization 1.x and scikit-learn.

:class:`ConstrainedBayesOpt` (``tune.searcher: bayesopt``, the default) models what a trial
measures instead of a penalty cliff: the latency ratio (model / baseline, lower is better) is
the target, validation top-1 >= threshold a constraint with its own Gaussian process
(bayes_opt's ``ConstraintModel``). The acquisition is expected improvement over the best
*feasible* ratio times the probability of feasibility (Gardner et al., 2014); before any trial
is feasible it is the highest optimistic top-1 (mean + KAPPA std of top-1 itself); top-1
below threshold - FLOOR is modelled at that floor (a collapse is infeasible, not noise). A choice
parameter (``int8``: off/on) is a dimension of both processes; the acquisition is maximised
with it pinned to each value and the value whose best point scores highest is proposed.
Integer parameters (``finetune_epochs``) are rounded before they are scored and run.
Parameters are scaled to [0, 1] so one kernel length fits every dimension.

:class:`PenaltyBayesOpt` (``bayesopt_penalty``) is Ray Tune's ``BayesOptSearch`` on the
penalty objective, kept for comparison (benchmarks/search.py).

Its own module so that the searcher registry imports it (and with it scikit-learn, ~2 s) only
when it is chosen.
"""

from __future__ import annotations

import itertools
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bayes_opt.constraint import ConstraintModel
from bayes_opt.util import UtilityFunction, acq_max
from ray.tune.search import Searcher
from ray.tune.search.bayesopt import BayesOptSearch
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Matern, WhiteKernel

from edge_tune.search.objective import METRIC, MODE
from edge_tune.search.result import read_result

XI = 0.01  # expected improvement's exploration margin, in latency-ratio units
KAPPA = 2.0  # standard deviations of optimism about top-1 while nothing is feasible
# points below the threshold at which a top-1 counts as simply infeasible: a collapsed trial
# (11% or 29% after heavy pruning at lr 0.1) otherwise reads to the constraint's process as
# noise, so no point looks surely infeasible and the search returns to the collapse
FLOOR = 5.0
# unit-cube distance (largest coordinate) within which a proposal repeats a trial: the search
# explores instead (on the Fashion-MNIST table 0.03 let 10 of 10 seeds reach the best point,
# 1e-3 let 8: proposals crept along 0.33, 0.32, 0.30 filters, one grid cell, three trials)
SAME = 0.03


@dataclass(frozen=True)
class Observation:
    """One finished (or stopped) trial as the searcher saw it."""

    x: tuple[float, ...]  # every parameter scaled to [0, 1], the space's order
    ratio: float  # latency ratio, model / baseline
    top1: float | None  # validation top-1 (percent); None: stopped before it was measured
    final: bool = True  # False: stopped during fine-tuning, top1 is a lower bound


def _gp(dims: int, seed: int) -> GaussianProcessRegressor:
    """Matern 5/2 as bayes_opt fits it, with a length per dimension (bounded: in the unit cube
    a length below 0.05 would fit the noise of a few trials) and a noise term (top-1 of the
    same point varies by a few tenths of a point between runs)."""
    kernel = Matern(length_scale=np.full(dims, 0.5), length_scale_bounds=(0.05, 20.0),
                    nu=2.5) + WhiteKernel(1e-3, (1e-6, 1e-1))
    return GaussianProcessRegressor(kernel=kernel, alpha=1e-6, normalize_y=True,
                                    n_restarts_optimizer=3, random_state=seed)


def _optimistic(x: np.ndarray, gp: GaussianProcessRegressor, y_max: Any) -> np.ndarray:
    """Upper confidence bound of the constraint's process: top-1 mean + KAPPA std (percent),
    the std of top-1 itself, not of one noisy measurement of it: a point measured again and
    again stops looking uncertain (with the noise in, the search re-proposed one point for
    twelve trials on the Fashion-MNIST table)."""
    mean, std = gp.predict(x, return_std=True)
    noise = gp.kernel_.k2.noise_level * float(np.square(gp._y_train_std).squeeze())
    return np.asarray(mean + KAPPA * np.sqrt(np.maximum(std ** 2 - noise, 0.0)))


class ConstrainedBayesOpt(Searcher):
    """Latency ratio as the target, validation top-1 >= threshold as a modelled constraint.

    ``bounds``: every parameter's (low, high); ``choices``: the parameters that take one of a
    few values (for example ``{"int8": (0.0, 1.0)}``): they are dimensions of the processes
    (so what one value teaches carries to the others), and the acquisition is maximised with
    them pinned to each value in turn; ``integers``: parameters rounded to whole numbers before
    a point is scored; ``points``: hand-made starting points, tried first; ``warmup``: trials
    proposed before the model guides, the starting points included (random, spread over the
    choices' values).
    """

    def __init__(self, bounds: dict[str, tuple[float, float]],
                 choices: dict[str, tuple[float, ...]], integers: frozenset[str],
                 points: list[dict[str, float]], warmup: int, seed: int) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.bounds, self.choices, self.integers = bounds, choices, integers
        self.names = list(bounds)
        self.arms = [dict(zip(choices, values, strict=True))
                     for values in itertools.product(*choices.values())]
        self.points = list(points)
        self.warmup, self.seed = warmup, seed
        self.rng = np.random.RandomState(seed)
        self.suggested = 0
        self.live: dict[str, tuple[float, ...]] = {}  # trial id -> its point, in flight
        self.observed: list[Observation] = []
        self.threshold: float | None = None

    def set_search_properties(self, metric: str | None, mode: str | None,
                              config: dict[str, Any], **spec: Any) -> bool:
        """The space is its own (bounds and choices): Tune's ``param_space`` adds nothing."""
        return True

    # -- between parameters and the unit cube -------------------------------------------
    def _snap(self, params: dict[str, float]) -> dict[str, float]:
        """Choices to their nearest value, integers rounded, everything inside the bounds."""
        out = {}
        for name, (low, high) in self.bounds.items():
            value = float(np.clip(float(params[name]), low, high))
            if name in self.choices:
                value = min(self.choices[name], key=lambda v: abs(v - value))
            elif name in self.integers:
                value = float(np.clip(round(value), np.ceil(low), np.floor(high)))
            out[name] = value
        return out

    def _unit(self, params: dict[str, float]) -> tuple[float, ...]:
        return tuple((params[n] - low) / (high - low) for n, (low, high) in self.bounds.items())

    def _params(self, x: np.ndarray) -> dict[str, float]:
        return self._snap({n: low + float(u) * (high - low)
                           for u, (n, (low, high)) in zip(x, self.bounds.items(), strict=True)})

    def _cube(self, arm: dict[str, float]) -> np.ndarray:
        """The unit cube's bounds with the arm's choices pinned."""
        cube = np.array([[0.0, 1.0]] * len(self.names))
        for i, name in enumerate(self.names):
            if name in arm:
                low, high = self.bounds[name]
                cube[i] = (arm[name] - low) / (high - low)
        return cube

    # -- proposing ---------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, float] | None:
        if self.suggested < len(self.points):
            params = self._snap(self.points[self.suggested])
        elif self.suggested < self.warmup or self.threshold is None \
                or len(self.observed) < 2:
            params = self._random(self._least_tried())
        else:
            params = self._guided()
        self.suggested += 1
        self.live[trial_id] = self._unit(params)
        return params

    def _least_tried(self) -> dict[str, float]:
        """The choice values tried least so far (random among ties)."""
        if not self.arms:
            return {}
        tried = [self._params(np.asarray(x)) for x in
                 [o.x for o in self.observed] + list(self.live.values())]
        counts = [sum(all(p[n] == v for n, v in arm.items()) for p in tried)
                  for arm in self.arms]
        fewest = [arm for arm, c in zip(self.arms, counts, strict=True) if c == min(counts)]
        return fewest[self.rng.randint(len(fewest))]

    def _random(self, arm: dict[str, float]) -> dict[str, float]:
        cube = self._cube(arm)
        return self._params(self.rng.uniform(cube[:, 0], cube[:, 1]))

    def _guided(self) -> dict[str, float]:
        """The point with the highest constrained expected improvement, the acquisition
        maximised once per choice value; before any trial is feasible, the highest
        optimistic top-1 (mean + KAPPA std of the constraint's process), so the search walks
        towards feasibility and explores where it is unsure."""
        threshold = float(self.threshold or 0.0)
        feasible = [o.ratio for o in self.observed if o.top1 is not None and o.top1 >= threshold]
        best = -min(feasible) if feasible else None  # targets are -ratio (maximised)
        with warnings.catch_warnings():  # few points: lengths often sit at a bound
            warnings.simplefilter("ignore", ConvergenceWarning)
            target, constraint = self._fit()
        ei = UtilityFunction(kind="ei", xi=XI).utility
        scored = []
        for arm in self.arms or [{}]:
            cube = self._cube(arm)
            if best is None:
                process = constraint.model[0]
                x = acq_max(_optimistic, process, None, cube, self.rng, n_warmup=2000,
                            n_iter=5)
                point = np.asarray(self._unit(self._params(x))).reshape(1, -1)
                score = float(_optimistic(point, process, None)[0])
            else:
                x = acq_max(ei, target, best, cube, self.rng, constraint=constraint,
                            n_warmup=2000, n_iter=5)
                point = np.asarray(self._unit(self._params(x))).reshape(1, -1)
                score = float(ei(point, target, best)[0] * constraint.predict(point)[0])
            scored.append((score, point[0]))
        best_point = max(scored, key=lambda s: s[0])[1]
        tried = [o.x for o in self.observed] + list(self.live.values())
        if any(np.abs(best_point - np.asarray(x)).max() < SAME for x in tried):
            # nothing new worth measuring by the model's lights: explore instead of repeating
            return self._random(self._least_tried())
        return self._params(best_point)

    def _fit(self) -> tuple[GaussianProcessRegressor, ConstraintModel]:
        """The target and constraint processes. Trials still running count at the
        processes' own prediction (so concurrent trials spread out); a trial stopped before
        its accuracy was measured counts at the constraint's prediction."""
        xs = np.array([o.x for o in self.observed])
        ys = np.array([-o.ratio for o in self.observed])
        constraint = ConstraintModel(None, self.threshold, np.inf, random_state=self.seed)
        constraint._model = [_gp(len(self.names), self.seed)]  # the same process as the target
        floor = float(self.threshold or 0.0) - FLOOR
        cs = np.array([np.nan if o.top1 is None else max(o.top1, floor) for o in self.observed])
        known = ~np.isnan(cs)
        partial = known & np.array([not o.final for o in self.observed])
        exact = known & ~partial
        below = float(self.threshold or 0.0) - 0.01
        if known.any():
            constraint.fit(xs[exact if exact.any() else known], cs[exact if exact.any()
                                                                    else known])
            guess = constraint.approx(xs).reshape(-1)
            cs[~known] = guess[~known]
            # stopped mid-way: at least what it had, at most just under the threshold
            cs[partial] = np.minimum(np.maximum(cs[partial], guess[partial]), below)
        else:  # only latencies so far: no information about accuracy
            cs[:] = float(self.threshold or 0.0)
        target = _gp(len(self.names), self.seed)
        target.fit(xs, ys)
        if self.live:
            running = np.array(list(self.live.values()))
            xs = np.vstack([xs, running])
            ys = np.concatenate([ys, target.predict(running)])
            guess = constraint.approx(running).reshape(-1) if known.any() else \
                np.full(len(running), cs[0])
            cs = np.concatenate([cs, guess])
            target.fit(xs, ys)
        constraint.fit(xs, cs)
        return target, constraint

    # -- learning -----------------------------------------------------------------------
    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        """Record the trial's latency ratio and validation top-1 (None when it stopped
        before fine-tuning); an errored trial teaches nothing."""
        x = self.live.pop(trial_id, None)
        read = read_result(result)
        if x is None or error or read is None or read.phase == "error":
            return
        self.threshold = read.threshold_top1
        self.observed.append(Observation(x, read.latency_ratio, read.val_top1,
                                         final=read.phase == "done"))

    def save(self, checkpoint_path: str) -> None:
        """Observations, trials in flight and the random state; processes are refitted."""
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        # our own file, written by save() into the run directory
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))  # noqa: S301


class PenaltyBayesOpt(BayesOptSearch):
    """Ray Tune's BayesOptSearch on the penalty objective, except that a trial that errors
    during the random warm-up frees its slot: Ray's waits for that trial's result forever
    and the run hangs."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        live = trial_id in self._live_trial_mapping
        read = read_result(result)
        if (result or {}).get("phase") == "error" or (read is not None
                                                       and read.phase == "latency"):
            # stopped before fine-tuning: its objective (the ratio, as if feasible) says
            # nothing about accuracy, so it is dropped like an error (as is an error)
            result, error = None, True
        super().on_trial_complete(trial_id, result, error)
        warming_up = len(self._buffered_trial_results) < self.random_search_trials
        if live and (error or result is None) and warming_up:
            self._total_random_search_trials -= 1
