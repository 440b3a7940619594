import itertools

from edge_tune.search.objective import PENALTY, Threshold, objective


def test_feasible_objective_is_the_latency_ratio() -> None:
    assert objective(99.0, 0.25, 1.0, 98.0) == 0.25
    assert objective(98.0, 1.5, 1.0, 98.0) == 1.5  # on the threshold counts as feasible


def test_every_infeasible_trial_scores_worse_than_every_feasible_one() -> None:
    ratios = [0.05, 0.3, 1.0, 3.0, 50.0]
    feasible = [objective(99.0, r, 1.0, 98.0) for r in ratios]
    infeasible = [objective(top1, r, 1.0, 98.0) for top1, r in
                  itertools.product([97.99, 90.0, 10.0], ratios)]
    assert max(feasible) < PENALTY < min(infeasible)


def test_infeasible_trials_still_point_the_way() -> None:
    # a smaller accuracy shortfall is better, whatever the latency
    assert objective(97.5, 0.9, 1.0, 98.0) < objective(96.0, 0.1, 1.0, 98.0)
    # at the same shortfall, lower latency is better
    assert objective(97.0, 0.2, 1.0, 98.0) < objective(97.0, 0.8, 1.0, 98.0)


def test_threshold_absolute_or_drop() -> None:
    assert Threshold(max_drop=1.0).value(99.3) == 98.3
    assert Threshold(min_top1=95.0, max_drop=1.0).value(99.3) == 95.0
