"""Faults caused for real: a killed benchmark actor, a killed trial worker, a killed driver.

Only processes this test started are signalled: the driver's process group, and Ray's workers
found among the driver's descendants (``ray.init()`` in the driver starts the raylet as its
child, and the raylet starts the workers), never by name across the machine, so a user's own
run is left alone.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.background import Tune
from tests.conftest import run_module


def _state(out: Path) -> dict[str, tuple[str, dict]]:
    """Trial id -> (status, last result) from Tune's saved experiment state."""
    files = sorted((out / "ray").glob("experiment_state-*.json"))
    if not files:
        return {}
    try:
        data = json.loads(files[-1].read_text())
    except json.JSONDecodeError:  # caught mid-write
        return {}
    trials = {}
    for trial_json, meta_json in data["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        trials[trial["trial_id"]] = (trial["status"], meta.get("last_result") or {})
    return trials


def _config(tmp_path: Path, small_config: dict, **tune: object) -> str:
    # early_stop off unless asked: the killed-actor test counts trials that complete or error
    config = {**small_config, "tune": {"search_space": "default", "random_steps": 2,
                                       "max_concurrent": 1, "early_stop": False, **tune}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_killed_actor_restarts_and_a_killed_trial_is_recorded(tmp_path: Path,
                                                              small_config: dict) -> None:
    out = tmp_path / "run"
    # max_failures 0: a lost trial process is recorded, not run again (the default retries)
    run = Tune("--config", _config(tmp_path, small_config, max_failures=0), "--num-samples",
               "4", "--seed", "3", "--no-wandb", "--output", str(out))
    try:
        run.wait_for("trial 1/4")
        actors = run.pids("ray::BenchActor")
        assert len(actors) == 1
        os.kill(actors[0], signal.SIGKILL)  # the device's process dies between benchmarks
        run.wait_for("trial 2/4")
        time.sleep(1.0)  # trial 3 is training now
        workers = run.pids("ray::ImplicitFunc")
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)  # the trial's process dies mid-trial
        assert run.finish() == 0, "\n".join(run.lines[-40:])
    finally:
        if run.proc.poll() is None:
            run.kill()
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert summary["trials_completed"] == 3 and summary["trials_errored"] == 1
    failed = next(r for r in rows if r["status"] == "error")
    assert failed["error"] and "died" in failed["error"].lower()
    done = [r["metrics"] for r in rows if r["status"] == "completed"]
    # the actor came back as a new process and served the later trials
    assert len({m["bench_pid"] for m in done}) == 2
    assert any("failed (its error is in trials.jsonl)" in line for line in run.lines)
    assert not (out / "wandb").exists()  # --no-wandb


@pytest.mark.slow
def test_interrupt_then_kill_then_resume_keeps_every_trial_once(tmp_path: Path,
                                                               small_config: dict) -> None:
    out = tmp_path / "run"
    config = _config(tmp_path, small_config, early_stop=True)  # trials may stop early too
    first = Tune("--config", config, "--num-samples", "6", "--seed", "5", "--no-wandb",
                 "--output", str(out))
    try:
        first.wait_for("trial 2/6")  # trial 1 has surely finished (one trial at a time)
        os.kill(first.proc.pid, signal.SIGINT)  # Ctrl-C: stop cleanly, say how to resume
        assert first.finish() == 130, "\n".join(first.lines[-30:])
    finally:
        if first.proc.poll() is None:
            first.kill()
    assert any(f"--resume {out}" in line for line in first.lines)
    assert not (out / "summary.json").exists()
    before = {t: r for t, (s, r) in _state(out).items() if s == "TERMINATED"}
    assert len(before) >= 1

    second = Tune("--resume", str(out), "--no-wandb")
    try:
        # the driver dies without a word right after the console reported a finished trial,
        # before Tune's own experiment state (saved every ~10 s) can have caught up
        second.wait_for(f"trial {len(before) + 2}/6")
        os.killpg(second.proc.pid, signal.SIGKILL)
        second.finish()
    finally:
        if second.proc.poll() is None:
            second.kill()
    assert not (out / "summary.json").exists()  # killed mid-run
    reported = {line.split(" ")[3].rstrip(":") for line in first.lines + second.lines
                if line.startswith("[edge_tune] trial ")
                and ("objective" in line or "stopped: " in line)}
    ledger = {r["id"]: r["metrics"] for r in map(json.loads, (out / "trials.jsonl").open())}
    assert len(reported) >= len(before) + 2 and reported <= set(ledger)

    third = run_module("edge_tune.tune", "--resume", str(out), "--no-wandb", timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert summary["trials_completed"] + summary["trials_stopped"] == 6
    assert summary["trials_errored"] == 0
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6 and summary["resumed"]
    # the searcher came back with its state: it did not propose its starting point again
    assert len({json.dumps(r["params"], sort_keys=True) for r in rows}) == 6
    measured = {r["metrics"]["bench_start"] for r in rows}
    for trial_id in reported:  # every trial the console reported: kept, not re-run
        assert ledger[trial_id]["bench_start"] in measured, trial_id
    assert len(measured) == 6


@pytest.mark.parametrize(("args", "message"), [
    (["--resume", "{tmp}"], "holds no interrupted edge_tune run"),
    (["--resume", "{tmp}", "--num-samples", "3"], "--resume: --num-samples is not allowed"),
])
def test_resume_refuses_what_it_cannot_continue(tmp_path: Path, args: list[str],
                                                message: str) -> None:
    result = run_module("edge_tune.tune", *[a.format(tmp=tmp_path) for a in args], timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
