"""A run's measurements: energy around the work done, one estimate note, asked vs reached, shared threads."""

from __future__ import annotations

import json

import pytest

from prunekit.recipes.loader import apply_overrides, builtin_recipe_path, load_recipe
from prunekit.recipes.runner import run_recipe

FAST = {
    "model.train_baseline.epochs": 1,
    "recovery.epochs": 1,
    "data.calib_samples": 64,
    "quantization.calibration_samples": 64,
    "quantization.per_layer_speed": False,
    "evaluation.batch_sizes": [1, 8],
    "evaluation.latency_runs": 5,
    "evaluation.warmup_runs": 1,
    "evaluation.threads": 1,
    "evaluation.energy": True,
    "evaluation.memory": False,
    "evaluation.pytorch_latency": False,
    "evaluation.max_accuracy_drop": None,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("measure") / "run"
    recipe = apply_overrides(load_recipe(builtin_recipe_path("digits_demo")), {**FAST, "output_dir": str(out)},
                             source="test")
    report = run_recipe(recipe)
    return report, json.loads((out / "report.json").read_text())


def test_training_energy_is_metered_around_the_training_the_run_did(run):
    report, _ = run
    train_rows = [row for row in report.deployment if row.get("runtime") == "pytorch-train"]
    assert [(row["model"], row["stage"].split(" (")[0], row["epochs"]) for row in train_rows] == [
        ("dense", "baseline training", 1), ("compressed", "recovery fine-tune", 1)]
    for row in train_rows:
        assert row["joules"] > 0 and row["joules_per_epoch"] == pytest.approx(row["joules"] / row["epochs"], abs=1e-3)


def test_inference_energy_is_per_batch_size_and_estimates_are_noted_once(run):
    report, _ = run
    for m in (report.dense, report.compressed):
        assert set(m.energy_mj_by_batch) == {1, 8}
        assert all(v > 0 for v in m.energy_mj_by_batch.values())
        assert m.energy_mj == m.energy_mj_by_batch[1]
    energy_notes = [n for n in report.notes if "energy" in n]
    if report.dense.energy_estimated:
        assert len(energy_notes) == 1 and "(estimate)" in energy_notes[0]


def test_target_asked_vs_reached_and_threads_are_reported(run):
    report, data = run
    t = data["target"]
    assert t["metric"] == "macs" and t["asked"] == 0.5
    assert t["reached"] == pytest.approx(1 - data["compressed"]["macs"] / data["dense"]["macs"])
    assert data["measurement"]["threads"] == 1
    assert "at 1 thread" in report.quantization.reason or "1 thread;" in report.quantization.reason
    assert data["splits"]["test samples"] > 0 and data["splits"]["val samples"] > 0
    for batch in ("1", "8"):
        low, high = data["compressed"]["latency_spread_ms"][batch]
        assert low <= data["compressed"]["latency_ms"][batch] <= high


def test_baseline_training_never_sees_the_validation_loader(monkeypatch, tmp_path):
    from rich.console import Console

    import prunekit.training as training
    from prunekit.models import DigitsCNN
    from prunekit.recipes.runner import _Run
    from prunekit.recipes.sources import load_data

    seen = {}
    monkeypatch.setattr(training, "finetune", lambda model, train, val, **kw: seen.update(train=train, val=val))
    recipe = apply_overrides(load_recipe(builtin_recipe_path("digits_demo")), {"output_dir": str(tmp_path / "r")},
                             source="test")
    run = _Run(recipe, tmp_path, Console(quiet=True), False)
    run.bundle = load_data(recipe.data, seed=0)
    run.train_baseline(DigitsCNN())
    assert seen["train"] is run.bundle.train and seen["val"] is None
    assert [row["stage"] for row in run.train_energy] == ["baseline training"]


def test_the_run_trains_under_the_recipes_fixed_thread_count(monkeypatch, tmp_path):
    import torch

    from prunekit.recipes import runner

    seen = {}

    def fake_execute(self):
        seen.update(threads=torch.get_num_threads(), deterministic=torch.are_deterministic_algorithms_enabled())
        return None

    monkeypatch.setattr(runner._Run, "execute", fake_execute)
    recipe = apply_overrides(load_recipe(builtin_recipe_path("digits_demo")),
                             {"output_dir": str(tmp_path / "r"), "train_threads": 1}, source="test")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runner.run_recipe(recipe)
        assert seen == {"threads": 1, "deterministic": True}
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)
