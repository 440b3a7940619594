"""What the tuner checks before Ray: a run folder ``--resume`` can continue, and one written by
another layout of edge_tune refused in one line (Tune unpickles its state by module path)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from edge_tune.core.errors import UserError
from edge_tune.run.callbacks import TrialLog
from edge_tune.run.tuner import check_resumable


def _global(module: str, name: str) -> bytes:
    """A protocol-4 pickle of the class ``module.name`` (which need not exist here)."""
    def text(value: str) -> bytes:
        return b"\x8c" + bytes([len(value)]) + value.encode()
    return b"\x80\x04" + text(module) + text(name) + b"\x93."


def _run_dir(tmp_path: Path, state: bytes) -> Path:
    (tmp_path / "ray").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text("{}\n")
    (tmp_path / "ray" / "tuner.pkl").write_bytes(state)
    return tmp_path


def test_a_run_of_this_layout_can_resume(tmp_path: Path) -> None:
    state = pickle.dumps({"callbacks": [TrialLog], "nested": pickle.dumps(TrialLog)})
    check_resumable(_run_dir(tmp_path, state))  # no error


def test_a_run_written_before_the_move_is_refused_in_one_line(tmp_path: Path) -> None:
    nested = pickle.dumps({"ok": TrialLog, "old": _global("edge_tune.tune", "Progress")})
    out = _run_dir(tmp_path, pickle.dumps([nested]))
    with pytest.raises(UserError) as err:
        check_resumable(out)
    message = str(err.value)
    assert message.startswith(f"--resume: {str(out)!r} was written by another version")
    assert "edge_tune.tune.Progress" in message and "\n" not in message


def test_a_finished_or_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds no interrupted edge_tune run"):
        check_resumable(tmp_path)
    out = _run_dir(tmp_path, pickle.dumps([]))
    (out / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="already finished"):
        check_resumable(out)
