"""``python -m edge_tune.study --output DIR``: which compression makes the edge device faster,
and where. A thin command over :func:`edge_tune.run.api.run_study` (each method alone, the
best of each family composed, one benchmark session, a report with plots)."""

from __future__ import annotations

from pathlib import Path

from edge_tune.config import load_config
from edge_tune.core.errors import ArgumentParser, run_cli
from edge_tune.run.api import run_study


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m edge_tune.study", description=(
        "Which compression makes the edge device faster, and where: each method alone, the "
        "best of each family composed, one benchmark session, a report with plots."))
    parser.add_argument("--config", help="YAML config (default: ResNet-20 on digits)")
    parser.add_argument("--output", required=True, help="new directory for study.json, "
                        "layers.csv, methods/ and the report")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the tables and "
                        "plots to W&B (default: log; offline without WANDB_API_KEY)")
    args = parser.parse_args(argv)
    study = run_study(load_config(args.config), args.output, wandb=not args.no_wandb)
    print(f"study: {len(study['rows']) - 1} methods in {study['seconds']:.0f} s; "
          f"report: {Path(args.output) / 'report.md'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
