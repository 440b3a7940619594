"""Distiller's published CNN recipes, each run unchanged as a new user would.

``python -m benchmarks.recipes [--epochs 1] [--only SUBSTRING] [--out DIR]`` runs every recipe
under ``examples/distiller/<folder>/`` through ``python -m edge_tune.compress --recipe FILE
--config C --epochs N`` on the architecture it was written for (digits at 32x32 px; AlexNet at
64x64, its pooling needs more), records whether it ran, was refused in one line (exit 2) or
crashed, and what it did (top-1, MACs, sparsity, speed-up against the baseline measured in the
same session), then writes ``benchmarks/recipes.json`` and the "Distiller's recipes" section
of BENCHMARKS.md. Baselines train once per architecture (``--baseline-epochs``, cached).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import write_section

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "examples" / "distiller"
JSON_OUT = Path(__file__).with_name("recipes.json")

ARCHES_FILE = RECIPES / "architectures.yaml"  # recipe path prefix -> architecture
IMAGE_SIZE = {"torchvision:alexnet": 64}  # px; the rest run at 32 (AlexNet pools 32 px away)


def recipes() -> list[Path]:
    """Every recipe of Distiller's example folders that edge_tune ships, in path order."""
    return sorted(p for p in RECIPES.glob("*/**/*.yaml"))


def arch_of(recipe: Path) -> str:
    """The architecture ``recipe`` was written for (``architectures.yaml``, longest prefix)."""
    arches = yaml.safe_load(ARCHES_FILE.read_text())
    rel = recipe.relative_to(RECIPES).as_posix()
    for prefix in sorted(arches, key=len, reverse=True):
        if rel.startswith(prefix):
            return str(arches[prefix])
    raise KeyError(f"no architecture for {rel}: add it to {ARCHES_FILE.name}")


def config_for(arch: str, baseline_epochs: int, folder: Path, iterations: int = 60,
               rounds: int = 2) -> Path:
    """A config file: ``arch`` on digits, a short baseline, a quick benchmark (``iterations``
    timed inferences per session, ``rounds`` interleaved sessions)."""
    config = {"model": arch, "data": {"name": "digits", "image_size": IMAGE_SIZE.get(arch, 32)},
              "baseline": {"epochs": baseline_epochs},
              "bench": {"warmup": 10, "iterations": iterations, "rounds": rounds,
                        "fps_seconds": 0.1}}
    path = folder / f"{arch.replace(':', '_')}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _summary(result: dict) -> dict:
    sparsity = result.get("sparsity", {})
    base = result["baseline"]
    return {"top1": result["top1"], "baseline_top1": base["top1"], "macs": result["macs"],
            "baseline_macs": base["macs"], "params": result["params"],
            "baseline_params": base["params"], "speedup": result["speedup"],
            "int8": result["int8"], "ignored": result.get("ignored", []),
            "thinned": {k: sum(v.values()) for k, v in result.get("thinned", {}).items()},
            "mean_sparsity": round(sum(sparsity.values()) / max(1, len(sparsity)), 2),
            "smaller_layers": result["compression"]["smaller_layers"],
            "reached": result["compression"]["reached"]}


def run_one(recipe: Path, config: Path, epochs: int, out: Path, timeout: int) -> dict:
    """One recipe through ``edge_tune.compress``: ran, refused (one line, exit 2) or crashed."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "edge_tune.compress", "--recipe", str(recipe),
               "--config", str(config), "--epochs", str(epochs), "--output", str(out)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": timeout}
    seconds = round(time.perf_counter() - start, 1)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode == 0:
        return {"status": "ran", "seconds": seconds,
                **_summary(json.loads((out / "result.json").read_text()))}
    if proc.returncode == 2 and lines and lines[-1].startswith("edge_tune: error:") \
            and "Traceback" not in proc.stderr:
        return {"status": "refused", "seconds": seconds, "message": lines[-1]}
    return {"status": "crashed", "seconds": seconds, "rc": proc.returncode,
            "message": "\n".join(lines[-12:])}


# recipes whose headers publish Distiller's per-layer table after the run (ResNet-20/56: AGP,
# filter and channel ranking, network trimming, network surgery, SSL)
PUBLISHED = ("agp-pruning/resnet20_filters", "network_trimming/resnet56",
             "pruning_filters_for_efficient_convnets/resnet56_cifar_", "network_surgery/resnet20",
             "ssl/ssl_")
COMPARISON_MD = ROOT / "docs" / "distiller-comparison.md"


def direct_macs(onnx_path: Path) -> int:
    """Multiply-accumulates of every Conv and Gemm at batch 1, counted as Distiller does
    (direct convolution: output elements x kernel elements x input channels per group)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output]}
    inits = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in inits:
            out = shapes.get(node.output[0])
            kernel = inits[node.input[1]]
            if out:
                total += int(out[1] * out[2] * out[3]) * int(kernel[1] * kernel[2] * kernel[3])
        elif node.op_type == "Gemm" and node.input[1] in inits:
            weight = inits[node.input[1]]
            total += int(weight[0] * weight[1])
    return total


