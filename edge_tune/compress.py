"""Run a Distiller recipe while fine-tuning: masks, AGP, group lasso, LR schedules, thinning.

Distiller's semantics on maintained libraries: pruners compute 0/1 masks at the start of the
epochs their policies fire and the masks are re-applied after every optimiser step; structure
pruners rank whole filters / channels / rows by L1 (filters tied by a residual add are ranked
together, so the same channels are zeroed in every conv of the group and thinning stays
consistent); regularizers add their penalty to every mini-batch loss while active; LR
schedulers step at the end of the epochs they cover; ``FilterRemover`` / ``ChannelRemover`` /
``StructureRemover`` physically remove all-zero filters / input channels with torch-pruning;
``PostTrainLinearQuantizer`` asks for NNCF int8 after training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edge_tune.distiller import Instance, Policy, Recipe, agp_sparsity
from edge_tune.prune import get_pruner, group_dim, group_scores, structure_mask

Log = Callable[[str], None]
Hook = Callable[[nn.Module], None]
ZERO = 1e-12  # a group whose mean |w| is below this counts as removed (masks write exact 0)


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

    def params(self) -> dict[str, nn.Parameter]:
        return dict(self.model.named_parameters())

    def apply_masks(self) -> None:
        """Write the masks into the weights (after every optimiser step)."""
        params = self.params()
        with torch.no_grad():
            for name, mask in self.masks.items():
                if name in params and params[name].shape == mask.shape:
                    params[name].mul_(mask)

    def tie(self, weights: tuple[str, ...]) -> list[list[str]]:
        """Partition conv weights into groups whose output filters a residual add ties."""
        import torch_pruning as tp

        modules = dict(self.model.named_modules())
        graph = tp.DependencyGraph().build_dependency(self.model, example_inputs=self.example)
        groups: list[list[str]] = []
        seen: set[str] = set()
        for weight in weights:
            if weight in seen:
                continue
            module = modules[weight.removesuffix(".weight")]
            if not isinstance(module, nn.Conv2d):
                groups.append([weight])
                seen.add(weight)
                continue
            group = graph.get_pruning_group(module, tp.prune_conv_out_channels, idxs=[0])
            members = {f"{dep.target.name.split(' ')[0]}.weight" for dep, _ in group
                       if getattr(dep.handler, "__name__", "") == "prune_out_channels"
                       and isinstance(dep.target.module, nn.Conv2d)}
            tied = [w for w in weights if w in members] or [weight]
            seen.update(tied)
            groups.append(tied)
        return groups


def _prune(run: RecipeRun, inst: Instance, policy: Policy, epoch: int) -> None:
    args = {**inst.args, **policy.args}
    if "initial_sparsity" in args:
        level = agp_sparsity(args["initial_sparsity"], args["final_sparsity"],
                             policy.starting_epoch, policy.ending_epoch, policy.frequency, epoch)
    else:
        level = args.get("desired_sparsity", 0.0)
    weights = {n: p.detach() for n, p in run.params().items()}
    run.masks.update(get_pruner(inst.cls).masks(weights, args, level, run.tie))
    run.apply_masks()


def group_lasso(run: RecipeRun, inst: Instance) -> torch.Tensor:
    """Sum over the regime's weights of strength x sum of L2 norms of its groups."""
    params = run.params()
    total = torch.zeros(())
    for name, (strength, group_type) in inst.args["reg_regims"].items():
        weight = params[name]
        dim = group_dim(group_type)
        flat = weight.transpose(0, dim).reshape(weight.shape[dim], -1)
        total = total + strength * flat.norm(dim=1).sum()
    return total


def threshold_groups(run: RecipeRun, inst: Instance) -> None:
    """Distiller's ``threshold_criteria``: mask groups whose Mean_Abs (or Max) |w| < strength."""
    criterion = inst.args.get("threshold_criteria")
    if criterion is None:
        return
    params = run.params()
    for name, (strength, group_type) in inst.args["reg_regims"].items():
        weight = params[name].detach()
        dim = group_dim(group_type)
        flat = weight.transpose(0, dim).reshape(weight.shape[dim], -1).abs()
        score = flat.max(dim=1).values if criterion == "Max" else flat.mean(dim=1)
        drop = torch.nonzero(score < strength).flatten()
        mask = structure_mask(weight, drop, group_type)
        run.masks[name] = mask * run.masks.get(name, torch.ones_like(weight))
    run.apply_masks()


def _zero_groups(weight: torch.Tensor, group_type: str) -> list[int]:
    return [int(i) for i in torch.nonzero(group_scores(weight, group_type) < ZERO).flatten()]


