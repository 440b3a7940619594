"""Run a Distiller recipe while fine-tuning: masks, AGP, group lasso, LR schedules, thinning.

Distiller's ``CompressionScheduler``: every class's behaviour comes from its registry entry
(:data:`edge_tune.distiller.CLASSES`); this module only decides when it acts.

Distiller's semantics on maintained libraries: pruners compute 0/1 masks at the start of the
epochs their policies fire and the masks are re-applied after every optimiser step; structure
pruners rank whole filters / channels / rows by L1 (filters tied by a residual add are ranked
together, so the same channels are zeroed in every conv of the group and thinning stays
consistent); regularizers add their penalty to every mini-batch loss while active; LR
schedulers step at the end of the epochs they cover; extensions (``FilterRemover`` and kin)
physically remove all-zero filters / input channels with torch-pruning; quantizers ask for NNCF
int8 after training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from edge_tune.config import Config
from edge_tune.data import Splits, loader
from edge_tune.distiller import Instance, Policy, Recipe, agp_sparsity, recipe_from_dict
from edge_tune.errors import first_line
from edge_tune.prune import Tied, group_dim, group_scores
from edge_tune.train import device_for, evaluate, recalibrate_batchnorm

Log = Callable[[str], None]
Hook = Callable[[nn.Module], None]
EpochHook = Callable[[int, nn.Module], None]  # (epochs done, model) after each epoch
ZERO = 1e-12  # a group whose mean |w| is below this counts as removed (masks write exact 0)
UNTRACED = "torch-pruning cannot trace the module holding it"
OUTSIDE = ("its channels leave a block torch-pruning traced alone (the model as a whole "
           "it cannot trace: ShuffleNet's channel shuffle)")


@dataclass
class RecipeRun:
    """The mutable state of one recipe run over a model."""

    model: nn.Module
    example: torch.Tensor
    recipe: Recipe
    log: Log
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # weight name -> 0/1 mask
    thinned: dict[str, dict[str, int]] = field(default_factory=dict)  # extension -> removed
    int8: bool = False
    evaluate: Callable[[nn.Module], float] | None = None  # top-1 (%) for thinning reports
    after_thinning: Hook | None = None  # e.g. BatchNorm re-estimation
    thinning_top1: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # conv -> why it was not thinned

    def params(self) -> dict[str, nn.Parameter]:
        return dict(self.model.named_parameters())

    def apply_masks(self) -> None:
        """Write the masks into the weights (after every optimiser step)."""
        params = self.params()
        with torch.no_grad():
            for name, mask in self.masks.items():
                if name in params and params[name].shape == mask.shape:
                    params[name].mul_(mask)

    def tie(self, weights: tuple[str, ...]) -> list[Tied]:
        """Partition conv weights into groups whose output filters the graph ties (residual
        adds, depthwise and grouped convs, concatenations); each alone where torch-pruning
        cannot trace the model."""
        modules = dict(self.model.named_modules())
        covering = parts(self.model, self.example)
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
                self.skipped[weight.removesuffix(".weight")] = UNTRACED
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
                self.skipped.update({w.removesuffix(".weight"): OUTSIDE for w in tied})
        return groups


def _prune(run: RecipeRun, inst: Instance, policy: Policy, epoch: int) -> None:
    args = {**inst.args, **policy.args}
    if "initial_sparsity" in args:
        level = agp_sparsity(args["initial_sparsity"], args["final_sparsity"],
                             policy.starting_epoch, policy.ending_epoch, policy.frequency, epoch)
    else:
        level = args.get("desired_sparsity", 0.0)
    weights = {n: p.detach() for n, p in run.params().items()}
    pruner = inst.spec.pruner
    assert pruner is not None  # the loader puts only pruner classes under pruners
    run.masks.update(pruner.masks(weights, args, level, run.tie))
    run.apply_masks()


def _penalty(run: RecipeRun, inst: Instance) -> torch.Tensor:
    regularizer = inst.spec.regularizer
    assert regularizer is not None  # the loader puts only regulariser classes there
    return regularizer.penalty(run.params(), inst.args)


def _regularizer_masks(run: RecipeRun, inst: Instance) -> None:
    """Masks a regulariser leaves after an epoch (Distiller's ``threshold_criteria``)."""
    regularizer = inst.spec.regularizer
    assert regularizer is not None
    weights = {n: p.detach() for n, p in run.params().items()}
    for name, mask in regularizer.masks(weights, inst.args).items():
        run.masks[name] = mask * run.masks.get(name, torch.ones_like(mask))
    run.apply_masks()


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

    hooks = [m.register_forward_pre_hook(keep(n)) for n, m in model.named_modules() if n]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(training)
        for handle in hooks:
            handle.remove()
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


def thin(run: RecipeRun, inst: Instance) -> dict[str, int]:
    """Physically remove all-zero filters (FilterRemover) and/or input channels (others).

    A filter is removed only when it is zero in every conv its residual group ties it to, an
    input channel only when no layer reading it uses it. A removed filter's BatchNorm output
    (a constant per channel) goes with it, as in Distiller: the thinned model's accuracy before
    fine-tuning is reported next to the masked model's.
    """
    removed: dict[str, int] = {}
    before = run.evaluate(run.model) if run.evaluate else None
    for kind in inst.spec.removes:
        covering = parts(run.model, run.example)
        convs = [(n, m) for n, m in run.model.named_modules() if isinstance(m, nn.Conv2d)]
        for name, conv in convs:
            zero = _zero_groups(conv.weight.detach(), kind)
            if not zero or len(zero) >= conv.weight.shape[group_dim(kind)]:
                continue
            part = part_of(covering, name)
            if part is None:
                run.skipped[name] = UNTRACED
                continue
            handler = tp.prune_conv_out_channels if kind == "Filters" else tp.prune_conv_in_channels
            try:  # torch-pruning may not follow every graph
                group, inside = part.group(conv, handler, zero)
                valid = part.graph.check_pruning_group(group)
            except Exception as err:  # noqa: BLE001 - a layer torch-pruning cannot cut stays
                run.skipped[name] = f"torch-pruning: {type(err).__name__}: {first_line(err)}"
                continue
            if not inside:
                run.skipped[name] = OUTSIDE
                continue
            if not _removable(group, zero, kind):
                continue
            if not valid:
                run.skipped[name] = "torch-pruning refused the group (check_pruning_group)"
                continue
            group.prune()  # the graph follows the pruned shapes: one graph per part
            removed[f"{name}.{kind.lower()}"] = len(zero)
    params = run.params()  # masks of removed structures no longer fit their weights
    run.masks = {n: m for n, m in run.masks.items() if n in params and params[n].shape == m.shape}
    run.thinned[inst.name] = removed
    if run.evaluate is not None and before is not None:
        # the same network with zeros removed, before any fine-tuning
        run.thinning_top1[inst.name] = {"masked": before, "thinned": run.evaluate(run.model)}
    if run.after_thinning is not None and removed:
        run.after_thinning(run.model)
        if run.evaluate is not None:
            run.thinning_top1[inst.name]["recalibrated"] = run.evaluate(run.model)
    run.log(f"{inst.name}: removed " + (", ".join(f"{k} {v}" for k, v in removed.items())
                                        or "nothing (no all-zero structure)"))
    return removed


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


def _fire(run: RecipeRun, active: list[Policy], epoch: int,
          optimizer: torch.optim.Optimizer) -> None:
    """Pruners, extensions and quantizers of ``active``, at the start of ``epoch``."""
    for policy in active:
        inst = run.recipe.instances[policy.instance]
        if policy.kind == "pruner":
            _prune(run, inst, policy, epoch)
        elif policy.kind == "extension":
            thin(run, inst)
            # the same optimizer (LR schedules keep their state) over the thinned tensors;
            # momentum buffers had the old shapes
            optimizer.param_groups[0]["params"] = list(run.model.parameters())
            optimizer.state.clear()
        elif policy.kind == "quantizer":
            run.int8 = True


def run_recipe(model: nn.Module, recipe: Recipe, dataset: Any, epochs: int, lr: float,
               weight_decay: float, batch_size: int, example: torch.Tensor, seed: int = 0,
               log: Log = print, evaluate: Callable[[nn.Module], float] | None = None,
               after_thinning: Hook | None = None,
               after_epoch: EpochHook | None = None) -> RecipeRun:
    """Fine-tune ``model`` for ``epochs`` epochs while the recipe's policies fire.

    With ``epochs`` 0 the epoch-0 actions (prune, thin) happen and nothing trains
    (``dataset`` may then be None). ``after_thinning`` runs on the model after every
    thinning that removed something; ``after_epoch`` after every epoch (masks applied, the
    model back in train mode when it returns).
    """
    torch.manual_seed(seed)
    device = device_for(model)
    run = RecipeRun(model, example.to(device), recipe, log, evaluate=evaluate,
                    after_thinning=after_thinning)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                weight_decay=weight_decay)
    schedulers = {name: inst.spec.lr_scheduler(inst.args, optimizer)
                  for name, inst in recipe.instances.items() if inst.spec.lr_scheduler}
    if epochs == 0:
        _fire(run, recipe.at(0), 0, optimizer)
    for epoch in range(epochs):
        batches = loader(dataset, batch_size, shuffle=True, seed=seed + epoch)
        active = recipe.at(epoch)
        _fire(run, active, epoch, optimizer)
        regularizers = [recipe.instances[p.instance] for p in active if p.kind == "regularizer"]
        model.train()
        total, count = 0.0, 0
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            for inst in regularizers:
                loss = loss + _penalty(run, inst)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"recipe training diverged: loss {loss.item()} in epoch "
                                   f"{epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.apply_masks()
            total, count = total + loss.item() * len(y), count + len(y)
        for inst in regularizers:
            _regularizer_masks(run, inst)
        for policy in active:
            if policy.kind == "lr_scheduler":
                schedulers[policy.instance].step()
        log(f"epoch {epoch + 1}/{epochs}: loss {total / max(1, count):.4f}, "
            f"policies {[p.instance for p in active]}")
        if after_epoch is not None:
            after_epoch(epoch + 1, model)
    if any(i.spec.quantizes for i in recipe.instances.values()):
        run.int8 = True  # post-training: applied to the exported model (NNCF)
    model.eval()
    return run


