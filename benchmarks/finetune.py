"""Fine-tuning rate after filter removal: validation top-1 (torch, f32) of ResNet-20 on the
embedded default (digits) after 50% or 60% of every conv's filters are removed and the net is
fine-tuned 4 or 7 epochs, at three learning rates (SGD, cosine, momentum 0.9). Chose
``finetune.lr``.

    python -m benchmarks.finetune [--config FILE]     # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from benchmarks.common import write_section
from edge_tune.catalog.data import load_data
from edge_tune.compression.baseline import baseline_model
from edge_tune.compression.plan import compress, plan_compression
from edge_tune.compression.train import evaluate, set_threads
from edge_tune.config import load_config
from edge_tune.run.pipeline import check_params

RATES = (0.1, 0.03, 0.01)
CASES = [(ratio, epochs) for epochs in (4, 7) for ratio in (0.5, 0.6)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    set_threads(0)
    config = load_config(args.config)
    splits = load_data(config.data)
    base_top1 = evaluate(baseline_model(config, splits)[0], splits.val)[0]
    lines = ["| lr | " + " | ".join(f"{int(r * 100)}% filters, {e} epochs" for r, e in CASES)
             + " | mean | s per run |", "|---" * (len(CASES) + 3) + "|"]
    for lr in RATES:
        tuned = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, lr=lr))
        top1s, started = [], time.perf_counter()
        for ratio, epochs in CASES:
            model = baseline_model(tuned, splits, log=lambda _: None)[0]
            schedule = check_params(tuned, {"filter_ratio": ratio,
                                            "finetune_epochs": float(epochs)})
            compress(model, plan_compression(schedule, model, tuned), splits, tuned,
                     log=lambda _: None)
            top1s.append(evaluate(model, splits.val)[0])
            print(f"lr {lr}: {ratio:.0%} filters, {epochs} epochs: {top1s[-1]:.2f}%", flush=True)
        seconds = (time.perf_counter() - started) / len(CASES)
        lines.append(f"| {lr:g} | " + " | ".join(f"{t:.2f}" for t in top1s)
                     + f" | {statistics.mean(top1s):.2f} | {seconds:.0f} |")
    body = (f"Validation top-1 % ({len(splits.val)} images; the baseline {base_top1:.2f}%), "
            "torch f32, after removing filters and fine-tuning:\n\n" + "\n".join(lines))
    print(body)
    write_section("Fine-tuning rate", "python -m benchmarks.finetune", body)


if __name__ == "__main__":
    main()
