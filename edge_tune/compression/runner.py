"""Run a Distiller recipe while fine-tuning: masks, AGP, group lasso, LR schedules, thinning.

Distiller's ``CompressionScheduler``: every class's behaviour comes from its registry entry
(:data:`edge_tune.compression.classes.CLASSES`); this module only decides when it acts.

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

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edge_tune.catalog.splits import Splits, loader, take
from edge_tune.compression.distill import Teacher
from edge_tune.compression.quantize import Int8Options
from edge_tune.compression.ranking import activation_apoz, folded_weights
from edge_tune.compression.recipe import Instance, Policy, Recipe, agp_sparsity, recipe_from_dict
from edge_tune.compression.structures import Tied
from edge_tune.compression.thinning import remove_zero_structures, tie_filters
from edge_tune.compression.train import device_for, evaluate, recalibrate_batchnorm
from edge_tune.config import Config

Log = Callable[[str], None]

Hook = Callable[[nn.Module], None]

EpochHook = Callable[[int, nn.Module], None]  # (epochs done, model) after each epoch


@dataclass
class Held:
    """Masks a pruner policy holds apart from the permanent ones (its ``args`` say how):
    applied before each forward pass, and after each optimiser step too unless
    ``forward_only``; with ``double`` the optimiser updates the dense weights (pruned ones can
    grow back); ``gradients`` zeroes the masked weights' gradients; ``discard`` drops the
    masks after each mini-batch; ``keep`` makes them permanent when the policy ends."""

    forward_only: bool = False
    double: bool = False
    gradients: bool = False
    discard: bool = False
    keep: bool = False
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, args: dict[str, Any]) -> Held | None:
        """None for a policy whose masks are simply permanent (Distiller's default)."""
        held = cls(args.get("mask_on_forward_only", False), args.get("use_double_copies", False),
                   args.get("mask_gradients", False),
                   args.get("discard_masks_at_minibatch_end", False), args.get("keep_mask", False))
        return held if held.forward_only or held.double or held.discard else None


@dataclass
class RecipeRun:
    """The mutable state of one recipe run over a model (the pruners' :class:`Context`)."""

    model: nn.Module
    example: torch.Tensor
    recipe: Recipe
    log: Log
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # weight name -> 0/1 mask
    thinned: dict[str, dict[str, int]] = field(default_factory=dict)  # extension -> removed
    int8: Int8Options | None = None  # post-training int8 after the run (NNCF)
    qat: bool = False  # the model trained with int8 fake-quantisation (NNCF) and is deployed so
    evaluate: Callable[[nn.Module], float] | None = None  # top-1 (%) for thinning reports
    after_thinning: Hook | None = None  # e.g. BatchNorm re-estimation
    thinning_top1: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # conv -> why it was not thinned
    dataset: Any = None  # training images: activation statistics, QAT calibration
    calibration_images: int = 128
    held: dict[int, Held] = field(default_factory=dict)  # policy index -> its held masks
    last: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # instance -> masks
    memos: dict[str, float] = field(default_factory=dict)
    _instance: str = ""  # the pruner computing masks now (previous, memo)
    epoch: int = 0
    starting_epoch: int = 0
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    teacher: Teacher | None = None  # fine-tuning distils from it

    def params(self) -> dict[str, nn.Parameter]:
        return dict(self.model.named_parameters())

    def apply_masks(self, masks: dict[str, torch.Tensor] | None = None) -> None:
        """Write ``masks`` (default: the permanent ones) into the weights."""
        params = self.params()
        with torch.no_grad():
            for name, mask in (self.masks if masks is None else masks).items():
                if name in params and params[name].shape == mask.shape:
                    params[name].mul_(mask.to(params[name].device))

    def previous(self, weight: str) -> torch.Tensor | None:
        return self.last.get(self._instance, {}).get(weight)

    def memo(self, key: str, compute: Callable[[], float]) -> float:
        full = f"{self._instance}:{key}"
        if full not in self.memos:
            self.memos[full] = compute()
        return self.memos[full]

    def apoz(self, weights: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return activation_apoz(self.model, weights, self.dataset, self.calibration_images)

    def tie(self, weights: tuple[str, ...]) -> list[Tied]:
        """Partition conv weights into groups whose output filters the graph ties."""
        return tie_filters(self.model, self.example, weights, self.skipped)


def _prune(run: RecipeRun, inst: Instance, policy: Policy, epoch: int, index: int = -1) -> None:
    """The masks ``inst`` sets now under ``policy`` (the ``index``-th of the recipe):
    permanent, or held by the policy as its ``args`` say."""
    args = {**inst.args, **{k: v for k, v in policy.args.items() if k == "levels"}}
    if "initial_sparsity" in args:
        level = agp_sparsity(args["initial_sparsity"], args["final_sparsity"],
                             policy.starting_epoch, policy.ending_epoch, policy.frequency, epoch)
    else:
        level = args.get("desired_sparsity", 0.0)
    weights = {n: p.detach() for n, p in run.params().items()}
    if policy.args.get("fold_batchnorm"):
        weights.update(folded_weights(run.model))
    pruner = inst.spec.pruner
    assert pruner is not None  # the loader puts only pruner classes under pruners
    run.epoch, run.starting_epoch, run._instance = epoch, policy.starting_epoch, inst.name
    # a pruner may build its masks on the CPU (seeded draws, index tensors): the weights' device
    masks = {n: m.to(weights[n].device) for n, m in pruner.masks(weights, args, level, run).items()}
    run.last[inst.name] = masks
    held = run.held.get(index)
    if held is None:
        run.masks.update(masks)
        run.apply_masks()
    else:
        held.masks = masks


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
        mask = mask.to(weights[name].device)
        run.masks[name] = mask * run.masks.get(name, torch.ones_like(mask))
    run.apply_masks()


def thin(run: RecipeRun, inst: Instance) -> dict[str, int]:
    """Physically remove the all-zero structures ``inst`` (an extension) removes
    (:func:`edge_tune.compression.thinning.remove_zero_structures`); the masks of removed
    structures dropped, test top-1 before and after (masked, thinned, re-estimated) when the
    run evaluates."""
    before = run.evaluate(run.model) if run.evaluate else None
    removed = remove_zero_structures(run.model, run.example, inst.spec.removes, run.skipped)
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


def _fire(run: RecipeRun, active: list[tuple[int, Policy]], epoch: int,
          optimizer: torch.optim.Optimizer) -> None:
    """Pruners, extensions and quantizers of ``active``, at the start of ``epoch``."""
    for index, policy in active:
        inst = run.recipe.instances[policy.instance]
        if policy.kind == "pruner":
            if index not in run.held and (held := Held.of(policy.args)) is not None:
                run.held[index] = held
            _prune(run, inst, policy, epoch, index)
        elif policy.kind == "extension":
            thin(run, inst)
            _new_parameters(run, optimizer)
        elif policy.kind == "quantizer" and inst.spec.qat and not run.qat:
            run.model = quantization_aware(run.model, run.dataset, run.calibration_images,
                                           inst.spec.int8(inst.args) if inst.spec.int8 else None)
            run.qat = True
            _new_parameters(run, optimizer)
            run.log(f"{inst.name}: training with int8 fake-quantisation from epoch {epoch} "
                    "(NNCF)")


def _new_parameters(run: RecipeRun, optimizer: torch.optim.Optimizer) -> None:
    # the same optimizer (LR schedules keep their state) over the new tensors; momentum
    # buffers had the old shapes
    optimizer.param_groups[0]["params"] = list(run.model.parameters())
    optimizer.state.clear()


def quantization_aware(model: nn.Module, dataset: Any, images: int,
                       options: Int8Options | None) -> nn.Module:
    """A copy of ``model`` with NNCF's int8 fake-quantisation inserted (ranges calibrated on
    ``images`` training images), ready to train: what Distiller's
    ``QuantAwareTrainRangeLinearQuantizer`` does; exported with its quantisers, which
    OpenVINO runs as int8. BatchNorm stays a layer of its own while training: with it folded
    into the convs first, one epoch at the fine-tuning rate (0.03) took ResNet-20 on digits
    from 87.8% to 9.8% top-1 (kept: 92.7%)."""
    # NNCF compiles its torch extension on first use (30-60 s on 2 busy cores, then cached);
    # its default 60 s limit failed a run under load
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
    import nncf  # heavy: only for quantisation-aware training

    options = options or Int8Options()
    if dataset is None:
        raise RuntimeError("quantisation-aware training needs training images (the run has none)")
    device = device_for(model)
    subset = take(dataset, images)
    samples = [subset[i][0][None].to(device) for i in range(len(subset))]
    preset = nncf.QuantizationPreset.MIXED if options.asymmetric_activations else None
    quantized = nncf.quantize(copy.deepcopy(model).eval(), nncf.Dataset(samples),
                              subset_size=len(samples), **({"preset": preset} if preset else {}))
    return quantized.train()


def _step(run: RecipeRun, held: list[Held], x: torch.Tensor, y: torch.Tensor,
          regularizers: list[Instance], optimizer: torch.optim.Optimizer, epoch: int) -> float:
    """One mini-batch: held masks on the forward pass, the loss with the regularisers'
    penalties, the optimiser step, then the masks again as each asks."""
    params = run.params()
    dense = {n: params[n].detach().clone() for h in held if h.double for n in h.masks
             if n in params}
    for h in held:
        run.apply_masks(h.masks)
    logits = run.model(x)
    loss = nn.functional.cross_entropy(logits, y)
    if run.teacher is not None:
        loss = run.teacher.loss(x, logits, loss)
    for inst in regularizers:
        loss = loss + _penalty(run, inst)
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"recipe training diverged: loss {loss.item()} in epoch {epoch}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for h in held:
            for name, mask in h.masks.items():
                grad = params[name].grad if name in params else None
                if h.gradients and grad is not None and grad.shape == mask.shape:
                    grad.mul_(mask)
        for name, value in dense.items():
            if params[name].shape == value.shape:
                params[name].copy_(value)  # the step updates the dense weights
    optimizer.step()
    run.apply_masks()
    for h in held:
        if not h.forward_only and not h.double:
            run.apply_masks(h.masks)
        if h.discard:
            h.masks = {}
    return loss.item()


def _last_epoch(policy: Policy) -> int:
    return max(policy.epochs) if policy.epochs is not None else policy.ending_epoch - 1


def _release(run: RecipeRun, index: int) -> None:
    """A policy's held masks when it ends: permanent with ``keep_mask``, else dropped."""
    held = run.held.pop(index, None)
    if held is not None and held.keep:
        run.masks.update(held.masks)
        run.apply_masks()


def run_recipe(model: nn.Module, recipe: Recipe, dataset: Any, epochs: int, lr: float,
               weight_decay: float, batch_size: int, example: torch.Tensor, seed: int = 0,
               log: Log = print, evaluate: Callable[[nn.Module], float] | None = None,
               after_thinning: Hook | None = None,
               after_epoch: EpochHook | None = None,
               validate: Callable[[nn.Module], tuple[float, float]] | None = None,
               calibration_images: int = 128, teacher: Teacher | None = None) -> RecipeRun:
    """Fine-tune ``model`` for ``epochs`` epochs while the recipe's policies fire.

    With ``epochs`` 0 the epoch-0 actions (prune, thin) happen and nothing trains
    (``dataset`` may then be None). ``after_thinning`` runs on the model after every
    thinning that removed something; ``after_epoch`` after every epoch (masks applied, the
    model back in train mode when it returns); ``validate`` gives (loss, top-1 %) on
    validation images for LR schedulers that follow a metric (ReduceLROnPlateau); with a
    ``teacher`` every mini-batch's loss is distilled from it. The trained model is
    ``run.model``: the same object unless quantisation-aware training replaced it.
    """
    torch.manual_seed(seed)
    device = device_for(model)
    run = RecipeRun(model, example.to(device), recipe, log, evaluate=evaluate,
                    after_thinning=after_thinning, dataset=dataset,
                    calibration_images=calibration_images,
                    generator=torch.Generator().manual_seed(seed), teacher=teacher)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                weight_decay=weight_decay)
    schedulers = {name: inst.spec.lr_scheduler(inst.args, optimizer)
                  for name, inst in recipe.instances.items() if inst.spec.lr_scheduler}
    indexed = list(enumerate(recipe.policies))
    if epochs == 0:
        _fire(run, [(i, p) for i, p in indexed if p.fires(0)], 0, optimizer)
    for epoch in range(epochs):
        batches = loader(dataset, batch_size, shuffle=True, seed=seed + epoch)
        active = [(i, p) for i, p in indexed if p.fires(epoch)]
        # a pruner whose policy spans this epoch re-masks every mini_batch_pruning_frequency
        spanning = [(i, p) for i, p in indexed if p.kind == "pruner"
                    and p.args.get("mini_batch_pruning_frequency")
                    and (p.epochs is None and p.starting_epoch <= epoch < p.ending_epoch)]
        _fire(run, active, epoch, optimizer)
        regularizers = [recipe.instances[p.instance] for _, p in active
                        if p.kind == "regularizer"]
        run.model.train()
        total, count = 0.0, 0
        for step, (x, y) in enumerate(batches):
            for index, policy in spanning:
                every = policy.args["mini_batch_pruning_frequency"]
                if step > 0 and (epoch * len(batches) + step) % every == 0:
                    _prune(run, recipe.instances[policy.instance], policy, epoch, index)
            x, y = x.to(device), y.to(device)
            loss = _step(run, list(run.held.values()), x, y, regularizers, optimizer, epoch)
            total, count = total + loss * len(y), count + len(y)
        for inst in regularizers:
            _regularizer_masks(run, inst)
        metrics = validate(run.model) if validate is not None and any(
            recipe.instances[p.instance].spec.metric for _, p in active) else None
        for _, policy in active:
            if policy.kind != "lr_scheduler":
                continue
            spec = recipe.instances[policy.instance].spec
            if spec.metric:
                if metrics is None:
                    raise RuntimeError(f"{policy.instance}: needs validation images")
                mode = recipe.instances[policy.instance].args.get("mode", "min")
                schedulers[policy.instance].step(metrics[0] if mode == "min" else metrics[1])
            else:
                schedulers[policy.instance].step()
        for index, policy in indexed:
            if policy.kind == "pruner" and _last_epoch(policy) == epoch:
                _release(run, index)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / max(1, count):.4f}, "
            f"lr {optimizer.param_groups[0]['lr']:.4g}, policies {[p.instance for _, p in active]}")
        if after_epoch is not None:
            after_epoch(epoch + 1, run.model)
    for index in list(run.held):  # policies that outlast the run end with it
        _release(run, index)
    quantizers = [i for i in recipe.instances.values() if i.spec.int8 is not None]
    if quantizers and not run.qat:  # post-training: applied to the exported model (NNCF)
        run.int8 = quantizers[0].spec.int8(quantizers[0].args)  # type: ignore[misc]
    run.model.eval()
    return run


