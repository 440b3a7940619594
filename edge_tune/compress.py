"""``python -m edge_tune.compress --recipe FILE``: a Distiller recipe, run, deployed, benchmarked.

A thin command over :func:`edge_tune.trial.run_recipe_trial`: it loads and checks the recipe
against the configured model, rescales its epochs when asked, and prints one JSON object.
"""

from __future__ import annotations

import json

from edge_tune.config import load_config
from edge_tune.data import num_classes
from edge_tune.distiller import Recipe, check_weights, load_recipe, rescale
from edge_tune.errors import ArgumentParser, UserError, run_cli
from edge_tune.models import check_model, create_model
from edge_tune.output import log_stderr, new_run_dir, stdout_to_stderr
from edge_tune.trial import check_inputs, run_recipe_trial

DEFAULT_RECIPE_EPOCHS = 180  # Distiller's CIFAR runs, when a recipe's header says nothing


def fit_epochs(recipe: Recipe, recipe_epochs: int | None,
               epochs: int | None) -> tuple[Recipe, int]:
    """The recipe rescaled from ``recipe_epochs`` (None: what its header's command line
    says, else 180) onto ``epochs`` (None: as written). A recipe whose header resumes a run
    is mapped from its first policy's epoch (``network_surgery``: 180-360 -> 0-N)."""
    if recipe_epochs is None:
        recipe_epochs = recipe.header_epochs or DEFAULT_RECIPE_EPOCHS
        where = "its header" if recipe.header_epochs else "the default"
        log_stderr(f"recipe written for {recipe_epochs} epochs ({where}; --recipe-epochs "
                   "to change)")
    if recipe_epochs < 1:
        raise UserError(f"--recipe-epochs: expected an integer >= 1, got {recipe_epochs}")
    if epochs is None:
        return recipe, recipe_epochs
    if epochs < 0:
        raise UserError(f"--epochs: expected an integer >= 0, got {epochs}")
    origin = recipe.origin()
    if epochs == 0:
        log_stderr("--epochs 0: the recipe's epoch-0 actions only, no training")
    elif epochs != recipe_epochs or origin:
        recipe = rescale(recipe, recipe_epochs, epochs, origin)
        scaled = [i.name for i in recipe.instances.values() if i.section == "regularizers"]
        note = (f"; strength of {', '.join(scaled)} x{recipe_epochs / epochs:g}"
                if scaled else "")
        start = f" (resumed at epoch {origin})" if origin else ""
        log_stderr(f"recipe rescaled from {recipe_epochs}{start} to {epochs} epochs{note}")
    return recipe, epochs


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
