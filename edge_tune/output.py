"""Run directories: created fresh, never reused silently."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from edge_tune.errors import UserError


def new_run_dir(path: str | Path | None, kind: str, flag: str = "--output") -> Path:
    """Create and return the output directory; refuse one that already holds files.

    With no path: ``runs/{kind}-YYYYmmdd-HHMMSS`` (a suffix is added if that exists).
    """
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


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr for the block: NNCF and OpenVINO print progress to
    stdout, which a command keeps for its JSON result alone."""
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
