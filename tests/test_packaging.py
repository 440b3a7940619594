"""A built wheel, installed without ``-e``, works on its own: spaces, examples, every command.

The wheel is built from a copy of the checkout (so no ``build/`` lands in it), installed with
``pip install --target`` into a temporary folder, and run with that folder first on PYTHONPATH
and the current directory outside the checkout, so nothing can come from the checkout.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "edge_tune"
# checkout folder -> where it is installed (pyproject.toml's [tool.setuptools.package-dir])
DATA = {"search_spaces": "edge_tune/search_spaces", "examples": "edge_tune/examples"}
# a command module is one a user runs with python -m edge_tune.<name>
COMMANDS = sorted(p.stem for p in PACKAGE.glob("*.py")
                  if re.search(r"^if __name__ == .__main__.:", p.read_text(), re.MULTILINE))


class Installed:
    """The wheel installed into ``site``; commands run from ``cwd``, outside the checkout."""

    def __init__(self, site: Path, cwd: Path) -> None:
        self.site, self.cwd = site, cwd
        path = os.environ.get("PYTHONPATH")
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *[path] * bool(path)])}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)


def _pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index",
                             "--disable-pip-version-check", "-q"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    source.mkdir()
    for item in ROOT.iterdir():  # top-level files (pyproject.toml, README.md...) and packages
        if item.is_file():
            shutil.copy2(item, source)
    for folder in ["edge_tune", *DATA]:
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _pip("wheel", "--no-build-isolation", "-w", str(tmp / "dist"), str(source))
    wheels = list((tmp / "dist").glob("edge_tune-*.whl"))
    assert len(wheels) == 1, wheels
    _pip("install", "--target", str(tmp / "site"), str(wheels[0]))
    (tmp / "elsewhere").mkdir()
    return Installed(tmp / "site", tmp / "elsewhere")


def test_the_wheel_holds_the_package_spaces_and_examples(installed: Installed) -> None:
    site = installed.site
    # every module of the checkout: a subpackage missing from pyproject's list would fail here
    modules = {f for f in _files(PACKAGE) if f.endswith(".py")}
    assert modules <= _files(site / "edge_tune"), \
        "edge_tune/ modules missing from the wheel; list new subpackages in pyproject.toml"
    for folder, target in DATA.items():
        wanted = {f for f in _files(ROOT / folder) if Path(f).suffix in {".yaml", ".md", ".py"}}
        assert wanted and wanted <= _files(site / target), folder
    assert len(list((site / "edge_tune/examples/distiller").glob("*.yaml"))) >= 3


def test_installed_package_loads_its_spaces_not_the_checkouts(installed: Installed) -> None:
    snippet = """
import sys
from importlib.resources import files
from pathlib import Path

import edge_tune
from edge_tune.core.errors import UserError
from edge_tune.search.space import load_space, space_names

site = Path(sys.argv[1]).resolve()
assert Path(edge_tune.__file__).resolve().is_relative_to(site), edge_tune.__file__
space = load_space("default")
assert space.bounds and Path(space.source).resolve().is_relative_to(site), space.source
names = space_names()
assert "default" in names, names
try:
    load_space("no_such_space")
except UserError as err:
    assert f"packaged spaces: {', '.join(names)}" in str(err), err
else:
    raise AssertionError("an unknown space loaded")
recipes = [p.name for p in (files("edge_tune.examples") / "distiller").iterdir()]
assert any(n.endswith(".yaml") for n in recipes), recipes
print("ok", ",".join(names))
"""
    result = installed.run(sys.executable, "-c", snippet, str(installed.site))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok ") and "default" in result.stdout.split()[1].split(","), \
        result.stdout


def test_every_command_answers_help(installed: Installed) -> None:
    assert "tune" in COMMANDS, COMMANDS  # the default entry point: python -m edge_tune.tune
    scripts = configparser.ConfigParser()
    scripts.read(next(installed.site.glob("edge_tune-*.dist-info")) / "entry_points.txt")
    runs = [(f"python -m edge_tune.{name}", [sys.executable, "-m", f"edge_tune.{name}"])
            for name in COMMANDS]
    runs += [(script, [str(installed.site / "bin" / script)])
             for script in (scripts["console_scripts"] if scripts.has_section("console_scripts")
                            else [])]
    with ThreadPoolExecutor(max_workers=4) as pool:  # each imports torch / ray: seconds
        results = list(pool.map(lambda run: installed.run(*run[1], "--help"), runs))
    for (name, _), result in zip(runs, results, strict=True):
        assert result.returncode == 0, f"{name} --help:\n{result.stderr[-3000:]}"
        assert result.stdout.startswith("usage:"), f"{name} --help:\n{result.stdout[:500]}"