def thin(run: RecipeRun, inst: Instance) -> dict[str, int]:
    """Physically remove all-zero filters (FilterRemover) and/or input channels (others).

    A filter is removed only when it is zero in every conv its residual group ties it to, an
    input channel only when no layer reading it uses it. A removed filter's BatchNorm output
    (a constant per channel) goes with it, as in Distiller: the thinned model's accuracy before
    fine-tuning is reported next to the masked model's.
    """
    import torch_pruning as tp

    removed: dict[str, int] = {}
    before = run.evaluate(run.model) if run.evaluate else None
    kinds = {"FilterRemover": ("Filters",), "ChannelRemover": ("Channels",),
             "StructureRemover": ("Filters", "Channels")}[inst.cls]
    for kind in kinds:
        graph = tp.DependencyGraph().build_dependency(run.model, example_inputs=run.example)
        convs = [(n, m) for n, m in run.model.named_modules() if isinstance(m, nn.Conv2d)]
        for name, conv in convs:
            zero = _zero_groups(conv.weight.detach(), kind)
            if not zero or len(zero) >= conv.weight.shape[group_dim(kind)]:
                continue
            handler = tp.prune_conv_out_channels if kind == "Filters" else tp.prune_conv_in_channels
            group = graph.get_pruning_group(conv, handler, idxs=zero)
            if not _removable(group, zero, kind):
                continue
            if not graph.check_pruning_group(group):
                continue
            group.prune()
            removed[f"{name}.{kind.lower()}"] = len(zero)
            graph = tp.DependencyGraph().build_dependency(run.model, example_inputs=run.example)
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


def _lr_scheduler(inst: Instance, optimizer: torch.optim.Optimizer) -> Any:
    sched = torch.optim.lr_scheduler
    gamma = inst.args.get("gamma", 0.1)
    if inst.cls == "StepLR":
        return sched.StepLR(optimizer, inst.args["step_size"], gamma)
    if inst.cls == "MultiStepLR":
        return sched.MultiStepLR(optimizer, list(inst.args["milestones"]), gamma)
    if inst.cls == "CosineAnnealingLR":
        return sched.CosineAnnealingLR(optimizer, inst.args["T_max"], inst.args.get("eta_min", 0))
    return sched.ExponentialLR(optimizer, gamma)


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
               after_thinning: Hook | None = None) -> RecipeRun:
    """Fine-tune ``model`` for ``epochs`` epochs while the recipe's policies fire.

    With ``epochs`` 0 the epoch-0 actions (prune, thin) happen and nothing trains
    (``dataset`` may then be None). ``after_thinning`` runs on the model after every
    thinning that removed something.
    """
    from edge_tune.data import loader
    from edge_tune.train import device_for

    torch.manual_seed(seed)
    device = device_for(model)
    run = RecipeRun(model, example.to(device), recipe, log, evaluate=evaluate,
                    after_thinning=after_thinning)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                weight_decay=weight_decay)
    schedulers = {name: _lr_scheduler(inst, optimizer) for name, inst in recipe.instances.items()
                  if inst.section == "lr_schedulers"}
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
                loss = loss + group_lasso(run, inst)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"recipe training diverged: loss {loss.item()} in epoch "
                                   f"{epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.apply_masks()
            total, count = total + loss.item() * len(y), count + len(y)
        for inst in regularizers:
            threshold_groups(run, inst)
        for policy in active:
            if policy.kind == "lr_scheduler":
                schedulers[policy.instance].step()
        log(f"epoch {epoch + 1}/{epochs}: loss {total / max(1, count):.4f}, "
            f"policies {[p.instance for p in active]}")
    if any(i.section == "quantizers" for i in recipe.instances.values()):
        run.int8 = True  # post-training: applied to the exported model (NNCF)
    model.eval()
    return run


def fit_recipe(model: nn.Module, recipe: Recipe, splits: Any, config: Any, epochs: int,
               log: Log, report_top1: bool = False) -> RecipeRun:
    """:func:`run_recipe` with the config's fine-tuning settings and data (``Splits``);
    BatchNorm re-estimated after every thinning; with ``report_top1`` the thinning reports
    carry test top-1 (masked, thinned, re-estimated)."""
    from edge_tune.train import evaluate, recalibrate_batchnorm

    f = config.finetune
    example = torch.zeros(1, 3, splits.image_size, splits.image_size)
    return run_recipe(model, recipe, splits.train, epochs, f.lr, f.weight_decay,
                      config.data.batch_size, example, seed=config.baseline.seed, log=log,
                      evaluate=(lambda m: evaluate(m, splits.test)[0]) if report_top1 else None,
                      after_thinning=lambda m: recalibrate_batchnorm(
                          m, splits.train, f.bn_recalibration_images))


