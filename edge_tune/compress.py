"""``python -m edge_tune.compress --recipe FILE``: a Distiller recipe, run, deployed,
benchmarked.

A thin command over :func:`edge_tune.run.pipeline.run_recipe_trial`: it loads and checks the
recipe against the configured model, rescales its epochs when asked
(:func:`edge_tune.compression.recipe.fit_epochs`), and prints one JSON object.
"""

from __future__ import annotations

import json

from edge_tune.catalog.data import num_classes
from edge_tune.catalog.models import check_model, create_model
from edge_tune.compression.recipe import check_weights, fit_epochs, load_recipe
from edge_tune.config import load_config
from edge_tune.core.console import log_stderr, stdout_to_stderr
from edge_tune.core.errors import ArgumentParser, run_cli
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
    args = parser.parse_args(argv)
    config = load_config(args.config)
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
        result = run_recipe_trial(config, recipe, epochs, out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
