"""Fidelity under load: one graph's speed-up measured alone and beside 4 concurrent trials on
the same node, with and without the actor's own cores.

    python -m benchmarks.load [--calls 3] [--trials 4]

ResNet-20 and its 50%-filter version, measured as a trial's call is (the actor's class,
default settings: 1 thread, f32, batch 1, baseline interleaved) ``--calls`` times per
condition: alone; beside ``--trials`` training processes (each 1 torch thread: what
``trial_cpus: 0.5`` gives on 2 cores) sharing every core; and beside the same load with the
actor keeping a core to itself and the trials kept off it (what the tuner does when trials
run concurrently on an ncs node: edge_tune.run.cluster.cores_to_reserve). The speed-up is the
median of the calls; the target: within 5% of the one measured alone. Writes the section
"Fidelity under load" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import resnet20_pair, write_section
from benchmarks.repeatability import LOAD

# the load script, kept off the cores given as its second argument (none: every core)
PINNED_LOAD = """
import os, sys
off = {int(c) for c in sys.argv[2].split(",") if c}
if off:
    os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - off)
""" + LOAD


MEASURE = """
import json, sys
from edge_tune.edge import bench
from edge_tune.edge.actor import BenchActor, model_files
baseline, model, count, reserve = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
actor = BenchActor(model_files(baseline), bench.BenchSettings(), reserve)
files = model_files(model)
print(json.dumps([actor.benchmark(files, per_layer=False).speedup() for _ in range(count)]))
"""


def calls(paths: dict[str, Path], count: int, reserve: int) -> list[float]:
    """``count`` speed-ups measured by an actor keeping ``reserve`` cores, in a fresh process
    as a Ray actor is (OpenVINO maps the cores it may use when its plugin first loads)."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(paths["baseline"]),
                          str(paths["model"]), str(count), str(reserve)],
                         capture_output=True, text=True, check=True)
    return [float(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    every = set(os.sched_getaffinity(0))
    paths = resnet20_pair(Path(tempfile.mkdtemp(prefix="edge_tune_load-")))
    rows = ["| condition | speed-up (median of calls) | calls | vs alone |", "|---|---|---|---|"]
    alone = 0.0
    for name, load, reserve in [("alone", False, 0),
                                (f"beside {args.trials} trials, every core shared", True, 0),
                                (f"beside {args.trials} trials, the actor's own core", True, 1)]:
        loads = []
        off = sorted(every)[-reserve:] if reserve else []
        if load:
            for _ in range(args.trials):
                loads.append(subprocess.Popen(
                    [sys.executable, "-c", PINNED_LOAD, "1", ",".join(map(str, off))],
                    stdout=subprocess.PIPE, text=True))
            for process in loads:
                assert process.stdout is not None
                process.stdout.readline()  # "training": its load is on
            time.sleep(2)
        try:
            measured = calls(paths, args.calls, reserve)
        finally:
            for process in loads:
                process.kill()
                process.wait()
        speedup = statistics.median(measured)
        alone = alone or speedup
        rows.append(f"| {name} | {speedup:.3f}x | "
                    f"{', '.join(f'{m:.3f}' for m in measured)} | "
                    f"{100 * (speedup - alone) / alone:+.1f}% |")
        print(rows[-1], flush=True)
    body = (f"ResNet-20 and its 50%-filter version (ONNX, untrained), {os.cpu_count()} cores; "
            f"each condition {args.calls} calls as a trial makes them (1 thread, f32, batch "
            "1, baseline interleaved, a noisy session repeated up to 3 times); the load: "
            f"{args.trials} processes training the default ResNet-20 on digits with 1 torch "
            "thread each.\n\n" + "\n".join(rows))
    write_section("Fidelity under load", "python -m benchmarks.load", body)
    print(body)


if __name__ == "__main__":
    main()
