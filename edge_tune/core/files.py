"""What commands write and read on disk: run directories (created fresh, never reused
silently) and YAML files (read safely, a bad one named in one line)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from edge_tune.core.errors import UserError, work_started


def new_run_dir(path: str | Path | None, kind: str, flag: str = "--output") -> Path:
    """Create and return the output directory; refuse one that already holds files.

    With no path: ``runs/{kind}-YYYYmmdd-HHMMSS`` (a suffix is added if that exists).
    """
    work_started()
    if path is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        candidate = Path("runs") / f"{kind}-{stamp}"
        n = 1
        while candidate.exists():
            n += 1
            candidate = Path("runs") / f"{kind}-{stamp}-{n}"
        candidate.mkdir(parents=True)
        return candidate
    folder = check_output(path, flag)
    assert folder is not None
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_output(path: str | Path | None, flag: str = "--output") -> Path | None:
    """The output directory a command may create: refuse a file or one that holds files."""
    if path is None:
        return None
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag}: {str(folder)!r} exists and is not a directory")
    if folder.is_dir() and any(folder.iterdir()):
        raise UserError(f"{flag}: {str(folder)!r} already holds files; choose a new directory "
                        "(nothing is overwritten)")
    return folder


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely; a missing file or bad syntax is a one-line UserError."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--config: no such file {str(file)!r}")
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{file}:{where}: malformed YAML: {problem}") from None


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file beside it, so a reader never sees half
    of it (a cache entry another run may be reading)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
