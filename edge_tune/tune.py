"""``python -m edge_tune.tune``: search compression parameters with Ray Tune for the lowest
latency on the edge device that keeps top-1 above the threshold.

A thin command: its flags, then :func:`edge_tune.run.tuner.launch` (the experiment is
:mod:`edge_tune.run.tuner`, one trial :mod:`edge_tune.run.trainable`).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_tune.config import load_config
from edge_tune.core.errors import ArgumentParser, UserError, run_cli
from edge_tune.core.files import check_output, new_run_dir
from edge_tune.run.tuner import check_resumable, launch, print_table, validate
from edge_tune.search.space import load_space


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m edge_tune.tune", description=(
        "Search compression parameters (filter removal, int8, fine-tuning length) for the "
        "lowest latency on the edge device that keeps top-1 above the threshold. With no "
        "arguments: ResNet-20 on scikit-learn's digits, 12 trials, on this machine."))
    parser.add_argument("--config", help="YAML config (default: the embedded ResNet-20 on "
                        "digits); its tune: section sets the space, searcher, budget and "
                        "threshold")
    parser.add_argument("--num-samples", type=int, help="number of trials (tune.num_samples)")
    parser.add_argument("--output", help="new run directory (default: runs/tune-<time>); one "
                        "that already holds files is refused")
    parser.add_argument("--address", help="join a running Ray cluster (auto, HOST:PORT or "
                        "ray://HOST:PORT); it must have a node with the 'ncs' resource. Default: "
                        "$RAY_ADDRESS when set (a Ray Job sets it: the run joins the job's "
                        "cluster), else start Ray here and give this node 'ncs'")
    parser.add_argument("--seed", type=int, help="searcher seed (tune.seed)")
    parser.add_argument("--no-wandb", action="store_true", help="do not mirror trials to "
                        "Weights & Biases (default: mirror; offline when WANDB_API_KEY is unset)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run with "
                        "its own config: finished trials are kept, the searcher's state is "
                        "restored")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # inside `ray job submit` the job's cluster is in RAY_ADDRESS: join it, as Ray's own does
    args.address = args.address or os.environ.get("RAY_ADDRESS") or None
    if args.resume is not None:
        return resume_main(args)
    config = load_config(args.config)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise UserError(f"--num-samples: expected an integer >= 1, got {args.num_samples}")
        config = replace(config, tune=replace(config.tune, num_samples=args.num_samples))
    if args.seed is not None:
        config = replace(config, tune=replace(config.tune, seed=args.seed))
    space = load_space(config.tune.search_space)
    validate(config, space, device_here=args.address is None)
    check_output(args.output)
    return _finish(*launch(config, space, args.address, not args.no_wandb,
                           lambda: new_run_dir(args.output, "tune"), resume=False))


def resume_main(args: Any) -> int:
    """``--resume RUN_DIR``: the run's own config and experiment state, checked before Ray."""
    out = Path(args.resume)
    for flag in ("config", "output", "num_samples", "seed"):
        if getattr(args, flag) is not None:
            raise UserError(f"--resume: {'--' + flag.replace('_', '-')} is not allowed; a "
                            "resumed run keeps its own config and directory")
    check_resumable(out)
    config = load_config(str(out / "config.yaml"))
    space = load_space(config.tune.search_space)
    validate(config, space, device_here=args.address is None)
    return _finish(*launch(config, space, args.address, not args.no_wandb, lambda: out,
                           resume=True))


DEVICE_LOST = 75  # exit code (EX_TEMPFAIL): the device left and did not come back in time


def _finish(summary: dict[str, Any] | None, out: Path) -> int:
    """The closing table; exit code 130 when the run was interrupted (its state is saved),
    :data:`DEVICE_LOST` when the device watch stopped it (``--resume`` once it is back)."""
    if summary is None:
        return 130
    if "interrupted" in summary:
        return DEVICE_LOST
    print_table(summary, out)
    return 0


def cli() -> None:
    """Console entry point."""
    run_cli(main)


if __name__ == "__main__":
    cli()
