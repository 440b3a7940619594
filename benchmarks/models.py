"""Your own model: torchvision's CNNs and a model in a user's file through ``edge_tune.trial``.

For each model (32x32 inputs, digits, 2 CPU cores) four real trials, each measuring its own
baseline in the same interleaved benchmark session: 50% filters removed (+ fine-tuning),
80% fine-grained zeros, int8, and 50% filters + int8. Prints the table README shows: MACs
before and after, the speed-ups, top-1 before and after (50% filters), layers left whole.
The baseline is trained once per model (cached) for ``--epochs`` epochs.

    python -m benchmarks.models [--models resnet18,mobilenet_v2] [--epochs 4] [--finetune 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import write_section

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
          "vgg11_bn", "regnet_x_400mf", "shufflenet_v2_x1_0"]
USER = f"{ROOT / 'examples' / 'my_model.py'}:build"
CASES = {"filters": {"filter_ratio": 0.5}, "zeros": {"fine_sparsity": 0.8, "finetune_epochs": 0},
         "int8": {"int8": 1}, "filters+int8": {"filter_ratio": 0.5, "int8": 1}}


def trial(config: Path, params: dict, out: Path) -> dict:
    cmd = [sys.executable, "-m", "edge_tune.trial", "--config", str(config), "--params",
           json.dumps(params), "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"error": tail[0]}
    return json.loads(done.stdout)


def row(model: str, folder: Path, epochs: int, finetune: int, lr: float) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"model": model, "baseline": {"epochs": epochs, "lr": lr},
                                      "finetune": {"epochs": finetune, "lr": lr}}))
    runs = {name: trial(config, params, folder / name) for name, params in CASES.items()}
    if any("error" in r for r in runs.values()):
        return f"| `{model}` | error: {next(r['error'] for r in runs.values() if 'error' in r)} |"
    f, base = runs["filters"], runs["filters"]["baseline"]
    skipped = len(f["skipped_layers"])
    return (f"| `{model}` | {base['macs'] / 1e6:.1f}M | {f['macs'] / 1e6:.1f}M "
            f"| {f['speedup']:.2f}x | {runs['zeros']['speedup']:.2f}x "
            f"| {runs['int8']['speedup']:.2f}x | {runs['filters+int8']['speedup']:.2f}x "
            f"| {base['top1']:.1f} | {f['top1']:.1f} "
            f"| {'yes' if f['compression']['reached'] else 'NO'} | {skipped} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="torchvision names")
    parser.add_argument("--epochs", type=int, default=4, help="baseline training epochs")
    parser.add_argument("--finetune", type=int, default=2, help="fine-tuning epochs (filters)")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (VGG "
                        "diverges at 0.1: use 0.02)")
    parser.add_argument("--user", action=argparse.BooleanOptionalAction, default=True,
                        help="also the model in examples/my_model.py")
    parser.add_argument("--output", default=None, help="directory for the runs (default: temp)")
    args = parser.parse_args()
    root = Path(args.output or tempfile.mkdtemp(prefix="edge_tune_models-"))
    header = ("| model | MACs | MACs, 50% filters | 50% filters | 80% zeros | int8 "
              "| 50% filters + int8 | top-1 % | top-1 %, 50% filters | reached | layers left "
              "whole |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    print("\n".join(lines), flush=True)
    names = [f"torchvision:{m}" for m in args.models.split(",") if m] + ([USER] if args.user
                                                                          else [])
    for i, model in enumerate(names):
        line = row(model, root / f"m{i}", args.epochs, args.finetune, args.lr)
        lines.append(line)
        print(line, flush=True)
    command = (f"python -m benchmarks.models --models {args.models} --epochs {args.epochs} "
               f"--finetune {args.finetune} --lr {args.lr:g}")
    body = ("Speed-ups are median batch-1 latency ratios to the baseline measured in the same "
            "session (OpenVINO CPU, 1 thread, f32 pinned); top-1 on digits' test split as "
            f"deployed, after {args.epochs} baseline epochs and {args.finetune} fine-tuning "
            "epochs (50% filters).\n\n" + "\n".join(lines))
    write_section("Your own model: torchvision and a user's file", command, body)
    print(f"\nruns in {root}")


if __name__ == "__main__":
    main()
