"""The package's shape: no import cycles, imports at module top, a torch-free edge side, and
registries that carry what their callers need."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "edge_tune"
# The deliberate exceptions to "imports at module top": heavy optional libraries where the one
# path that needs them runs, so that a command answers bad input within seconds (scikit-learn
# for digits, torchvision for torchvision: models, NNCF for int8 and quantisation-aware
# training, bayes_opt and its
# scikit-learn for the bayesopt searcher: ~2 s each), the report's plotting library (its
# file-only backend is chosen before pyplot is imported) and W&B (only with --wandb); and one
# import for type checkers only.
LAZY = {("data", "sklearn.datasets"), ("searcher", "edge_tune.bayesopt"),
        ("models", "torchvision.models"), ("quantize", "nncf"),
        ("quantize", "nncf.quantization.advanced_parameters"),
        ("quantize", "nncf.quantization.range_estimator"), ("scheduler", "nncf"),
        ("report", "matplotlib"),
        ("report", "matplotlib.pyplot"), ("report", "wandb"), ("space", "importlib.abc")}
EDGE = ("actor", "bench", "node", "verify")  # what an edge node imports: no torch


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module top?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            if node.module == "edge_tune":  # from edge_tune import bench
                out += [(n, id(node) in top) for n in names]
            else:
                out.append((node.module, id(node) in top))
    return out


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module in modules:
        for name, _ in _imports(PACKAGE / f"{module}.py"):
            parts = name.split(".")
            if parts[0] == "edge_tune" and len(parts) > 1 and parts[1] in modules:
                graph[module].add(parts[1])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_edge_tune() -> None:
    graph = _graph()
    assert len(graph) > 20 and graph["tune"]  # the graph was really read
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_imports_are_at_module_top_but_for_the_named_exceptions() -> None:
    inner = {(p.stem, name) for p in PACKAGE.glob("*.py")
             for name, at_top in _imports(p) if not at_top}
    assert inner <= LAZY, f"imports inside functions: {sorted(inner - LAZY)}"


def test_the_edge_side_imports_no_torch() -> None:
    code = ("import sys; " + "; ".join(f"import edge_tune.{m}" for m in EDGE)
            + "; print(sorted(m for m in ('torch', 'torch_pruning', 'nncf', 'sklearn') "
              "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_registries_carry_what_callers_need() -> None:
    from edge_tune.data import DATASETS, DataConfig
    from edge_tune.distiller import CLASSES, SECTIONS
    from edge_tune.models import MODELS
    from edge_tune.searcher import SEARCHERS

    assert MODELS["resnet20_cifar"].stages == ("layer1", "layer2", "layer3")
    assert MODELS["resnet20_cifar"].build(7).fc.out_features == 7
    assert DATASETS["digits"].num_classes(DataConfig()) == 10
    assert not DATASETS["digits"].needs_root and DATASETS["imagefolder"].needs_root
    assert {"bayesopt", "random"} <= set(SEARCHERS)
    behaviour = {"pruners": "pruner", "regularizers": "regularizer",
                 "lr_schedulers": "lr_scheduler", "extensions": "removes",
                 "quantizers": "int8"}
    assert set(behaviour) == set(SECTIONS)
    for name, spec in CLASSES.items():  # every class behaves as its section needs
        assert getattr(spec, behaviour[spec.section]), name
