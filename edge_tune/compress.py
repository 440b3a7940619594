"""``python -m edge_tune.compress --recipe FILE``: a Distiller recipe, run, deployed,
benchmarked.

A thin command over :func:`edge_tune.run.pipeline.run_recipe_trial`: it loads and checks the
recipe against the configured model, rescales its epochs when asked
(:func:`edge_tune.compression.recipe.fit_epochs`), and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json

from edge_tune.catalog.data import num_classes
from edge_tune.catalog.models import check_model, create_model
from edge_tune.compression.recipe import check_weights, fit_epochs, load_recipe
from edge_tune.config import Config, config_from_dict, config_to_dict, load_config
from edge_tune.core.console import log_stderr, stdout_to_stderr
from edge_tune.core.errors import ArgumentParser, UserError, run_cli
from edge_tune.core.files import new_run_dir
from edge_tune.run.pipeline import check_inputs, run_recipe_trial


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m edge_tune.compress", description=(
        "Run a Distiller compression-scheduling recipe on the configured model and data while "
        "fine-tuning, then export, verify and benchmark it against the baseline (JSON)."))
    parser.add_argument("--recipe", required=True, help="Distiller YAML recipe")
    parser.add_argument("--config", help="YAML config (default: ResNet-20 on digits)")
    parser.add_argument("--epochs", type=int, help="run in N epochs: every policy's epochs are "
                        "rescaled from --recipe-epochs onto N")
    parser.add_argument("--recipe-epochs", type=int, help="the training length the recipe was "
                        "written for (default: the --epochs of the command line in its header "
                        "comments, else 180)")
    parser.add_argument("--output", help="new directory (default: runs/compress-<time>)")
    kd = parser.add_argument_group("knowledge distillation (Distiller's flags; any turns it on)")
    kd.add_argument("--kd-teacher", help="the teacher: 'baseline' (the uncompressed model) or "
                    "a model name as in the config's model, with --kd-resume")
    kd.add_argument("--kd-resume", help="the teacher's weights (a checkpoint)")
    kd.add_argument("--kd-temp", type=float, help="softmax temperature (default 5.0)")
    kd.add_argument("--kd-dw", type=float, help="distillation loss weight in [0, 1] (0.7)")
    kd.add_argument("--kd-sw", type=float, help="student (label) loss weight in [0, 1] (0.3)")
    args = parser.parse_args(argv)
    config, distill = with_distillation(load_config(args.config), args)
    recipe = load_recipe(args.recipe)
    check_model(config.model, num_classes(config.data), config.data.image_size)
    model = create_model(config.model, num_classes(config.data))
    check_weights(recipe, [n for n, _ in model.named_parameters()])
    recipe, epochs = fit_epochs(recipe, args.recipe_epochs, args.epochs)
    for line in recipe.ignored:
        log_stderr(f"ignored: {line}")
    check_inputs(config)
    out = new_run_dir(args.output, "compress")
    with stdout_to_stderr():
        result = run_recipe_trial(config, recipe, epochs, out, distill=distill)
    print(json.dumps(result, indent=2))
    return 0


def with_distillation(config: Config, args: argparse.Namespace) -> tuple[Config, bool]:
    """The config with the ``--kd-*`` flags in ``finetune.distill``, and whether to distil."""
    flags = {"kd_teacher": args.kd_teacher, "kd_resume": args.kd_resume,
             "kd_temp": args.kd_temp, "kd_dw": args.kd_dw, "kd_sw": args.kd_sw}
    if all(v is None for v in flags.values()):
        return config, False
    for flag in ("kd_dw", "kd_sw"):
        if flags[flag] is not None and not 0 <= flags[flag] <= 1:
            raise UserError(f"--{flag.replace('_', '-')}: expected 0 <= x <= 1, got {flags[flag]}")
    if args.kd_temp is not None and args.kd_temp <= 0:
        raise UserError(f"--kd-temp: expected a number > 0, got {args.kd_temp}")
    teacher = None if args.kd_teacher in (None, "baseline") else args.kd_teacher
    if (teacher is None) != (args.kd_resume is None):
        raise UserError(f"--kd-teacher: {args.kd_teacher!r} with --kd-resume "
                        f"{args.kd_resume!r}: the baseline needs no checkpoint, another teacher "
                        "needs its --kd-resume")
    raw = config_to_dict(config)
    distill = raw["finetune"]["distill"]
    for key, flag in (("temperature", "kd_temp"), ("distill_weight", "kd_dw"),
                      ("student_weight", "kd_sw")):
        if flags[flag] is not None:
            distill[key] = flags[flag]
    distill.update(teacher=teacher, teacher_checkpoint=args.kd_resume)
    return config_from_dict(raw), True


if __name__ == "__main__":
    run_cli(main)
