"""``python -m edge_tune.report RUN_DIR``: a study or a tune run turned into ``report.md`` and
PNG plots (:mod:`edge_tune.run.report`)."""

from __future__ import annotations

from pathlib import Path

from edge_tune.core.errors import ArgumentParser, UserError, run_cli
from edge_tune.run.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m edge_tune.report", description=(
        "Write report.md and PNG plots for a study or tune run directory."))
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a study or tune output directory")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and plots "
                        "to W&B (offline without WANDB_API_KEY)")
    args = parser.parse_args(argv)
    if not Path(args.run_dir).is_dir():
        raise UserError(f"RUN_DIR: no such directory {args.run_dir!r}")
    report = write_report(args.run_dir, wandb=args.wandb)
    print(report)
    return 0


if __name__ == "__main__":
    run_cli(main)
