"""What commands write: run directories (created fresh, never reused silently), progress on
stderr, and the W&B mode."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from edge_tune.errors import UserError, work_started


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


def log_stderr(message: str) -> None:
    """One progress line on stderr (stdout is kept for results)."""
    print(f"[edge_tune] {message}", file=sys.stderr, flush=True)


def clock(seconds: float) -> str:
    """``12m05s``."""
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class Progress:
    """Counts finished items of a stage and says so on stderr with elapsed time and ETA."""

    def __init__(self, stage: str, total: int) -> None:
        self.stage, self.total, self.done, self.start = stage, total, 0, time.time()

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        eta = elapsed / self.done * max(0, self.total - self.done)
        log_stderr(f"{self.stage} {self.done}/{self.total} {what} (elapsed {clock(elapsed)}, "
                   f"ETA {clock(eta)})")


def wandb_mode() -> Literal["online", "offline"]:
    """W&B runs online only with a key from the environment (never from a file we write)."""
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def wandb_environment(wandb: bool) -> None:
    """W&B's mode in the environment before Ray starts: its workers inherit it."""
    if wandb:
        os.environ.setdefault("WANDB_MODE", wandb_mode())
        os.environ.setdefault("WANDB_SILENT", "true")
