from pathlib import Path

import pytest

from edge_tune.core.errors import UserError
from edge_tune.search.space import SPACES_DIR, load_space, space_from_dict


@pytest.mark.parametrize("name", sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
def test_packaged_spaces_load(name: str) -> None:
    space = load_space(name)
    assert space.bounds and all(low < high for low, high in space.bounds.values())
    assert set(space.tune_space()) == set(space.bounds)


def test_default_space_exists() -> None:
    assert "int8" in load_space("default").bounds


@pytest.mark.parametrize(("parameters", "message"), [
    ({"filter_ratoi": [0, 0.5]}, "search_space.parameters: unknown 'filter_ratoi' (did you mean"),
    ({"filter_ratio": [0.6, 0.2]}, "search_space.parameters.filter_ratio: bounds inverted"),
    ({"filter_ratio": [0.0, 1.0]}, "search_space.parameters.filter_ratio: bound 1.0 outside"),
    ({"int8": [0, 1, 2]}, "search_space.parameters.int8: expected [low, high]"),
    ({}, "search_space.parameters: empty"),
])
def test_bad_spaces_are_named(parameters: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        space_from_dict({"parameters": parameters}, "test")
    assert message in str(err.value)


def test_space_by_path_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("parameters:\n  fine_sparsity: [0.1, 0.9]\n")
    assert load_space(str(path)).bounds == {"fine_sparsity": (0.1, 0.9)}
    with pytest.raises(UserError, match="no such file or space 'nope'; packaged spaces: "):
        load_space("nope")


def test_a_parameter_taken_out_of_the_space_leaves_its_points_once() -> None:
    from edge_tune.search.space import SearchSpace, without

    space = SearchSpace({"filter_ratio": (0.0, 0.8), "int8": (0.0, 1.0)}, "s.yaml",
                        [{"filter_ratio": 0.5, "int8": 1.0}, {"filter_ratio": 0.5, "int8": 0.0},
                         {"filter_ratio": 0.2, "int8": 1.0}])
    floats = without(space, "int8")
    assert floats.bounds == {"filter_ratio": (0.0, 0.8)} and floats.source == "s.yaml"
    assert floats.points == [{"filter_ratio": 0.5}, {"filter_ratio": 0.2}]
    assert "int8" in space.bounds  # the original is untouched


@pytest.mark.parametrize(("bounds", "choices"), [
    ({"int8": (0.0, 1.0)}, (False, True)), ({"int8": (0.5, 1.0)}, (True,)),
    ({"int8": (0.0, 0.4)}, (False,)), ({"filter_ratio": (0.1, 0.8)}, (False,))])
def test_what_trials_of_a_space_can_run_in(bounds: dict, choices: tuple[bool, ...]) -> None:
    from edge_tune.search.space import SearchSpace, int8_choices

    assert int8_choices(SearchSpace(bounds, "s.yaml")) == choices
