"""edge_tune's Gaussian-process searcher: Ray Tune's ``BayesOptSearch`` (bayesian-optimization
1.x) with the fixes the tuner needs. Its own module so that the searcher registry imports it
(and with it scikit-learn) only when it is chosen."""

from __future__ import annotations

from typing import Any

from ray.tune.search.bayesopt import BayesOptSearch


class BayesOpt(BayesOptSearch):
    """Ray Tune's BayesOptSearch, except that a trial that errors during the random warm-up
    frees its slot: Ray's waits for that trial's result forever and the run hangs."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        live = trial_id in self._live_trial_mapping
        super().on_trial_complete(trial_id, result, error)
        warming_up = len(self._buffered_trial_results) < self.random_search_trials
        if live and (error or result is None) and warming_up:
            self._total_random_search_trials -= 1