def channel_prunable(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Conv weights whose input channels only that conv reads (ResNet: each block's conv2):
    the channels a ChannelRemover can take out without touching a residual stream."""
    import torch_pruning as tp

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
    from edge_tune.distiller import recipe_from_dict

    return run_recipe(model, recipe_from_dict(raw), None, 0, 0.0, 0.0, 1, example,
                      log=lambda _: None)


def sparsity_report(model: nn.Module) -> dict[str, float]:
    """Fine-grained sparsity (%) of every conv/linear weight."""
    return {f"{n}.weight": round(100 * float((m.weight == 0).float().mean()), 2)
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def main(argv: list[str] | None = None) -> int:
    import copy
    import json
    import time

    from edge_tune import bench
    from edge_tune.config import load_config
    from edge_tune.data import check_data, load_data
    from edge_tune.distiller import check_weights, load_recipe, rescale
    from edge_tune.errors import ArgumentParser, UserError
    from edge_tune.models import create_model
    from edge_tune.output import new_run_dir, stdout_to_stderr
    from edge_tune.train import set_threads
    from edge_tune.trial import (
        _figures,
        arrays,
        bench_settings,
        deploy,
        log_stderr,
        prepare_baseline,
        verdict,
    )
    from edge_tune.verify import table

    parser = ArgumentParser(prog="python -m edge_tune.compress", description=(
        "Run a Distiller compression-scheduling recipe on the configured model and data while "
        "fine-tuning, then export, verify and benchmark it against the baseline (JSON)."))
    parser.add_argument("--recipe", required=True, help="Distiller YAML recipe")
    parser.add_argument("--config", help="YAML config (default: ResNet-20 on digits)")
    parser.add_argument("--epochs", type=int, help="run in N epochs: every policy's epochs are "
                        "rescaled from --recipe-epochs onto N")
    parser.add_argument("--recipe-epochs", type=int, default=180, help="the training length the "
                        "recipe was written for (Distiller's CIFAR runs: 180)")
    parser.add_argument("--output", help="new directory (default: runs/compress-<time>)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    recipe = load_recipe(args.recipe)
    model_names = [n for n, _ in create_model(config.model, 10).named_parameters()]
    check_weights(recipe, model_names)
    if args.recipe_epochs < 1:
        raise UserError(f"--recipe-epochs: expected an integer >= 1, got {args.recipe_epochs}")
    epochs = args.recipe_epochs
    if args.epochs is not None:
        if args.epochs < 0:
            raise UserError(f"--epochs: expected an integer >= 0, got {args.epochs}")
        if args.epochs == 0:
            log_stderr("--epochs 0: the recipe's epoch-0 actions only, no training")
        elif args.epochs != args.recipe_epochs:
            recipe = rescale(recipe, args.recipe_epochs, args.epochs)
            scaled = [i.name for i in recipe.instances.values() if i.section == "regularizers"]
            note = (f"; strength of {', '.join(scaled)} x{args.recipe_epochs / args.epochs:g}"
                    if scaled else "")
            log_stderr(f"recipe rescaled from {args.recipe_epochs} to {args.epochs} epochs{note}")
        epochs = args.epochs
    check_data(config.data)
    bench.check_device(config.bench.device)
    out = new_run_dir(args.output, "compress")
    with stdout_to_stderr():
        set_threads(config.train_threads)
        splits = load_data(config.data)
        test = arrays(splits.test)
        base = prepare_baseline(config, splits, test, out)
        model = copy.deepcopy(base.model)
        start = time.perf_counter()
        run = fit_recipe(model, recipe, splits, config, epochs, log_stderr, report_top1=True)
        artifact = deploy(model, run.int8, splits, config, out, base.shapes, test,
                          timings={"recipe_s": time.perf_counter() - start})
        measured = bench.benchmark_models({"baseline": base.artifact.deployed,
                                           "model": artifact.deployed}, bench_settings(config))
        csv_path = bench.write_layers_csv(measured["model"].layers, out / "layers.csv")
        result = {
            **_figures(artifact, measured["model"]),
            "speedup": measured["baseline"].latency_ms / measured["model"].latency_ms,
            "baseline": {**_figures(base.artifact, measured["baseline"]), **base.info},
            # what thinning removed is reported under "thinned"
            "compression": verdict(artifact.verification, removes_structures=any(
                i.section == "extensions" for i in recipe.instances.values()),
                zeroes_weights=bool(run.masks)),
            "verification": table(artifact.verification),
            "sparsity": sparsity_report(model), "thinned": run.thinned,
            "thinning_top1": run.thinning_top1, "epochs": epochs, "int8": run.int8,
            "recipe": str(args.recipe), "onnx": str(artifact.onnx_path),
            "deployed": str(artifact.deployed), "layers_csv": str(csv_path),
            "output": str(out), "timings": artifact.timings,
        }
        (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    from edge_tune.errors import run_cli

    run_cli(main)
