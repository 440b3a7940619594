"""``python -m edge_tune.trial --config FILE --params JSON``: one compression trial on this
machine, printed as one JSON object (stdout; progress on stderr).

A thin command over :func:`edge_tune.run.pipeline.run_trial`: baseline -> compress ->
fine-tune -> ONNX -> int8 -> verify -> benchmark against the baseline in one session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_tune.catalog.data import num_classes
from edge_tune.catalog.models import create_model, model_stages
from edge_tune.compression.layers import conv_layers, stage_of
from edge_tune.config import Config, load_config
from edge_tune.core.console import stdout_to_stderr
from edge_tune.core.errors import ArgumentParser, UserError, run_cli
from edge_tune.core.files import new_run_dir
from edge_tune.run.pipeline import check_params, run_trial


def print_stages(config: Config) -> None:
    """Each stage of the configured model with its conv count (stdout)."""
    model = create_model(config.model, num_classes(config.data))
    stages = model_stages(config.model)
    convs = conv_layers(model)
    for stage in stages:
        print(f"{stage}\t{sum(stage_of(c, stages) == stage for c in convs)} convs")
    if not stages:
        print(f"{config.model} has no stages: use filter_ratio for all {len(convs)} convs")


def parse_params(text: str) -> dict[str, Any]:
    """``--params`` JSON (or ``@file.json``) as a dict."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise UserError(f"--params: no such file {text[1:]!r}")
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"--params: invalid JSON ({err.msg} at char {err.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise UserError(f"--params: expected a JSON object like '{{\"filter_ratio\": 0.5}}', "
                        f"got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m edge_tune.trial", description=(
        "Compress a trained CNN with the given parameters, fine-tune, export ONNX, verify the "
        "compression reached ONNX and OpenVINO, and benchmark it against the baseline."))
    parser.add_argument("--config", help="YAML config (default: the embedded ResNet-20 on digits)")
    parser.add_argument("--params", default="{}", help=(
        "JSON object of compression parameters, e.g. '{\"filter_ratio\": 0.5, \"int8\": 1}'; "
        "names: filter_ratio, filter_ratio_<stage>, fine_sparsity, int8, finetune_epochs"))
    parser.add_argument("--stages", action="store_true", help="print the configured model's "
                        "stages (for filter_ratio_<stage>) and the convs in each, then exit")
    parser.add_argument("--output", help="new directory for the ONNX files, CSVs and result.json "
                        "(default: runs/trial-<time>; an existing non-empty one is refused)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.stages:
        print_stages(config)
        return 0
    params = parse_params(args.params)
    check_params(config, params)
    out = new_run_dir(args.output, "trial")
    with stdout_to_stderr():
        result = run_trial(config, params, out)
    print(json.dumps(result, indent=2))
    return 0


def cli() -> None:
    """Console entry point."""
    run_cli(main)


if __name__ == "__main__":
    cli()