def _header_macs(text: str) -> list[int]:
    import re

    return [int(m.replace(",", "")) for m in re.findall(r"Total MACs: ([\d,]+)", text)]


def comparison(run_root: Path, results: dict[str, dict]) -> str:
    """Per recipe with a published table: Distiller's figures beside edge_tune's run."""
    from edge_tune.compression.recipe import published_layers

    parts = []
    for name, result in results.items():
        if not name.startswith(PUBLISHED) or result["status"] != "ran":
            continue
        text = (RECIPES / name).read_text()
        theirs = published_layers(text)
        run = run_root / name.replace("/", "__").removesuffix(".yaml")
        if not theirs or not (run / "result.json").is_file():
            continue
        ours = json.loads((run / "result.json").read_text())
        checks = {c["layer"]: c for c in ours["verification"]}
        macs = (direct_macs(run / "baseline.onnx"), direct_macs(run / "model.onnx"))
        published = _header_macs(text)
        head = (f"### `{name}`\n\nMACs (conv + fc, direct): Distiller "
                f"{' -> '.join(f'{m:,}' for m in published) or 'not stated'}; edge_tune "
                f"{macs[0]:,} -> {macs[1]:,} ({macs[1] / macs[0]:.1%}). Speed-up measured "
                f"here {ours['speedup']:.2f}x (OpenVINO CPU, batch 1, against the baseline in "
                f"the same session); {ours['compression']['smaller_layers']} layer(s) "
                "physically smaller in the OpenVINO model.\n")
        rows = ["| weight | Distiller shape | edge_tune shape (OpenVINO) | Distiller zeros % | "
                "edge_tune zeros % |", "|---|---|---|---|---|"]
        for weight, row in theirs.items():
            check = checks.get(weight)
            shape = tuple(check["openvino_shape"]) if check and check["openvino_shape"] else "-"
            zeros = f"{check['torch_sparsity']:.1f}" if check else "-"  # percent
            rows.append(f"| {weight} | {row.shape} | {shape} | {row.fine:.1f} | {zeros} |")
        parts.append(head + "\n" + "\n".join(rows))
    return "\n\n".join(parts)


def families(results: dict[str, dict]) -> str:
    """Markdown: one row per Distiller example folder (a recipe family)."""
    rows = ["| family (Distiller's folder) | recipes | ran | refused | MACs after (of baseline) | "
            "physically smaller layers | speed-up |", "|---|---|---|---|---|---|---|"]
    by_family: dict[str, list[dict]] = {}
    for name, result in results.items():
        by_family.setdefault(name.rsplit("/", 1)[0], []).append(result)
    for family, items in sorted(by_family.items()):
        ran = [r for r in items if r["status"] == "ran"]
        refused = sum(r["status"] == "refused" for r in items)
        macs = [r["macs"] / r["baseline_macs"] for r in ran]
        smaller = [r["smaller_layers"] for r in ran]
        speed = [r["speedup"] for r in ran]

        def span(values: list[float], fmt: str) -> str:
            if not values:
                return "-"
            low, high = min(values), max(values)
            return format(low, fmt) if f"{low:{fmt}}" == f"{high:{fmt}}" else \
                f"{low:{fmt}}-{high:{fmt}}"
        rows.append(f"| {family} | {len(items)} | {len(ran)} | {refused} | {span(macs, '.0%')} | "
                    f"{span(smaller, '.0f')} | {span(speed, '.2f')}x |")
    return "\n".join(rows)


