"""``prunekit demo``: the shipped digits recipe, end to end, in a minute on a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from prunekit.cli._common import run_and_summarize

# --fast keeps every stage but runs each as little as still exercises it (for tests and CI).
FAST_OVERRIDES: dict[str, Any] = {
    "model.train_baseline.epochs": 1,
    "recovery.epochs": 1,
    "pruning.schedule.finetune_epochs_between": 0,
    "data.calib_samples": 64,
    "quantization.calibration_samples": 64,
    "quantization.qat_epochs": 1,
    "evaluation.batch_sizes": [1],
    "evaluation.latency_runs": 3,
    "evaluation.warmup_runs": 1,
    "evaluation.kfold": 0,
    "evaluation.energy": False,
}


def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/digits-demo)."),
    fast: bool = typer.Option(False, "--fast", help="Shrink epochs and timing runs to seconds (for tests)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted demo from its checkpoints."),
) -> None:
    """Train a small CNN on the 8x8 digits, halve its MACs, recover, quantize to int8, and measure."""
    from prunekit.recipes.loader import apply_overrides, builtin_recipe_path, load_recipe

    overrides: dict[str, Any] = dict(FAST_OVERRIDES) if fast else {}
    if out is not None:
        overrides["output_dir"] = str(out)
    recipe = load_recipe(builtin_recipe_path("digits_demo"))
    if overrides:
        recipe = apply_overrides(recipe, overrides, source="demo")
    run_and_summarize(recipe, resume=resume)
