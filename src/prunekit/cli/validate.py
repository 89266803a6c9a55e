"""``prunekit validate RECIPE``: load a recipe, report the first problem or print it normalized."""

from __future__ import annotations

from pathlib import Path

import typer


def validate(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only 'ok', not the normalized recipe."),
) -> None:
    """Check a recipe against the schema and print it with every default filled in."""
    from prunekit.recipes.loader import dump_recipe, load_recipe

    loaded = load_recipe(recipe)
    if quiet:
        typer.echo(f"ok: {recipe} is a valid recipe")
        return
    typer.echo(dump_recipe(loaded), nl=False)  # stdout stays pure YAML, ready to redirect to a file
    typer.echo(f"ok: {recipe} is a valid recipe", err=True)
