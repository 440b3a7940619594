"""Per-layer allocation: the filters each group keeps to reach a latency target on the device
while losing the least accuracy (NetAdapt-like, greedy on the device's own profile).

From every group at full width, step after step the group whose next cut (one channel
multiple, or a sixteenth of its width) saves the most predicted time per point of top-1 its
sensitivity says it costs gives up those filters, until the profile predicts the target. The
``uniform`` allocation keeps one fraction of every group, the largest that reaches the target:
the same target, the same profile, only the spread differs, so the two compare in one run.
A group keeps at least :data:`MIN_KEPT` of its filters and at least one channel multiple.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_tune.compression.groups import Group, Structure
from edge_tune.compression.profile import DeviceProfile, predicted_ratio
from edge_tune.compression.sensitivity import Sensitivity

MIN_KEPT = 0.125  # of a group's filters
STEPS = 16  # a cut without a channel multiple: this fraction of the group's width
EPS = 0.05  # points of top-1: a cut that costs (measurably) nothing is still not free


@dataclass(frozen=True)
class Allocation:
    """Filters kept per group, and the latency ratio the profile predicts for them."""

    kept: dict[str, int]  # group -> filters kept
    predicted: float  # latency / the f32 baseline's, as the profile predicts
    reached: bool  # the prediction meets the target


@dataclass(frozen=True)
class Allocator:
    """What allocation needs, prepared once per run and shipped to every trial."""

    shape: Structure
    profile: DeviceProfile
    sensitivity: Sensitivity

    def allocate(self, target: float, int8: bool, device: bool, multiple: int) -> Allocation:
        """The kept filters of every group for ``target`` (a latency ratio): by the device's
        profile and the groups' sensitivity (``device``), or one fraction for all."""
        if device:
            return _greedy(self, target, int8, multiple)
        return _uniform(self, target, int8, multiple)

    def ratios(self, allocation: Allocation) -> dict[str, float]:
        """Each conv's fraction of filters removed under ``allocation``."""
        out: dict[str, float] = {}
        for group in self.shape.groups:
            removed = 1.0 - allocation.kept[group.name] / group.width
            out.update({conv: removed for conv in group.convs})
        return out

    def fastest(self, int8: bool, multiple: int) -> float:
        """The lowest latency ratio allocation can reach: every group at its floor."""
        return self.predict({g.name: min_kept(g, multiple) for g in self.shape.groups}, int8)

    def predict(self, kept: dict[str, int], int8: bool) -> float:
        """The latency ratio the profile predicts with ``kept`` filters per group."""
        return predicted_ratio(self.profile, self.shape,
                               {g.name: kept[g.name] / g.width for g in self.shape.groups},
                               int8)


def min_kept(group: Group, multiple: int) -> int:
    """The fewest filters ``group`` may keep: :data:`MIN_KEPT` of them, a whole multiple."""
    if group.width <= multiple:
        return group.width  # too narrow for the multiple: left whole
    least = max(1, math.ceil(MIN_KEPT * group.width))
    return min(group.width, max(multiple, multiple * math.ceil(least / multiple)))


def _step(group: Group, multiple: int) -> int:
    return multiple if multiple > 1 else max(1, round(group.width / STEPS))


def _greedy(allocator: Allocator, target: float, int8: bool, multiple: int) -> Allocation:
    groups = allocator.shape.groups
    kept = {g.name: g.width for g in groups}
    now = allocator.predict(kept, int8)
    while now > target:
        best: tuple[float, str, int, float] | None = None  # (score, group, kept, ratio)
        for group in groups:
            smaller = kept[group.name] - _step(group, multiple)
            if smaller < min_kept(group, multiple):
                continue
            ratio = allocator.predict({**kept, group.name: smaller}, int8)
            saved = now - ratio
            if saved <= 0:
                continue
            cost = allocator.sensitivity.drop(group.name, 1 - smaller / group.width) \
                - allocator.sensitivity.drop(group.name, 1 - kept[group.name] / group.width)
            score = saved / (max(0.0, cost) + EPS)
            if best is None or score > best[0]:
                best = (score, group.name, smaller, ratio)
        if best is None:
            break
        _, name, kept[name], now = best
    return Allocation(kept, now, now <= target)


def _uniform(allocator: Allocator, target: float, int8: bool, multiple: int) -> Allocation:
    groups = allocator.shape.groups

    def at(fraction: float) -> dict[str, int]:
        out = {}
        for g in groups:
            want = round(fraction * g.width)
            if multiple > 1 and g.width > multiple:
                want = multiple * round(want / multiple)
            out[g.name] = min(g.width, max(min_kept(g, multiple), want))
        return out

    low, high = MIN_KEPT, 1.0  # the kept fraction: the largest that reaches the target
    if allocator.predict(at(high), int8) <= target:
        low = high
    for _ in range(20):
        if high - low < 1e-3:
            break
        middle = (low + high) / 2
        if allocator.predict(at(middle), int8) <= target:
            low = middle
        else:
            high = middle
    kept = at(low)
    predicted = allocator.predict(kept, int8)
    return Allocation(kept, predicted, predicted <= target)
