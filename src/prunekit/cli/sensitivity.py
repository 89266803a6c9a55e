"""``prunekit sensitivity RECIPE``: how much each layer's accuracy suffers as it is pruned alone."""

from __future__ import annotations

from pathlib import Path

import typer

from prunekit.errors import PrunekitError


def sensitivity(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (model, data and criterion are used)."),
) -> None:
    """Prune each channel group alone at increasing ratios and print the accuracy curve."""
    import importlib

    from prunekit.recipes.loader import load_recipe

    loaded = load_recipe(recipe)
    try:
        module = importlib.import_module("prunekit.pruning.sensitivity")
    except ModuleNotFoundError as exc:
        if exc.name != "prunekit.pruning.sensitivity":
            raise
        raise PrunekitError("sensitivity analysis is not available in this build of prunekit "
                            "(prunekit.pruning.sensitivity is missing)") from None
    raise PrunekitError(f"prunekit.pruning.sensitivity has no entry point the CLI knows "
                        f"(found: {', '.join(n for n in dir(module) if not n.startswith('_'))}); "
                        f"recipe {loaded.name!r} not analyzed")
