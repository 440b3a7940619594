"""Checks of a Distiller recipe's values: each takes the value's YAML path and the value and
returns it checked (a tuple for a list, weight names without Distiller's ``module.``), or raises
a one-line :class:`~edge_tune.core.errors.UserError` naming the path:
``pruners.low_pruner.final_sparsity: expected 0 <= x < 1, got 1.3``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_tune.core.errors import UserError

GROUP_TYPES = ("Filters", "Channels", "Rows", "Blocks", "3D")  # what structure pruners rank

REG_GROUP_TYPES = ("Filters", "Channels", "Rows", "2D", "3D", "4D", "Kernels")  # group lasso

Check = Callable[[str, Any], Any]

Args = dict[str, Any]


def ratio(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise UserError(f"{path}: expected 0 <= x < 1, got {value!r}")
    return float(value)


def positive(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UserError(f"{path}: expected a number > 0, got {value!r}")
    return float(value)


def gamma(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise UserError(f"{path}: expected 0 < x <= 1, got {value!r}")
    return float(value)


def non_negative(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UserError(f"{path}: expected a number >= 0, got {value!r}")
    return float(value)


def epochs_int(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{path}: expected an integer >= 1, got {value!r}")
    return value


def weight_names(path: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # Distiller's ResNet-50 recipes write one weight without a list
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(w, str) for w in value):
        raise UserError(f"{path}: expected a non-empty list of weight names, got {value!r}")
    return tuple(strip_prefix(w) for w in value)


def one_of(*valid: str) -> Check:
    def check(path: str, value: Any) -> str:
        if value not in valid:
            raise UserError(f"{path}: expected one of {', '.join(valid)}, got {value!r}")
        return str(value)
    return check


group_type = one_of(*GROUP_TYPES)

reg_group_type = one_of(*REG_GROUP_TYPES)


def flag(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{path}: expected true or false, got {value!r}")
    return value


def count(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{path}: expected an integer >= 0, got {value!r}")
    return value


def sparsity_range(path: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise UserError(f"{path}: expected [low, high] sparsities, got {value!r}")
    low, high = ratio(f"{path}[0]", value[0]), ratio(f"{path}[1]", value[1])
    if high < low:
        raise UserError(f"{path}: expected low <= high, got {value!r}")
    return low, high


def sensitivities(path: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{path}: expected a mapping of weight name (or '*'): sensitivity, "
                        f"got {value!r}")
    return {strip_prefix(str(k)): non_negative(f"{path}.{k}", v) for k, v in value.items()}


def block_kwargs(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"block_shape"}:
        raise UserError(f"{path}: expected {{block_shape: [filters, channels, h, w]}}, "
                        f"got {value!r}")
    shape = value["block_shape"]
    if not isinstance(shape, list) or len(shape) != 4 or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in shape):
        raise UserError(f"{path}.block_shape: expected 4 integers >= 1, got {shape!r}")
    return {"block_shape": tuple(shape)}


def levels(path: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{path}: expected a mapping of weight name: sparsity, got {value!r}")
    return {strip_prefix(str(k)): ratio(f"{path}.{k}", v) for k, v in value.items()}


def thresholds(path: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{path}: expected a mapping of weight name: threshold, got {value!r}")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise UserError(f"{path}.{k}: expected a number >= 0, got {v!r}")
        out[strip_prefix(str(k))] = float(v)
    return out


def pairs(first: Check, what: str, group: Check) -> Check:
    def check(path: str, value: Any) -> dict[str, tuple[float, str]]:
        if not isinstance(value, dict) or not value:
            raise UserError(f"{path}: expected a mapping of weight name: [{what}, group type], "
                            f"got {value!r}")
        out = {}
        for k, v in value.items():
            if not isinstance(v, list) or len(v) != 2:
                raise UserError(f"{path}.{k}: expected [{what}, group type], got {v!r}")
            out[strip_prefix(str(k))] = (first(f"{path}.{k}[0]", v[0]),
                                         group(f"{path}.{k}[1]", v[1]))
        return out
    return check


reg_regims = pairs(positive, "strength", reg_group_type)

rank_regims = pairs(ratio, "sparsity", group_type)  # Distiller's older pruner form


def channel_regims(path: str, value: Any) -> dict[str, tuple[float, str]]:
    regims: dict[str, tuple[float, str]] = reg_regims(path, value)
    for name, (_, group) in regims.items():
        if group != "Channels":
            raise UserError(f"{path}.{name}[1]: GroupVarianceRegularizer groups Channels only, "
                            f"got {group!r}")
    return regims


def strengths(path: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{path}: expected a mapping of weight name: strength, got {value!r}")
    return {strip_prefix(str(k)): positive(f"{path}.{k}", v) for k, v in value.items()}


def milestones(path: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{path}: expected a non-empty list of epochs, got {value!r}")
    return tuple(epochs_int(f"{path}[{i}]", v) for i, v in enumerate(value))


def gammas(path: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{path}: expected a non-empty list of factors, got {value!r}")
    return tuple(gamma(f"{path}[{i}]", v) for i, v in enumerate(value))


def bits(path: str, value: Any) -> int | None:
    """8, or None (Distiller: left in float); fewer bits are refused (the device runs int8)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{path}: expected a number of bits, got {value!r}")
    if value < 8:
        raise UserError(f"{path}: {value} bits: {INT8}")
    if value > 8:
        raise UserError(f"{path}: {value} bits: the deployed device runs int8 (OpenVINO on a "
                        "CPU), not wider integers")
    return 8


INT8 = ("the deployed device runs int8 (OpenVINO on a CPU); set 8 to run it as int8, or "
        "remove the quantizer")


def text(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UserError(f"{path}: expected a string, got {value!r}")
    return value


def agp_order(path: str, args: Args) -> None:
    if args["final_sparsity"] < args["initial_sparsity"]:
        raise UserError(f"{path}.final_sparsity: expected >= initial_sparsity "
                        f"{args['initial_sparsity']}, got {args['final_sparsity']}")


def ranked_form(path: str, args: Args) -> None:
    """L1RankedStructureParameterPruner: ``group_type`` + ``desired_sparsity`` + ``weights``,
    or Distiller's older ``reg_regims: {weight: [sparsity, group type]}``."""
    if "reg_regims" in args:
        extra = sorted({"group_type", "desired_sparsity", "weights"} & set(args))
        if extra:
            raise UserError(f"{path}.{extra[0]}: not with reg_regims (its older form)")
        return
    for key in ("group_type", "desired_sparsity", "weights"):
        if key not in args:
            raise UserError(f"{path}.{key}: required by L1RankedStructureParameterPruner "
                            "(or give reg_regims: {weight: [sparsity, group type]}), missing")


def blocks(path: str, args: Args) -> None:
    if (args.get("group_type") == "Blocks") != ("kwargs" in args):
        raise UserError(f"{path}.kwargs: group_type Blocks needs kwargs: {{block_shape: "
                        "[filters, channels, h, w]}} (and only Blocks takes it)")


def ranked_checks(path: str, args: Args) -> None:
    ranked_form(path, args)
    blocks(path, args)


def agp_blocks(path: str, args: Args) -> None:
    agp_order(path, args)
    blocks(path, args)


def strip_prefix(name: str) -> str:
    """A weight name without Distiller's DataParallel ``module`` components: the leading
    ``module.``, and AlexNet's and VGG's ``features.module.3.weight`` (only their features
    were wrapped)."""
    return ".".join(part for part in name.split(".") if part != "module")
