"""Where a tune run's time went, per trial: the latency probe (graph export and int8 before
fine-tuning), compression and fine-tuning, the final ONNX export, int8 (NNCF), verification
and accuracy as deployed, waiting for the benchmark actor and the benchmark itself; the
non-training work of a trial (everything but compress + fine-tune) for f32 and int8 trials;
what trials stopped early cost; and on paper how many trial workers one actor can serve.

    python -m benchmarks.overhead RUN_DIR      # a finished `python -m edge_tune.tune` run
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import write_section

# (label, key in a trial's metrics), in the order a trial runs them; seconds
STAGES = [("latency probe: compress (thinning, BatchNorm re-estimated)", "probe_compress_s"),
          ("latency probe: ONNX export, int8", "graph_s"),
          ("wait for the actor", "bench_wait_s"), ("benchmark (actor)", "bench_s"),
          ("compress + fine-tune", "compress_s"), ("ONNX export", "export_s"),
          ("int8 (NNCF)", "quantize_s"), ("verify + accuracy as deployed", "verify_eval_s")]
TRAINING = ("compress_s", "probe_compress_s")  # compression, not the work around it


def _seconds(metrics: dict[str, Any]) -> dict[str, float]:
    """A trial's seconds per stage (0 for a stage it did not run)."""
    out = {key: float(metrics.get(key, 0.0)) for _, key in STAGES}
    out["bench_s"] = metrics["bench_end"] - metrics["bench_start"]
    return out


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    rows = [json.loads(line) for line in
            (args.run_dir / "trials.jsonl").read_text().splitlines()]
    done = [r["metrics"] for r in rows if r["status"] == "completed" and "trial_s" in r["metrics"]]
    stopped = [r for r in rows if r["status"] == "stopped"]
    groups = {"f32": [m for m in done if not m["int8"]], "int8": [m for m in done if m["int8"]]}
    per = {name: [_seconds(m) for m in ms] for name, ms in groups.items()}
    lines = [f"{len(done)} completed trials ({len(groups['f32'])} f32, {len(groups['int8'])} "
             f"int8), {len(stopped)} stopped early; median seconds per completed trial:", "",
             "| stage | f32 trials | int8 trials |", "|---|---|---|"]
    for label, key in STAGES:
        lines.append(f"| {label} | {_median([s[key] for s in per['f32']])} | "
                     f"{_median([s[key] for s in per['int8']])} |")
    work = {name: [sum(v for k, v in s.items() if k not in TRAINING) for s in ss]
            for name, ss in per.items()}
    lines.append(f"| **non-training work** | **{_median(work['f32'])}** | "
                 f"**{_median(work['int8'])}** |")
    # the measure: neither training nor device time (export, int8, graph analysis,
    # accuracy as deployed, waiting); the benchmark call is the row above it
    beside = {name: [sum(v for k, v in s.items() if k not in (*TRAINING, "bench_s"))
                     for s in ss] for name, ss in per.items()}
    lines.append(f"| **non-training work without the benchmark call** | "
                 f"**{_median(beside['f32'])}** | **{_median(beside['int8'])}** |")
    lines.append(f"| trial (all) | {_median([m['trial_s'] for m in groups['f32']])} | "
                 f"{_median([m['trial_s'] for m in groups['int8']])} |")
    before = [r["metrics"] for r in stopped if r["metrics"].get("phase") == "latency"]
    if before:
        cost = [m["graph_s"] + m["bench_end"] - m["bench_start"] + m.get("bench_wait_s", 0.0)
                for m in before]
        lines += ["", f"{len(before)} trials stopped before fine-tuning, each after a median "
                  f"{_median(cost)} s of probe and benchmark."]
    t_trial = statistics.median(m["trial_s"] for m in done)
    t_bench = statistics.median(s["bench_s"] for ss in per.values() for s in ss)
    lines += ["", "On paper, N trial workers and one edge node: a worker spends "
              f"{t_trial - t_bench:.1f} s on its own and the single actor {t_bench:.2f} s per "
              "completed trial, so trials/hour = 3600 x min(N / "
              f"{t_trial - t_bench:.1f}, 1 / {t_bench:.2f}); the actor saturates at N = "
              f"{(t_trial - t_bench) / t_bench:.0f} workers (more edge nodes, one actor each, "
              "lift that ceiling). GPU workers shorten the compress + fine-tune share "
              "(measured here on CPU only):", "",
              "| trial workers N | trials/hour | actor busy % |", "|---|---|---|"]
    for n in (1, 2, 4, 8, 16, 32):
        rate = min(n / (t_trial - t_bench), 1 / t_bench)
        lines.append(f"| {n} | {3600 * rate:.0f} | {100 * rate * t_bench:.0f} |")
    body = "\n".join(lines)
    print(body)
    write_section("Overhead per trial", f"python -m benchmarks.overhead {args.run_dir}", body)


if __name__ == "__main__":
    main()
