"""The console: progress lines on stderr (stdout is kept for results), elapsed times, and
libraries' stdout sent to stderr."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator


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


class StageProgress:
    """Counts finished items of a stage and says so on stderr with elapsed time and ETA."""

    def __init__(self, stage: str, total: int) -> None:
        self.stage, self.total, self.done, self.start = stage, total, 0, time.time()

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        eta = elapsed / self.done * max(0, self.total - self.done)
        log_stderr(f"{self.stage} {self.done}/{self.total} {what} (elapsed {clock(elapsed)}, "
                   f"ETA {clock(eta)})")


