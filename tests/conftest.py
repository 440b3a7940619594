"""Shared fixtures: tiny configs and the ``python -m`` runner, with a private environment.

Every test session runs with its own HOME and caches under a temporary folder, set before
collection so that nothing imported while collecting sees the real ones: OpenVINO, NNCF, W&B,
Ray Tune (~/ray_results) and matplotlib write into $HOME, NNCF compiles its extension into
TORCH_EXTENSIONS_DIR (once per session, ~30 s), baselines go to EDGE_TUNE_CACHE, and Ray keeps
its sessions in RAY_TMPDIR. RAY_ADDRESS is removed, and with RAY_TMPDIR private Ray cannot find
the user's ``ray start`` cluster either, so no test attaches to a cluster the user runs.
Variables that would point writes back into the user's folders (XDG_*, WANDB_*_DIR,
MPLCONFIGDIR) are removed, and so is WANDB_API_KEY: W&B stays offline, nothing is uploaded.
Ray's token auth is on (RAY_AUTH_MODE=token, a token in the private HOME), as after a user's
first ``ray.init()``.
Subprocesses inherit all of it. The folder is removed when the session ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_REMOVED = ["RAY_ADDRESS", "WANDB_API_KEY", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
            "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME",
            "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"]
_saved: dict[str, str | None] = {}
_private_root: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    """A private HOME, caches and Ray temp folder for this session, before collection."""
    # short and under /tmp: Ray's socket paths (RAY_TMPDIR/ray/session_.../sockets/...) must
    # stay under the 107 characters a Unix socket path allows
    root = Path(tempfile.mkdtemp(prefix="et-", dir="/tmp" if os.path.isdir("/tmp") else None))
    _private_root.append(root)
    private = {"HOME": root / "home", "EDGE_TUNE_CACHE": root / "edge_tune_cache",
               "TORCH_EXTENSIONS_DIR": root / "torch_extensions", "RAY_TMPDIR": root}
    for name in [*private, *_REMOVED]:
        _saved[name] = os.environ.get(name)
    for name, folder in private.items():
        folder.mkdir(exist_ok=True)
        os.environ[name] = str(folder)
    for name in _REMOVED:
        os.environ.pop(name, None)
    # Ray's token auth, as a user's first `ray.init()` turns it on (and leaves it on for the
    # process): every Ray a test starts, local or a Cluster, asks for this session's token
    _saved.setdefault("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE"))
    os.environ["RAY_AUTH_MODE"] = "token"
    token = private["HOME"] / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text(secrets.token_hex(32))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the environment back and remove the private folder."""
    for name, value in _saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved.clear()
    while _private_root:
        shutil.rmtree(_private_root.pop(), ignore_errors=True)


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would; output captured as text. Past
    ``timeout`` the command and every process it started (Ray's, say) are killed."""
    import psutil

    with subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          env={**os.environ}) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="session")
def small_config() -> dict:
    """The small CNN on digits at 16x16, short training: seconds, not minutes."""
    return {"model": "simple_cnn", "data": {"image_size": 16},
            "baseline": {"epochs": 4, "lr": 0.05}, "finetune": {"epochs": 1},
            "bench": {"warmup": 5, "iterations": 30, "rounds": 2, "fps_seconds": 0.1},
            "quantize": {"calibration_images": 32}}
