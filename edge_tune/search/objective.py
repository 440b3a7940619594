"""The tuner's metric: accuracy-thresholded latency (minimised).

    feasible   (top1 >= threshold):  objective = latency_ms / baseline_latency_ms
    infeasible (top1 <  threshold):  objective = PENALTY + (threshold - top1) + ratio / PENALTY

``ratio`` is the latency ratio clamped to [0, PENALTY): every feasible trial scores below
PENALTY and every infeasible one above it; among infeasible trials the accuracy shortfall (in
points) dominates and latency breaks ties (ratio / PENALTY < 1 point), so the optimiser still
learns which way is better.
The ratio (not the absolute ms) is what the optimiser sees, since the actor measures each
model against a baseline taken in the same benchmark session.
"""

from __future__ import annotations

from dataclasses import dataclass

METRIC, MODE = "objective", "min"  # what every searcher is told to optimise
PENALTY = 10.0  # above any feasible latency ratio (a compression 10x slower is not one)


@dataclass(frozen=True)
class Threshold:
    """Minimum acceptable top-1 (``tune.threshold``): absolute, or a drop from the baseline."""

    min_top1: float | None = None  # percent, e.g. 98.0; when set, max_drop is ignored
    max_drop: float = 1.0  # percentage points below the baseline's top-1

    def value(self, baseline_top1: float) -> float:
        """The top-1 (percent) a trial must reach."""
        if self.min_top1 is not None:
            return self.min_top1
        return baseline_top1 - self.max_drop


def objective(top1: float, latency_ms: float, baseline_latency_ms: float,
              threshold_top1: float) -> float:
    """Score of one trial (lower is better); see the module docstring for the formula."""
    ratio = min(max(latency_ms / baseline_latency_ms, 0.0), PENALTY - 1e-6)
    if top1 >= threshold_top1:
        return ratio
    return PENALTY + (threshold_top1 - top1) + ratio / PENALTY
