"""The package's shape: folders by role in one layer order (nothing imports upward), no import
cycles, imports at module top, a torch-free edge side and a lazy public API, registries that
carry what their callers need."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "edge_tune"
# Each folder (or top-level module) imports only from layers before it and from itself:
# core < catalog, edge, search (peers: none imports another) < config < compression < run
# < the commands (edge_tune/tune.py, trial.py, study.py, compress.py, report.py, node.py)
LAYERS = {"core": 0, "catalog": 1, "edge": 1, "search": 1, "config": 2, "compression": 3,
          "run": 4}
COMMAND = 5
EDGE = "edge"  # what an edge node imports: no torch, no training stack
TRAINING = ("torch", "torch_pruning", "nncf", "sklearn", "torchvision", "onnxscript")
# The deliberate exceptions to "imports at module top": heavy optional libraries where the one
# path that needs them runs, so that a command answers bad input within seconds (scikit-learn
# for digits, torchvision for torchvision: models, NNCF for int8 and quantisation-aware
# training, bayes_opt and its scikit-learn for the bayesopt searcher: ~2 s each), the
# report's plotting library (its file-only backend is chosen before pyplot is imported) and
# W&B (the report's --wandb, the reference's mirror); and imports for type checkers only.
LAZY = {("catalog.loaders", "sklearn.datasets"), ("catalog.models", "torchvision.models"),
        ("search.searchers", "edge_tune.search.bayesopt"), ("compression.quantize", "nncf"),
        ("compression.quantize", "nncf.quantization.advanced_parameters"),
        ("compression.quantize", "nncf.quantization.range_estimator"),
        ("compression.quantize", "nncf.quantization.algorithms.min_max.algorithm"),
        ("compression.runner", "nncf"), ("run.plots", "matplotlib"),
        ("run.plots", "matplotlib.pyplot"), ("run.report", "wandb"),
        ("run.callbacks", "wandb"),
        ("search.space", "importlib.abc")}


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name inside the package (``run.tuner``, ``tune``) -> file."""
    return {".".join(p.relative_to(package).with_suffix("").parts): p
            for p in package.rglob("*.py") if p.name != "__init__.py"}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module top?) for every import in ``path``; imports under
    ``if TYPE_CHECKING:`` count as at the top."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            top.update(id(n) for n in node.body)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "edge_tune":  # from edge_tune.edge import bench
                out += [(f"{node.module}.{a.name}", id(node) in top) for a in node.names]
            else:
                out.append((node.module, id(node) in top))
    return out


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The package module an ``edge_tune.…`` import names (the longest known prefix)."""
    parts = name.split(".")[1:]
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    known = modules(package)
    out: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for name, _ in imports(path):
            if name.split(".")[0] == "edge_tune" and (target := resolve(name, known)):
                out[module].add(target)
    return out


def layer(module: str) -> int:
    return LAYERS.get(module.split(".")[0], COMMAND if "." not in module else -1)


def upward(edges: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a module in the same or a later layer that is not in
    ``a``'s own folder (peers import no peer; commands import no command)."""
    bad = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            same_folder = "." in source and source.split(".")[0] == target.split(".")[0]
            if not same_folder and layer(target) >= layer(source):
                bad.append(f"{source} -> {target}")
    return bad


def training_in_edge(edges_of: dict[str, list[tuple[str, bool]]]) -> list[str]:
    """Edge modules that import the training stack (or anything of edge_tune outside core
    and edge)."""
    bad = []
    for module, found in sorted(edges_of.items()):
        if module.split(".")[0] != EDGE:
            continue
        for name, _ in found:
            root = name.split(".")
            if root[0] in TRAINING or (root[0] == "edge_tune" and len(root) > 1
                                       and root[1] not in ("core", EDGE)):
                bad.append(f"{module} imports {name}")
    return bad


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in ``edges`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_checks_find_what_they_look_for() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert upward({"edge.bench": {"run.cluster"}, "run.cluster": {"edge.bench"}}) == [
        "edge.bench -> run.cluster"]
    assert upward({"search.space": {"catalog.data"}, "tune": {"trial"}}) == [
        "search.space -> catalog.data", "tune -> trial"]
    assert upward({"run.tuner": {"run.ledger", "config", "core.errors"}}) == []
    assert training_in_edge({"edge.bench": [("torch.nn", True), ("numpy", True)],
                             "run.tuner": [("torch", True)]}) == ["edge.bench imports torch.nn"]


def test_the_folders_are_the_layers() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LAYERS) - {"config"}
    commands = {m for m in modules() if "." not in m and m != "config"}
    assert commands == {"tune", "trial", "study", "compress", "report", "node"}


def test_nothing_imports_upward() -> None:
    edges = graph()
    assert len(edges) > 40 and edges["tune"]  # the graph was really read
    assert upward(edges) == []


def test_no_import_cycle_inside_edge_tune() -> None:
    edges = graph()
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges) or [])}"


def test_imports_are_at_module_top_but_for_the_named_exceptions() -> None:
    known = modules()
    inner = {(module, f"edge_tune.{resolve(name, known)}" if name.startswith("edge_tune.")
              else name)
             for module, path in known.items() for name, at_top in imports(path) if not at_top}
    assert inner <= LAZY, f"imports inside functions: {sorted(inner - LAZY)}"


def test_the_edge_folder_names_no_training_library() -> None:
    assert training_in_edge({m: imports(p) for m, p in modules().items()}) == []


def test_the_edge_side_and_the_public_api_load_no_torch() -> None:
    edge = [m for m in modules() if m.split(".")[0] == EDGE]
    code = ("import sys; import edge_tune, edge_tune.node; "
            + "; ".join(f"import edge_tune.{m}" for m in edge)
            + f"; print(sorted(m for m in {TRAINING!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert len(edge) == 5 and out.strip() == "[]"


def test_the_public_api_names_what_it_promises() -> None:
    import edge_tune

    code = ("import sys, edge_tune; names = edge_tune.__all__; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"  # importing the package imports nothing heavy
    for name in edge_tune.__all__:
        assert getattr(edge_tune, name) is not None, name
    assert "resnet20_cifar" in edge_tune.MODELS and "digits" in edge_tune.DATASETS
    assert edge_tune.load_config(None).model == "resnet20_cifar"


def test_registries_carry_what_callers_need() -> None:
    from edge_tune.catalog.data import DATASETS
    from edge_tune.catalog.models import MODELS
    from edge_tune.catalog.splits import DataConfig
    from edge_tune.compression.classes import CLASSES, SECTIONS
    from edge_tune.search.searchers import SEARCHERS

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
