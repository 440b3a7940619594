"""A CLI run in the background for fault tests: its stderr as it comes, and the processes it
started (and only those) to signal. Ray's raylet and GCS are children of the driver that
``ray.init()`` starts them in, and its workers children of the raylet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil

from tests.conftest import ROOT


class Tune:
    """``python -m edge_tune.tune`` in the background, its stderr lines collected as they come."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_tune.tune", *args], cwd=ROOT, text=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
            start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def tail(self) -> str:
        return "\n".join(self.lines[-40:])

    def wait_for(self, text: str, timeout: float = 300) -> str:
        deadline = time.time() + timeout
        while True:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            assert self.proc.poll() is None, self.tail()
            assert time.time() < deadline, f"no {text!r} in:\n{self.tail()}"
            time.sleep(0.2)

    def finish(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    def descendants(self) -> list[psutil.Process]:
        """The processes this run started, at any depth (Ray's raylet, its workers...)."""
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def workers(self, title: str) -> list[psutil.Process]:
        """This run's Ray workers whose process title starts with ``title``."""
        found = []
        for process in self.descendants():
            try:
                if " ".join(process.cmdline()).startswith(title):
                    found.append(process)
            except psutil.Error:  # exited meanwhile
                continue
        return found

    def pids(self, title: str) -> list[int]:
        """The process ids of :meth:`workers`."""
        return [process.pid for process in self.workers(title)]

    def kill(self) -> None:
        """SIGKILL the driver's process group and whatever it started outside that group."""
        started = self.descendants()
        os.killpg(self.proc.pid, signal.SIGKILL)
        for process in started:
            try:
                process.kill()
            except psutil.Error:
                continue
