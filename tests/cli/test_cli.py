"""The command line: exit codes, one-line errors, overrides reaching the runner, no early output dir."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunekit import __version__
from prunekit.cli.main import app
from prunekit.recipes.schema import Recipe
from prunekit.reporting import ModelMetrics, Report

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def _bad_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nmodel: {builtin: mlp}\ndata: {builtin: digits}\npruning: {target: {ratio: 1.5}}\n")
    return path


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "run", "analyze", "sensitivity", "validate"):
        assert command in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"prunekit {__version__}"


def test_validate_prints_normalized_yaml() -> None:
    result = runner.invoke(app, ["validate", str(EXAMPLES / "mlp_2to4.yaml")])
    assert result.exit_code == 0
    assert "nm:\n  - 2\n  - 4" in result.stdout or "nm: [2, 4]" in result.stdout
    assert "output_dir: runs/mlp-2to4" in result.stdout  # default filled in
    assert "is a valid recipe" in result.stderr


def test_bad_recipe_is_one_red_line_and_exit_1(tmp_path: Path) -> None:
    path = _bad_recipe(tmp_path)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {path}: pruning.target.ratio: must be in (0, 1), got 1.5"
    assert "Traceback" not in result.output


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "validate", str(_bad_recipe(tmp_path))])
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "RecipeFieldError"


def test_missing_recipe_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "recipe file not found" in result.stderr


def test_usage_error_exits_2() -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 2


def test_analyze_mlp_prints_params_and_macs() -> None:
    result = runner.invoke(app, ["analyze", "mlp", "--input-shape", "1,64", "--no-groups"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    total = next(line for line in result.stdout.splitlines() if "total" in line)
    params = 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    macs = 64 * 256 + 256 * 128 + 128 * 10
    assert f"{params:,}" in total and f"{macs:,}" in total


@pytest.mark.parametrize(("shape", "piece"), [("1,x", "--input-shape must be positive integers"),
                                              ("0,64", "--input-shape must be positive integers")])
def test_analyze_bad_shape(shape: str, piece: str) -> None:
    result = runner.invoke(app, ["analyze", "mlp", "--input-shape", shape, "--no-groups"])
    assert result.exit_code == 1 and piece in result.stderr


def test_analyze_unknown_model() -> None:
    result = runner.invoke(app, ["analyze", "digits_cn", "--no-groups"])
    assert result.exit_code == 1 and "did you mean 'digits_cnn'" in result.stderr


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Recipe, bool]]:
    """Stand in for the pipeline: record what the CLI passes, return a fixed report."""
    calls: list[tuple[Recipe, bool]] = []

    def run_recipe(recipe: Recipe, *, console: object = None, resume: bool = False) -> Report:
        calls.append((recipe, resume))
        acc = 0.5 if recipe.name == "mlp-2to4" else 0.97
        return Report(recipe_name=recipe.name, max_accuracy_drop=recipe.evaluation.max_accuracy_drop,
                      dense=ModelMetrics(params=100, macs=400, accuracy=0.98),
                      compressed=ModelMetrics(params=50, macs=100, accuracy=acc))

    module = types.ModuleType("prunekit.recipes.runner")
    module.run_recipe = run_recipe  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prunekit.recipes.runner", module)
    return calls


def test_run_applies_out_and_set_without_creating_the_folder(tmp_path: Path, fake_runner: list) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(EXAMPLES / "digits_demo.yaml"), "--out", str(out), "--resume",
                                 "--set", "recovery.epochs=2", "--set", "evaluation.batch_sizes=[1, 4]"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (recipe, resume), = fake_runner
    assert resume is True and recipe.output_dir == str(out)
    assert recipe.recovery.epochs == 2 and recipe.evaluation.batch_sizes == [1, 4]
    assert not out.exists()  # the runner, not the CLI, creates it once the run succeeds
    assert "4.00×" in result.stdout  # MACs ratio from the summary table


def test_run_bad_override(fake_runner: list) -> None:
    result = runner.invoke(app, ["run", str(EXAMPLES / "digits_demo.yaml"), "--set", "recovery.epochs=-1"])
    assert result.exit_code == 1 and "recovery.epochs: must be >= 0, got -1" in result.stderr
    result = runner.invoke(app, ["run", str(EXAMPLES / "digits_demo.yaml"), "--set", "novalue"])
    assert result.exit_code == 1 and "expected KEY=VALUE" in result.stderr
    assert fake_runner == []


def test_strict_exits_3_when_accuracy_limit_broken(fake_runner: list) -> None:
    args = ["run", str(EXAMPLES / "mlp_2to4.yaml")]
    assert runner.invoke(app, args).exit_code == 0  # reported, not fatal, by default
    result = runner.invoke(app, [*args, "--strict"])
    assert result.exit_code == 3 and "more than the recipe's max_accuracy_drop" in result.stdout


def test_demo_fast_shrinks_the_shipped_recipe(tmp_path: Path, fake_runner: list) -> None:
    result = runner.invoke(app, ["demo", "--fast", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    (recipe, resume), = fake_runner
    assert recipe.name == "digits-demo" and resume is False
    assert recipe.model.train_baseline is not None and recipe.model.train_baseline.epochs == 1
    assert recipe.recovery.epochs == 1 and recipe.evaluation.latency_runs == 3
    assert recipe.pruning.target.ratio == 0.5  # what is compressed stays the demo's


def test_sensitivity_prints_one_curve_per_group(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmodel: {builtin: mlp, kwargs: {hidden: [8, 8]}, train_baseline: {epochs: 1}}\n"
                    "data: {builtin: digits, batch_size: 128}\npruning: {criterion: l2}\n")
    result = runner.invoke(app, ["sensitivity", str(path), "--ratios", "0.5", "--batches", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.stdout.splitlines() if "net." in line and "│" in line]
    assert [r[1].strip() for r in rows] == ["net.1.weight:0", "net.3.weight:0"]
    dense = {r[2].strip() for r in rows}
    assert len(dense) == 1  # every curve starts from the same unpruned model
    assert all(0.0 <= float(r[3]) <= 1.0 for r in rows)


def test_sensitivity_bad_ratios(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sensitivity", str(EXAMPLES / "mlp_2to4.yaml"), "--ratios", "0.5,1.5"])
    assert result.exit_code == 1 and "--ratios must be fractions in (0, 1)" in result.stderr
