"""``prunekit sensitivity RECIPE``: how each channel group's accuracy suffers when it is pruned alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from prunekit.errors import InvalidParameterError

_DEFAULT_RATIOS = "0.1,0.3,0.5,0.7,0.9"


def sensitivity(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (its model, data, criterion, round_to and min_keep are used)."),
    ratios: str = typer.Option(_DEFAULT_RATIOS, "--ratios", help="Fractions to remove, comma-separated."),
    batches: Optional[int] = typer.Option(None, "--batches", min=1, help="Score and evaluate on this many validation batches only."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for sensitivity.json/.html (default: <output_dir>-sensitivity)."),
) -> None:
    """Prune each channel group alone at each ratio (on a copy) and print validation accuracy (loss for regression)."""
    import torch
    import torch.nn.functional as F
    from rich.console import Console

    from prunekit.pruning.sensitivity import sensitivity_scan
    from prunekit.recipes.loader import load_recipe
    from prunekit.recipes.sources import load_data, load_model
    from prunekit.reporting.tables import layer_table

    from prunekit.recipes.rundir import check_writable

    wanted = parse_ratios(ratios)
    loaded = load_recipe(recipe)
    default = Path(loaded.output_dir)
    outdir = out if out is not None else default.with_name(default.name + "-sensitivity")
    check_writable(outdir)  # before minutes of scanning, not after
    console = Console()
    torch.manual_seed(loaded.seed)
    data = load_data(loaded.data, seed=loaded.seed, pretrained=loaded.model.weights is not None)
    model = load_model(loaded.model)
    _train_baseline_if_asked(model, loaded, data, console)
    shape = loaded.model.example_input_shape
    example = torch.zeros(*shape) if shape else data.example_input  # (1, ...)
    regression = loaded.data.task == "regression"
    console.print(f"scanning every channel group at {len(wanted)} ratio(s) on "
                  f"{batches or 'all'} validation batch(es)")

    def on_group(done: int, total: int, group_id: str) -> None:
        console.print(f"  [{done + 1}/{total}] {group_id}", highlight=False)

    curves = sensitivity_scan(
        model.eval(), example, data.val, ratios=wanted, criterion=loaded.pruning.criterion,
        min_keep=loaded.pruning.min_keep, round_to=loaded.pruning.round_to,
        loss_fn=F.mse_loss if regression else None, batches=batches, on_group=on_group,
    )
    column = 1 if regression else 2  # curve points are (ratio, loss, accuracy)
    rows: list[dict[str, Any]] = []
    for group_id, curve in curves.items():
        row: dict[str, Any] = {"group": group_id}
        row.update({("dense" if p[0] == 0 else f"{p[0]:g}"): p[column] for p in curve})
        rows.append(row)
    metric = "validation loss (MSE)" if regression else "validation accuracy"
    console.print(layer_table(rows, title=f"{loaded.name}: {metric} with one group pruned at each ratio"))
    page = write_sensitivity(outdir, loaded.name, curves, column, metric)
    console.print(f"sensitivity curves: {page}")


def write_sensitivity(outdir: Path, name: str, curves: dict, column: int, metric: str) -> Path:
    """Write sensitivity.json and sensitivity.html (plot + table) into ``outdir``, atomically."""
    import json

    from prunekit.fileio import write_text_atomic
    from prunekit.reporting.html import render_sensitivity_html

    outdir.mkdir(parents=True, exist_ok=True)
    points = {g: [(float(p[0]), float(p[column])) for p in c] for g, c in curves.items()}
    write_text_atomic(outdir / "sensitivity.json", json.dumps({"metric": metric, "curves": points}, indent=2))
    write_text_atomic(outdir / "sensitivity.html", render_sensitivity_html(f"{name}: sensitivity", points, metric))
    return outdir / "sensitivity.html"


def parse_ratios(text: str) -> list[float]:
    """'0.1,0.5' -> [0.1, 0.5]; each a fraction in (0, 1)."""
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        values = []
    if not values or any(not 0 < v < 1 for v in values):
        raise InvalidParameterError(f"--ratios must be fractions in (0, 1) like 0.1,0.5, got {text!r}")
    return sorted(set(values))


def _train_baseline_if_asked(model: Any, recipe: Any, data: Any, console: Any) -> None:
    """Train from scratch when the recipe says so and gives no weights, as a run would."""
    spec = recipe.model.train_baseline
    if recipe.model.weights is not None or spec is None or spec.epochs == 0:
        if recipe.model.weights is None:
            console.print("[yellow]warning:[/] no model.weights and no train_baseline: the curves describe an untrained model")
        return
    from prunekit.training import FinetuneConfig, finetune

    console.print(f"training the baseline for {spec.epochs} epochs (model.train_baseline)")
    config = FinetuneConfig(epochs=spec.epochs, lr=spec.lr, optimizer=spec.optimizer,
                            weight_decay=spec.weight_decay, seed=recipe.seed)
    finetune(model, data.train, data.val, config=config, task=recipe.data.task)
