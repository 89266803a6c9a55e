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


# --text --fast: the MiniLM path on a few Brown sentences, each stage once.
TEXT_FAST_OVERRIDES: dict[str, Any] = {
    "recovery.epochs": 1,
    "data.calib_samples": 32,
    "data.text.max_length": 24,
    "evaluation.batch_sizes": [1],
    "evaluation.latency_runs": 3,
    "evaluation.warmup_runs": 1,
}


def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/digits-demo)."),
    fast: bool = typer.Option(False, "--fast", help="Shrink epochs and timing runs to seconds (for tests)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted demo from its checkpoints."),
    text: bool = typer.Option(False, "--text", help="The transformer path instead: prune and distil the "
                              "pretrained all-MiniLM-L6-v2 on Brown sentences (needs the 'text' extra)."),
) -> None:
    """Train a small CNN on the 8x8 digits, halve its MACs, recover, quantize to int8, and measure."""
    from prunekit.recipes.loader import apply_overrides, builtin_recipe_path, load_recipe

    overrides: dict[str, Any] = dict(TEXT_FAST_OVERRIDES if text else FAST_OVERRIDES) if fast else {}
    if out is not None:
        overrides["output_dir"] = str(out)
    recipe = load_recipe(builtin_recipe_path("minilm_text" if text else "digits_demo"))
    if overrides:
        recipe = apply_overrides(recipe, overrides, source="demo")
    run_and_summarize(recipe, resume=resume)