def table(results: dict[str, dict]) -> str:
    """Markdown: one row per recipe."""
    rows = ["| recipe | architecture | result | top-1 (baseline) | MACs | speed-up | notes |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if r["status"] != "ran":
            rows.append(f"| `{name}` | {r['arch']} | **{r['status']}** | | | | "
                        f"{r.get('message', '').removeprefix('edge_tune: error: ')[:160]} |")
            continue
        macs = f"{r['macs'] / 1e6:.1f}M of {r['baseline_macs'] / 1e6:.1f}M"
        notes = []
        if r["thinned"]:
            notes.append("removed " + ", ".join(f"{v} ({k})" for k, v in r["thinned"].items()))
        if r["mean_sparsity"]:
            notes.append(f"mean layer sparsity {r['mean_sparsity']:.1f}%")
        if r["int8"]:
            notes.append(f"int8: {r['int8']}")
        if r["ignored"]:
            notes.append(f"{len(r['ignored'])} ignored option(s)")
        rows.append(f"| `{name}` | {r['arch']} | ran ({r['seconds']:.0f} s) | {r['top1']:.1f} "
                    f"({r['baseline_top1']:.1f}) | {macs} | {r['speedup']:.2f}x | "
                    f"{'; '.join(notes)} |")
    return "\n".join(rows)


COMPARISON_HEAD = """# Distiller's published figures beside edge_tune's

Written by `python -m benchmarks.recipes --compare RUNS` from the runs of
`python -m benchmarks.recipes` (each recipe unchanged, `--epochs 1` on digits at 32x32): for
every ResNet-20/56 recipe whose header quotes Distiller's weights table after its run, that
table beside the same layers in edge_tune's deployed model (shape as OpenVINO holds it, zeros
as torch holds them). Pruning schedules reach their final levels in any number of epochs, so
structure and sparsity are comparable; accuracy is not (digits, one epoch). Back to the
[README](../README.md).

"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--baseline-epochs", type=int, default=2)
    parser.add_argument("--only", default="", help="run recipes whose path contains this")
    parser.add_argument("--timeout", type=int, default=1800, help="s per recipe")
    parser.add_argument("--iterations", type=int, default=60, help="timed inferences per "
                        "benchmark session")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved sessions")
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    parser.add_argument("--compare", help="only write docs/distiller-comparison.md from the "
                        "runs in this folder (a previous --out) and recipes.json")
    args = parser.parse_args()
    if args.compare:
        results = json.loads(JSON_OUT.read_text())
        COMPARISON_MD.write_text(COMPARISON_HEAD + comparison(Path(args.compare), results)
                                 + "\n")
        print(COMPARISON_MD)
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="edge_tune_recipes-"))
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads(JSON_OUT.read_text()) if JSON_OUT.is_file() and args.only else {}
    configs: dict[str, Path] = {}
    chosen = [r for r in recipes() if args.only in r.relative_to(RECIPES).as_posix()]
    for i, recipe in enumerate(chosen, 1):
        name = recipe.relative_to(RECIPES).as_posix()
        arch = arch_of(recipe)
        if arch not in configs:
            configs[arch] = config_for(arch, args.baseline_epochs, out, args.iterations,
                                       args.rounds)
        run_dir = out / name.replace("/", "__").removesuffix(".yaml")
        result = {"arch": arch, **run_one(recipe, configs[arch], args.epochs, run_dir,
                                           args.timeout)}
        results[name] = result
        print(f"[{i}/{len(chosen)}] {name}: {result['status']} ({result['seconds']} s)",
              file=sys.stderr, flush=True)
        if result["status"] != "ran":
            print("   " + result.get("message", "").replace("\n", "\n   "), file=sys.stderr)
        JSON_OUT.write_text(json.dumps(dict(sorted(results.items())), indent=1))
    results = dict(sorted(results.items()))
    counts = {s: sum(r["status"] == s for r in results.values())
              for s in ("ran", "refused", "crashed", "timeout")}
    summary = (f"{counts['ran']} of {len(results)} recipes ran unchanged "
               f"({100 * counts['ran'] / max(1, len(results)):.0f}%), {counts['refused']} "
               f"refused in one line, {counts['crashed']} crashed, {counts['timeout']} timed "
               f"out; `--epochs {args.epochs}` on digits, baselines trained "
               f"{args.baseline_epochs} epochs.")
    print(summary)
    print(families(results))
    if not args.only:
        write_section("Distiller's recipes", "python -m benchmarks.recipes",
                      summary + "\n\n" + families(results) + "\n\n" + table(results))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    raise SystemExit(main())
