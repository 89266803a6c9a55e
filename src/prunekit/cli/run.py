"""``prunekit run RECIPE``: run a compression recipe end to end and print what it measured."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from prunekit.cli._common import parse_overrides, run_and_summarize


def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (overrides the recipe's output_dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoints."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a field: --set recovery.epochs=2 (repeatable)."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 3 if accuracy drops more than the recipe allows."),
) -> None:
    """Run RECIPE: prune, recover, quantize, export and measure; writes report.json and report.html."""
    from prunekit.recipes.loader import apply_overrides, load_recipe

    overrides: dict[str, object] = dict(parse_overrides(set_))
    if out is not None:
        overrides["output_dir"] = str(out)
    loaded = load_recipe(recipe)
    if overrides:
        loaded = apply_overrides(loaded, overrides, source=f"{recipe} (--set/--out)")
    run_and_summarize(loaded, resume=resume, strict=strict)