def fit_recipe(model: nn.Module, recipe: Recipe, splits: Splits, config: Config, epochs: int,
               log: Log, report_top1: bool = False,
               after_epoch: EpochHook | None = None) -> RecipeRun:
    """:func:`run_recipe` with the config's fine-tuning settings and data; BatchNorm
    re-estimated after every thinning; with ``report_top1`` the thinning reports carry test
    top-1 (masked, thinned, re-estimated)."""
    f = config.finetune
    example = torch.zeros(1, 3, splits.image_size, splits.image_size)
    return run_recipe(model, recipe, splits.train, epochs, f.lr, f.weight_decay,
                      config.data.batch_size, example, seed=config.baseline.seed, log=log,
                      evaluate=(lambda m: evaluate(m, splits.test)[0]) if report_top1 else None,
                      after_thinning=lambda m: recalibrate_batchnorm(
                          m, splits.train, f.bn_recalibration_images),
                      after_epoch=after_epoch)


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


def apply_recipe(model: nn.Module, raw: dict[str, Any], example: torch.Tensor) -> RecipeRun:
    """A recipe's epoch-0 actions (masks, thinning) on ``model``, without training."""
    return run_recipe(model, recipe_from_dict(raw), None, 0, 0.0, 0.0, 1, example,
                      log=lambda _: None)


def sparsity_report(model: nn.Module) -> dict[str, float]:
    """Fine-grained sparsity (%) of every conv/linear weight."""
    return {f"{n}.weight": round(100 * float((m.weight == 0).float().mean()), 2)
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
