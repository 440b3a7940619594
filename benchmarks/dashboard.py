"""The Ray dashboard's Actors or Jobs view during a default run, as a PNG
(docs/dashboard-actors.png, docs/dashboard-jobs.png).

    python -m benchmarks.dashboard [--view actors|jobs] [--samples 3] [--out PNG]

``--view jobs``: a private one-node Ray with the dashboard (``ray.cluster_utils``, never a
machine-wide ``ray start``), the default job submitted to it through the Jobs API (as
``ray job submit -- python -m edge_tune.tune`` does); once its trials run, the dashboard's
Jobs view, then the job stopped and that Ray shut down.

Starts ``python -m edge_tune.tune`` (the default job, W&B off) in a private HOME, reads the
dashboard address from its console line, waits until trials run, then opens the dashboard's
Actors view in a headless Chromium (Debian's ``chromium``) driven over the DevTools protocol:
the token (``ray get-auth-token``; here the run's ~/.ray/auth_token) goes in as the cookie the
dashboard's own login sets, ``ray-authentication-token``. The run is interrupted afterwards
(SIGINT: it saves its state and exits 130).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1500, 560  # px: the actor table of a run and its filters


def _wait_for(stream: list[str], pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in stream:
            match = re.search(pattern, line)
            if match:
                return match.group(1) if match.groups() else line
        if proc.poll() is not None:
            raise SystemExit(f"the run ended first:\n{''.join(stream)[-3000:]}")
        time.sleep(0.5)
    raise SystemExit(f"no {pattern!r} within {timeout:.0f} s")


async def _screenshot(devtools: int, dashboard: str, token: str, out: Path,
                      view: str = "actors") -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json/list", timeout=10) as page:
        target = next(t for t in json.load(page) if t["type"] == "page")
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        counter = 0

        async def call(method: str, **params: object) -> dict:
            nonlocal counter
            counter += 1
            await ws.send_json({"id": counter, "method": method, "params": params})
            while True:
                message = await ws.receive_json()
                if message.get("id") == counter:
                    return message.get("result", {})

        await call("Network.enable")
        if token:
            await call("Network.setCookie", name="ray-authentication-token", value=token,
                       url=dashboard, httpOnly=True)
        await call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                   deviceScaleFactor=1, mobile=False)
        await call("Page.enable")
        await call("Page.navigate", url=f"{dashboard}/#/{view}")
        await asyncio.sleep(12)  # the single-page app loads, then polls the actor list
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))


def _browse(chromium: str, home: Path, dashboard: str, token: str, out: Path,
            view: str) -> None:
    """A headless Chromium's screenshot of the dashboard's ``view`` into ``out``."""
    devtools = 9222
    browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                f"--remote-debugging-port={devtools}",
                                f"--user-data-dir={home / 'chromium'}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)
        asyncio.run(_screenshot(devtools, dashboard, token, out, view))
    finally:
        browser.terminate()
        browser.wait(30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jobs_view(chromium: str, samples: int, out: Path) -> None:
    """The default job submitted through the Jobs API of a private Ray; its Jobs view."""
    from ray.cluster_utils import Cluster
    from ray.job_submission import JobStatus, JobSubmissionClient

    home = Path(tempfile.mkdtemp(prefix="edge_tune_dashboard-"))
    os.environ.update(HOME=str(home), RAY_TMPDIR=str(home))
    os.environ.pop("RAY_ADDRESS", None)
    port = _free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": os.cpu_count() or 1, "resources": {"ncs": 1}, "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": port,
        "dashboard_agent_listen_port": _free_port()})
    try:
        cluster.wait_for_nodes()
        dashboard = f"http://127.0.0.1:{port}"
        client = JobSubmissionClient(dashboard)
        job = client.submit_job(
            entrypoint=f"{sys.executable} -m edge_tune.tune --num-samples {samples} "
                       f"--no-wandb --output {home / 'run'}",
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        deadline = time.monotonic() + 900
        while "trial 1/" not in client.get_job_logs(job):
            if client.get_job_status(job) != JobStatus.RUNNING and \
                    client.get_job_status(job) != JobStatus.PENDING:
                raise SystemExit(f"the job ended first:\n{client.get_job_logs(job)[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("no trial within 900 s")
            time.sleep(2)
        token_file = home / ".ray" / "auth_token"
        token = token_file.read_text().strip() if token_file.is_file() else ""
        _browse(chromium, home, dashboard, token, out, "jobs")
        print(f"{out}: the Jobs view of {dashboard} during job {job} "
              f"({client.get_job_status(job)})")
        client.stop_job(job)
        while client.get_job_status(job) not in {JobStatus.STOPPED, JobStatus.SUCCEEDED,
                                                 JobStatus.FAILED}:
            time.sleep(1)
    finally:
        cluster.shutdown()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--view", choices=["actors", "jobs"], default="actors")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    out = Path(args.out or ROOT / "docs" / f"dashboard-{args.view}.png")
    if args.view == "jobs":
        jobs_view(chromium, args.samples, out)
        return
    home = Path(tempfile.mkdtemp(prefix="edge_tune_dashboard-"))
    env = {**os.environ, "HOME": str(home), "RAY_TMPDIR": str(home)}
    env.pop("RAY_ADDRESS", None)
    lines: list[str] = []
    run = subprocess.Popen([sys.executable, "-m", "edge_tune.tune", "--num-samples",
                            str(args.samples), "--no-wandb", "--output", str(home / "run")],
                           cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    stderr = run.stderr
    assert stderr is not None
    threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")), daemon=True).start()
    try:
        dashboard = _wait_for(lines, r"Ray dashboard: (http://\S+)", run, 600)
        _wait_for(lines, r"(benchmark actors: .*)", run, 900)
        time.sleep(20)  # the first trial's actor is up and benchmarking
        token = (home / ".ray" / "auth_token").read_text().strip()
        _browse(chromium, home, dashboard, token, out, "actors")
        print(f"{out}: the Actors view of {dashboard} during the run")
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(120)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
