"""Search spaces: continuous parameters with bounds, read from ``search_spaces/*.yaml``.

The checkout's ``search_spaces/`` folder is installed as the package ``edge_tune.search_spaces``
(see pyproject.toml) and read through :mod:`importlib.resources`, so named spaces load the same
from an editable install, a wheel or a zip.

    parameters:
      filter_ratio: [0.0, 0.8]      # low, high (floats; BayesOptSearch takes only these)
      int8: [0.0, 1.0]
    points_to_evaluate:             # optional hand-made starting points, tried first
      - {filter_ratio: 0.5, int8: 1.0}

Names must be compression parameters the trial knows (``edge_tune.search.params.PARAMETERS``) and
bounds must lie inside each parameter's valid range, low < high.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from edge_tune.core.errors import UserError, unknown
from edge_tune.core.files import read_yaml
from edge_tune.search.params import PARAMETERS, check_param, param_spec

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11

SPACES_PACKAGE = "edge_tune.search_spaces"
# The packaged spaces' folder: a pathlib.Path for any install on a file system (editable: the
# checkout's search_spaces/; wheel: site-packages/edge_tune/search_spaces/).
SPACES_DIR: Traversable = files(SPACES_PACKAGE)


def space_names() -> list[str]:
    """The names of the packaged search spaces, sorted."""
    return sorted(entry.name.removesuffix(".yaml") for entry in SPACES_DIR.iterdir()
                  if entry.name.endswith(".yaml") and entry.is_file())


@dataclass(frozen=True)
class SearchSpace:
    """Bounds (low, high) per tuned parameter, and where they were read from."""

    bounds: dict[str, tuple[float, float]]
    source: str
    points: list[dict[str, float]] = field(default_factory=list)  # starting points

    def tune_space(self) -> dict[str, Any]:
        """Ray Tune's ``param_space`` (uniform floats)."""
        return {name: tune.uniform(low, high) for name, (low, high) in self.bounds.items()}


def space_from_dict(raw: Any, source: str, key: str = "search_space") -> SearchSpace:
    """Validate ``{parameters: {name: [low, high]}}`` and build a :class:`SearchSpace`."""
    if not isinstance(raw, dict) or not isinstance(raw.get("parameters"), dict):
        raise UserError(f"{key}: expected a mapping with 'parameters: {{name: [low, high]}}', "
                        f"got {raw!r}")
    keys = ["parameters", "points_to_evaluate", "description"]
    extra = set(raw) - set(keys)
    if extra:
        raise unknown(key, sorted(extra)[0], keys)
    bounds: dict[str, tuple[float, float]] = {}
    for name, pair in raw["parameters"].items():
        path = f"{key}.parameters.{name}"
        param_spec(str(name), f"{key}.parameters")
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise UserError(f"{path}: expected [low, high], got {pair!r}")
        low, high = pair
        for value in (low, high):
            try:
                check_param(name, value)
            except UserError:
                spec = param_spec(name)
                bracket = ")" if spec.high_open else "]"
                raise UserError(f"{path}: bound {value!r} outside [{spec.low:g}, {spec.high:g}"
                                f"{bracket}") from None
        if not low < high:
            raise UserError(f"{path}: bounds inverted or empty, expected low < high, "
                            f"got [{low}, {high}]")
        if param_spec(name).integer and math.ceil(low) > math.floor(high):
            raise UserError(f"{path}: no whole number in [{low}, {high}]; {name} is an integer")
        bounds[name] = (float(low), float(high))
    if not bounds:
        raise UserError(f"{key}.parameters: empty; name at least one of {', '.join(PARAMETERS)}")
    space = SearchSpace(bounds, source)
    points = raw.get("points_to_evaluate") or []
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise UserError(f"{key}.points_to_evaluate: expected a list of {{name: value}}, "
                        f"got {points!r}")
    check_points(space, points, f"{key}.points_to_evaluate")
    return SearchSpace(bounds, source, [{k: float(v) for k, v in p.items()} for p in points])


def without(space: SearchSpace, name: str) -> SearchSpace:
    """``space`` with ``name`` no longer searched (trials take its default); its starting
    points without it, each once."""
    bounds = {k: v for k, v in space.bounds.items() if k != name}
    return dataclasses.replace(space, bounds=bounds, points=drop_param(space.points, name))


def int8_choices(space: SearchSpace) -> tuple[bool, ...]:
    """What trials of ``space`` can run in: (False,) float only, (True,) int8 only, or
    (False, True) either (``int8`` is searched as off below 0.5, on from it)."""
    low, high = space.bounds.get("int8", (0.0, 0.0))
    return tuple(sorted({low >= 0.5, high >= 0.5}))


def drop_param(points: list[dict[str, float]], name: str) -> list[dict[str, float]]:
    """``points`` without ``name``, each once, in order."""
    out: list[dict[str, float]] = []
    for point in points:
        kept = {k: v for k, v in point.items() if k != name}
        if kept not in out:
            out.append(kept)
    return out


def check_points(space: SearchSpace, points: list[dict[str, Any]], key: str) -> None:
    """Each starting point names exactly the space's parameters, each inside its bounds."""
    for i, point in enumerate(points):
        missing = sorted(set(space.bounds) - set(point))
        extra = sorted(set(point) - set(space.bounds))
        if missing or extra:
            raise UserError(f"{key}[{i}]: must name exactly the search space's parameters "
                            f"({', '.join(space.bounds)}); "
                            + (f"missing {missing}" if missing else f"not in the space {extra}"))
        for name, value in point.items():
            low, high = space.bounds[name]
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not low <= value <= high:
                raise UserError(f"{key}[{i}].{name}: {value!r} outside the search space's "
                                f"[{low:g}, {high:g}]")


def load_space(name_or_path: str) -> SearchSpace:
    """A search space by file path, or by name in the packaged ``search_spaces/`` folder."""
    given = Path(name_or_path)
    path = given if given.suffix else SPACES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(f"tune.search_space: no such file or space {name_or_path!r}; "
                        f"packaged spaces: {', '.join(space_names())}")
    with as_file(path) as file:  # the file itself unless the package sits in a zip
        raw = read_yaml(file)
    return space_from_dict(raw, str(path), "search_space")
