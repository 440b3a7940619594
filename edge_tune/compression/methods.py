"""The study's compression methods at preset strengths, each a Distiller recipe built for the
baseline's layers: fine-grained magnitude, AGP, filter removal, channel removal, SSL and
int8. :data:`METHODS` is their registry (family and recipe builder); :func:`merge` composes
them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RawRecipe = dict[str, Any]

SPARSITY = 0.8  # fine-grained and AGP: fraction of weights zeroed

STRUCTURE = 0.5  # filter and channel removal: fraction of filters / input channels

# group lasso strength: 0.024 over 6 epochs removed layer1 channels of Distiller's SSL recipe
# (docs/measurement.md); the study regularises all 9 block convs, where 0.024 cost 15
# points: half of it
SSL_STRENGTH = 0.012


def _lr(epochs: int) -> RawRecipe:
    return {"lr_schedulers": {"finetune_lr": {"class": "CosineAnnealingLR", "T_max": epochs}},
            "policies": [{"lr_scheduler": {"instance_name": "finetune_lr"}, "starting_epoch": 0,
                          "ending_epoch": epochs, "frequency": 1}]}


def _at(kind: str, name: str, epoch: int) -> dict[str, Any]:
    return {kind: {"instance_name": name}, "epochs": [epoch]}


def merge(*recipes: RawRecipe) -> RawRecipe:
    """One recipe from several: instances united (same name = same instance), policies in order."""
    out: RawRecipe = {"version": 1, "policies": []}
    for recipe in recipes:
        for section, entries in recipe.items():
            if section == "policies":
                out["policies"] += [p for p in entries if p not in out["policies"]]
            elif section != "version":
                out.setdefault(section, {}).update(entries)
    return out


@dataclass(frozen=True)
class Layers:
    """The weight names a method may act on, found once on the baseline model."""

    convs: list[str]  # every conv weight
    fine: list[str]  # fine-grained targets (all convs but the first)
    channels: list[str]  # convs whose input channels only they read (removable)


def fine_grained(layers: Layers, epochs: int) -> RawRecipe:
    pruner = {"class": "SparsityLevelParameterPruner",
              "levels": {w: SPARSITY for w in layers.fine}}
    return merge({"pruners": {"fine": pruner}, "policies": [_at("pruner", "fine", 0)]},
                 _lr(epochs))


def agp(layers: Layers, epochs: int) -> RawRecipe:
    pruner = {"class": "AutomatedGradualPruner", "initial_sparsity": 0.05,
              "final_sparsity": SPARSITY, "weights": layers.fine}
    # pruning over the first epochs, the last two recover with the final masks
    policy = {"pruner": {"instance_name": "agp"}, "starting_epoch": 0,
              "ending_epoch": max(1, epochs - 2), "frequency": 1}
    return merge({"pruners": {"agp": pruner}, "policies": [policy]}, _lr(epochs))


def _removal(kind: str, group_type: str, weights: list[str], thinner: tuple[str, str],
             epochs: int) -> RawRecipe:
    """Rank ``group_type`` by L1, zero the weakest STRUCTURE fraction and remove them (epoch 0).

    ``thinner``: the extension's (instance name, class)."""
    pruner = {"class": "L1RankedStructureParameterPruner", "group_type": group_type,
              "desired_sparsity": STRUCTURE, "weights": weights}
    name, thinner_class = thinner
    return merge({"pruners": {kind: pruner}, "extensions": {name: {"class": thinner_class}},
                  "policies": [_at("pruner", kind, 0), _at("extension", name, 0)]},
                 _lr(epochs))


def filters(layers: Layers, epochs: int) -> RawRecipe:
    return _removal("filters", "Filters", layers.convs, ("filter_thinner", "FilterRemover"),
                    epochs)


def channels(layers: Layers, epochs: int) -> RawRecipe:
    return _removal("channels", "Channels", layers.channels,
                    ("channel_thinner", "ChannelRemover"), epochs)


def ssl(layers: Layers, epochs: int) -> RawRecipe:
    thin_at = max(0, epochs - 2)  # regularise, remove the zeroed channels, recover two epochs
    regims = {w: [SSL_STRENGTH * 6 / max(1, thin_at), "Channels"] for w in layers.channels}
    regularizer = {"class": "GroupLassoRegularizer", "reg_regims": regims,
                   "threshold_criteria": "Mean_Abs"}
    policies = [_at("extension", "ssl_thinner", thin_at)]
    if thin_at > 0:
        policies.insert(0, {"regularizer": {"instance_name": "ssl"}, "starting_epoch": 0,
                            "ending_epoch": thin_at, "frequency": 1})
    return merge({"regularizers": {"ssl": regularizer},
                  "extensions": {"ssl_thinner": {"class": "ChannelRemover"}},
                  "policies": policies}, _lr(epochs))


def int8(layers: Layers, epochs: int) -> RawRecipe:
    return {"version": 1, "quantizers": {"int8": {
        "class": "PostTrainLinearQuantizer", "bits_activations": 8, "bits_parameters": 8}}}


@dataclass(frozen=True)
class Method:
    """A compression method at a preset strength: its family and its recipe builder."""

    family: str  # sparsity | structure | quantisation
    recipe: Callable[[Layers, int], RawRecipe]
    trains: bool = True  # fine-tunes (int8 alone is post-training)


METHODS: dict[str, Method] = {
    "fine-grained 80%": Method("sparsity", fine_grained),
    "AGP 80%": Method("sparsity", agp),
    "filters 50%": Method("structure", filters),
    "channels 50%": Method("structure", channels),
    "SSL channels": Method("structure", ssl),
    "int8": Method("quantisation", int8, trains=False),
}


