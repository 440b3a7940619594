"""Distiller's regularisers, on weight tensors: a penalty added to the loss while a policy is
active, and the masks left after each epoch on the groups driven to zero (the one-method-pair
:class:`Regularizer` protocol; the class names map to them in
:data:`edge_tune.compression.classes.CLASSES`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from edge_tune.compression.structures import Weights, expand, group_matrix


class Regularizer(Protocol):
    """A loss penalty while its policy is active, and the masks it leaves after each epoch."""

    def penalty(self, params: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        ...

    def masks(self, weights: Weights, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        ...


def _device(params: Mapping[str, torch.Tensor]) -> torch.device:
    """Where the model's weights live (a penalty is summed there)."""
    return next(iter(params.values())).device if params else torch.device("cpu")


class GroupLasso:
    """``GroupLassoRegularizer``: strength x the sum of its groups' L2 norms, per weight;
    with ``threshold_criteria`` (Mean_Abs or Max) groups below the strength (the recipe's,
    ``thresholds``, when the run was rescaled) are masked after every epoch, as Distiller
    does."""

    def penalty(self, params: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        total = torch.zeros((), device=_device(params))
        for name, (strength, group_type) in args["reg_regims"].items():
            total = total + strength * group_matrix(params[name], group_type).norm(dim=1).sum()
        return total

    def masks(self, weights: Weights, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        criterion = args.get("threshold_criteria")
        if criterion is None:
            return {}
        out = {}
        for name, (strength, group_type) in args["reg_regims"].items():
            flat = group_matrix(weights[name], group_type).abs()
            score = flat.max(dim=1).values if criterion == "Max" else flat.mean(dim=1)
            threshold = args.get("thresholds", {}).get(name, strength)
            out[name] = expand((score >= threshold).float(), weights[name], group_type)
        return out


class GroupVariance:
    """``GroupVarianceRegularizer`` (Torfi et al. 2018): strength / the variance of a weight's
    channel L2 norms, pushing channels apart so group lasso can zero the weak ones."""

    def penalty(self, params: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        total = torch.zeros((), device=_device(params))
        for name, (strength, group_type) in args["reg_regims"].items():
            norms = group_matrix(params[name], group_type).norm(dim=1)
            total = total + strength / norms.var().clamp_min(1e-12)
        return total

    def masks(self, weights: Weights, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {}


class L1:
    """``L1Regularizer``: strength x sum |w| per weight; with ``threshold_criteria`` elements
    with |w| <= strength are masked after every epoch."""

    def penalty(self, params: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        total = torch.zeros((), device=_device(params))
        for name, strength in args["reg_regims"].items():
            total = total + strength * params[name].abs().sum()
        return total

    def masks(self, weights: Weights, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if args.get("threshold_criteria") is None:
            return {}
        thresholds = args.get("thresholds", {})
        return {name: (weights[name].abs() > thresholds.get(name, strength)).float()
                for name, strength in args["reg_regims"].items()}


