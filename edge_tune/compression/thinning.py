"""Thinning: all-zero filters and input channels removed physically with torch-pruning (what
Distiller calls thinning), across the dependencies a residual add, a depthwise or grouped conv
or a concatenation makes; and the groups of filters those dependencies tie together, which
structure pruners must cut alike for thinning to remove them.

Where torch-pruning cannot trace the whole model (ShuffleNet's channel shuffle), the largest
submodules it can trace are pruned inside, and what crosses them is left whole and said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from edge_tune.compression.layers import forward_once
from edge_tune.compression.structures import Tied, group_dim, group_scores
from edge_tune.core.errors import first_line

ZERO = 1e-12  # a group whose mean |w| is below this counts as removed (masks write exact 0)

UNTRACED = "torch-pruning cannot trace the module holding it"

OUTSIDE = ("its channels leave a block torch-pruning traced alone (the model as a whole "
           "it cannot trace: ShuffleNet's channel shuffle)")


def _graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph | None:
    """torch-pruning's dependency graph of ``model`` (traced in eval mode: BatchNorm statistics
    stay as they are), or None where it cannot trace it (ShuffleNet's channel shuffle reshapes
    channels: ZeroDivisionError in torch-pruning 1.6)."""
    training = model.training
    model.eval()
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception:  # noqa: BLE001 - any tracing failure leaves the model unpruned
        return None
    finally:
        model.train(training)


@dataclass
class Part:
    """A dependency graph over the whole model or, where torch-pruning cannot trace the whole,
    over one of its submodules: there only channels the submodule consumes itself can go (its
    outputs keep their channels)."""

    prefix: str  # "" for the whole model, else "features.2.branch2."
    graph: tp.DependencyGraph

    def group(self, conv: nn.Module, handler: Any, idxs: list[int]) -> tuple[Any, bool]:
        """torch-pruning's group for ``conv``'s channels ``idxs``, and whether it may go."""
        group = self.graph.get_pruning_group(conv, handler, idxs=idxs)
        roles = {(getattr(dep.handler, "__name__", ""), _depthwise(dep.target.module))
                 for dep, _ in group if isinstance(dep.target.module, nn.Conv2d | nn.Linear)}
        # made inside (a conv that is not depthwise: a depthwise conv passes its input's
        # channels through) and read inside
        inside = not self.prefix or {("prune_out_channels", False),
                                     ("prune_in_channels", False)} <= roles
        return group, inside


def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 \
        and module.groups == module.in_channels


def _inputs(model: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first tensor each submodule receives when ``model`` runs ``example`` (eval mode)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], torch.Tensor):
                seen.setdefault(name, args[0])
        return hook

    forward_once(model, example, [m.register_forward_pre_hook(keep(n))
                                  for n, m in model.named_modules() if n])
    return seen


def parts(model: nn.Module, example: torch.Tensor) -> list[Part]:
    """Dependency graphs covering what torch-pruning can trace: the whole model, or else the
    largest submodules it can (each with the input it sees in the model)."""
    whole = _graph(model, example)
    if whole is not None:
        return [Part("", whole)]
    inputs = _inputs(model, example)
    found: list[Part] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if full not in inputs or not any(isinstance(m, nn.Conv2d) for m in child.modules()):
                continue
            graph = _graph(child, inputs[full])
            if graph is not None:
                found.append(Part(f"{full}.", graph))
            else:
                visit(f"{full}.", child)

    visit("", model)
    return found


def part_of(covering: list[Part], layer: str) -> Part | None:
    """The part whose graph holds ``layer`` (None: torch-pruning traced none that does)."""
    return next((p for p in covering if layer.startswith(p.prefix)), None)


def _zero_groups(weight: torch.Tensor, group_type: str) -> list[int]:
    return [int(i) for i in torch.nonzero(group_scores(weight, group_type) < ZERO).flatten()]


def _removable(group: Any, idxs: list[int], kind: str) -> bool:
    """Whether removing ``idxs`` keeps the masked function (up to BatchNorm's constant).

    Filters: zero in every conv the residual group ties to them. Channels: unused (zero input
    weights) by every layer that reads them, so a residual stream shared with other readers
    is left alone.
    """
    for dep, _ in group:
        module = dep.target.module
        handler = getattr(dep.handler, "__name__", "")
        if kind == "Filters" and handler == "prune_out_channels" \
                and isinstance(module, nn.Conv2d):
            used = module.weight.detach()[idxs]
        elif kind == "Channels" and handler == "prune_in_channels" \
                and isinstance(module, nn.Conv2d | nn.Linear):
            used = module.weight.detach()[:, idxs]
        else:
            continue
        if used.abs().max() > ZERO:
            return False
    return True


def channel_prunable(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Conv weights whose input channels only that conv reads (ResNet: each block's conv2):
    the channels a ChannelRemover can take out without touching a residual stream."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][1:]
    out = []
    for name, conv in convs:
        group = graph.get_pruning_group(conv, tp.prune_conv_in_channels, idxs=[0])
        readers = {dep.target.name for dep, _ in group
                   if getattr(dep.handler, "__name__", "") == "prune_in_channels"
                   and isinstance(dep.target.module, nn.Conv2d | nn.Linear)}
        if len(readers) == 1:
            out.append(f"{name}.weight")
    return out




def tie_filters(model: nn.Module, example: torch.Tensor, weights: tuple[str, ...],
                skipped: dict[str, str]) -> list[Tied]:
    """Partition conv weights into groups whose output filters the graph ties (residual
    adds, depthwise and grouped convs, concatenations); each alone where torch-pruning
    cannot trace the model. Convs thinning could not remove are recorded in ``skipped``
    (conv -> why)."""
    modules = dict(model.named_modules())
    covering = parts(model, example)
    groups: list[Tied] = []
    seen: set[str] = set()
    for weight in weights:
        if weight in seen:
            continue
        module = modules[weight.removesuffix(".weight")]
        if not isinstance(module, nn.Conv2d):
            groups.append(Tied([weight]))
            seen.add(weight)
            continue
        part = part_of(covering, weight)
        if part is None:
            groups.append(Tied([weight], removable=False))
            skipped[weight.removesuffix(".weight")] = UNTRACED
            seen.add(weight)
            continue
        group, inside = part.group(module, tp.prune_conv_out_channels, [0])
        convs = [(part.prefix + dep.target.name.split(" ")[0], dep.target.module,
                  getattr(dep.handler, "__name__", "")) for dep, _ in group
                 if isinstance(dep.target.module, nn.Conv2d)]
        members = {f"{n}.weight" for n, _, handler in convs if handler == "prune_out_channels"}
        grouped = [m.groups for _, m, _ in convs if 1 < m.groups < m.in_channels]
        tied = [w for w in weights if w in members] or [weight]
        seen.update(tied)
        groups.append(Tied(tied, max(grouped, default=1), removable=inside))
        if not inside:
            skipped.update({w.removesuffix(".weight"): OUTSIDE for w in tied})
    return groups


def remove_zero_structures(model: nn.Module, example: torch.Tensor, kinds: tuple[str, ...],
                           skipped: dict[str, str]) -> dict[str, int]:
    """Physically remove all-zero filters (``Filters``) and/or input channels
    (``Channels``) from ``model``'s convs; ``{"<conv>.<kind>": count removed}``.

    A filter is removed only when it is zero in every conv its residual group ties it to, an
    input channel only when no layer reading it uses it. A removed filter's BatchNorm output
    (a constant per channel) goes with it, as in Distiller. Convs that could not be cut are
    recorded in ``skipped`` (conv -> why).
    """
    removed: dict[str, int] = {}
    for kind in kinds:
        covering = parts(model, example)
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        for name, conv in convs:
            zero = _zero_groups(conv.weight.detach(), kind)
            if not zero or len(zero) >= conv.weight.shape[group_dim(kind)]:
                continue
            part = part_of(covering, name)
            if part is None:
                skipped[name] = UNTRACED
                continue
            handler = tp.prune_conv_out_channels if kind == "Filters" else tp.prune_conv_in_channels
            try:  # torch-pruning may not follow every graph
                group, inside = part.group(conv, handler, zero)
                valid = part.graph.check_pruning_group(group)
            except Exception as err:  # noqa: BLE001 - a layer torch-pruning cannot cut stays
                skipped[name] = f"torch-pruning: {type(err).__name__}: {first_line(err)}"
                continue
            if not inside:
                skipped[name] = OUTSIDE
                continue
            if not _removable(group, zero, kind):
                continue
            if not valid:
                skipped[name] = "torch-pruning refused the group (check_pruning_group)"
                continue
            group.prune()  # the graph follows the pruned shapes: one graph per part
            removed[f"{name}.{kind.lower()}"] = len(zero)
    return removed