def fit_recipe(model: nn.Module, recipe: Recipe, splits: Splits, config: Config, epochs: int,
               log: Log, report_top1: bool = False, after_epoch: EpochHook | None = None,
               teacher: Teacher | None = None, recalibrate: bool = True) -> RecipeRun:
    """:func:`run_recipe` with the config's fine-tuning settings and data; BatchNorm
    re-estimated after every thinning (``recalibrate``; a latency probe needs only the
    shapes); with ``report_top1`` the thinning reports carry test top-1 (masked, thinned,
    re-estimated); with a ``teacher``, distilled."""
    f = config.finetune
    images = f.bn_recalibration_images if recalibrate else 0
    example = torch.zeros(1, 3, splits.image_size, splits.image_size)
    return run_recipe(model, recipe, splits.train, epochs, f.lr, f.weight_decay,
                      config.data.batch_size, example, seed=config.baseline.seed, log=log,
                      evaluate=(lambda m: evaluate(m, splits.test)[0]) if report_top1 else None,
                      after_thinning=lambda m: recalibrate_batchnorm(m, splits.train, images),
                      after_epoch=after_epoch,
                      validate=lambda m: validation_metrics(m, splits.val),
                      calibration_images=config.quantize.calibration_images, teacher=teacher)


def validation_metrics(model: nn.Module, dataset: Any) -> tuple[float, float]:
    """(Mean cross-entropy, top-1 %) on ``dataset``: what Distiller's ReduceLROnPlateau
    follows (mode min: the loss, max: top-1)."""
    training = model.training
    model.eval()
    device = device_for(model)
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader(dataset, 256):
            logits = model(x.to(device))
            total += float(nn.functional.cross_entropy(logits, y.to(device), reduction="sum"))
            correct += int((logits.argmax(1).cpu() == y).sum())
            count += len(y)
    model.train(training)
    return total / max(1, count), 100.0 * correct / max(1, count)


def apply_recipe(model: nn.Module, raw: dict[str, Any], example: torch.Tensor) -> RecipeRun:
    """A recipe's epoch-0 actions (masks, thinning) on ``model``, without training."""
    return run_recipe(model, recipe_from_dict(raw), None, 0, 0.0, 0.0, 1, example,
                      log=lambda _: None)


def sparsity_report(model: nn.Module) -> dict[str, float]:
    """Fine-grained sparsity (%) of every conv/linear weight."""
    return {f"{n}.weight": round(100 * float((m.weight == 0).float().mean()), 2)
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
