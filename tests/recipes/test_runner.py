"""End-to-end: the demo recipe on a reduced budget, checked against independent re-measurement."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from prunekit.errors import InvalidParameterError, RecipeError
from prunekit.evaluation.complexity import count_macs
from prunekit.models import DigitsCNN
from prunekit.pruning.surgery import load_pruned
from prunekit.recipes.loader import apply_overrides, builtin_recipe_path, load_recipe
from prunekit.recipes.runner import run_recipe

REDUCED = {
    "model.train_baseline.epochs": 3,
    "recovery.epochs": 2,
    "data.calib_samples": 64,
    "quantization.calibration_samples": 64,
    "quantization.tolerance": 0.03,
    "evaluation.batch_sizes": [1, 8],
    "evaluation.latency_runs": 5,
    "evaluation.warmup_runs": 1,
    "evaluation.energy": False,
    "evaluation.max_accuracy_drop": 0.05,
}


def _recipe(out, **extra):
    recipe = load_recipe(builtin_recipe_path("digits_demo"))
    return apply_overrides(recipe, {**REDUCED, "output_dir": str(out), **extra}, source="test")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    report = run_recipe(_recipe(out))
    return out, report


@pytest.mark.slow
def test_demo_report_figures_are_real(demo_run):
    out, report = demo_run
    data = json.loads((out / "report.json").read_text())
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 1
    assert not out.with_name(out.name + ".partial").exists()

    # Compressed MACs re-counted from the saved files, independently of the report.
    rebuilt = load_pruned(DigitsCNN(num_classes=10), out / "compressed").eval()
    macs = count_macs(rebuilt, torch.zeros(1, 1, 8, 8)).total
    assert macs == data["compressed"]["macs"]
    assert macs <= 0.55 * count_macs(DigitsCNN(), torch.zeros(1, 1, 8, 8)).total  # target: remove 50%

    # Accuracy within the recipe's tolerance, as the report says.
    drop = data["dense"]["accuracy"] - data["compressed"]["accuracy"]
    assert drop <= 0.05 + 1e-9
    assert report.accuracy_ok is True

    # The float ONNX export of the compressed model agrees with PyTorch.
    fp32 = out / "quantization" / "model_fp32.onnx"
    x = torch.rand(4, 1, 8, 8)
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch_out = rebuilt(x).numpy()
    assert np.abs(onnx_out - torch_out).max() < 1e-4

    # The deployed artifact runs in ONNX Runtime and agrees with PyTorch on the predicted class.
    deployed = out / data["artifacts"]["compressed_onnx"]
    session = ort.InferenceSession(str(deployed), providers=["CPUExecutionProvider"])
    x = torch.rand(64, 1, 8, 8)
    pred = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].argmax(1)
    with torch.no_grad():
        agree = (pred == rebuilt(x).argmax(1).numpy()).mean()
    assert agree >= 0.9

    for batch in (1, 8):
        assert data["dense"]["latency_ms"][str(batch)] > 0
        assert data["compressed"]["latency_ms"][str(batch)] > 0
    assert data["recovery"]["after_finetune"] is not None


def test_bad_criterion_fails_before_training_and_leaves_no_output(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InvalidParameterError, match="criterion 'magnitde'.*did you mean 'l1'|magnitde"):
        run_recipe(_recipe(out, **{"pruning.criterion": "magnitde"}))
    assert not out.exists()


def test_foreign_output_dir_is_not_overwritten(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(RecipeError, match="not a prunekit run"):
        run_recipe(_recipe(out))
    assert (out / "thesis.tex").read_text() == "precious"


MINIMAL = {
    "model.train_baseline.epochs": 2,
    "recovery.epochs": 1,
    "evaluation.batch_sizes": [1],
    "evaluation.latency_runs": 3,
    "evaluation.warmup_runs": 1,
    "evaluation.energy": False,
    "evaluation.memory": False,
    "evaluation.pytorch_latency": False,
    "evaluation.max_accuracy_drop": None,
}


@pytest.mark.slow
@pytest.mark.parametrize("overrides, check", [
    ({"quantization.mode": "qat", "quantization.order": "joint"}, "qat"),
    ({"pruning.granularity": "nm", "pruning.nm": [2, 4], "quantization.enabled": False}, "nm"),
    ({"pruning.schedule": {"kind": "iterative", "steps": 2, "finetune_epochs_between": 0},
      "quantization.enabled": False}, "iterative"),
    ({"pruning.schedule": {"kind": "adaptive", "tolerance": 0.5, "initial_step": 0.3},
      "quantization.enabled": False}, "adaptive"),
])
def test_recipe_variants_run_and_report(tmp_path, overrides, check):
    recipe = load_recipe(builtin_recipe_path("digits_demo"))
    recipe = apply_overrides(recipe, {**MINIMAL, "output_dir": str(tmp_path / "run"), **overrides}, source="test")
    report = run_recipe(recipe)
    data = json.loads((tmp_path / "run" / "report.json").read_text())
    if check == "qat":
        assert data["quantization"]["mode"] == "qat"
        assert data["compressed"]["macs"] < data["dense"]["macs"]
    elif check == "nm":
        # N:M keeps shapes: MACs equal, but exactly half of every masked layer's weights are zero.
        assert data["compressed"]["macs"] == data["dense"]["macs"]
        from safetensors.torch import load_file

        weights = load_file(str(tmp_path / "run" / "compressed" / "model.safetensors"))
        w = weights["block.0.weight"]  # (64, 64, 3, 3): groups of 4 along the input channels
        groups = w.permute(0, 2, 3, 1).reshape(-1, 4)
        assert ((groups != 0).sum(1) <= 2).all()
    elif check == "iterative":
        assert [row["step"] for row in report.trajectory] == [0, 1]
        assert report.trajectory[-1]["sparsity"] == pytest.approx(0.5)
        assert data["compressed"]["macs"] <= 0.55 * data["dense"]["macs"]
    else:
        assert report.trajectory and all("accepted" in row for row in report.trajectory)
        assert data["compressed"]["macs"] < data["dense"]["macs"]


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_option_reports_size_and_accuracy(tmp_path, bits):
    recipe = apply_overrides(load_recipe(builtin_recipe_path("digits_demo")), {
        **MINIMAL, "output_dir": str(tmp_path / "run"), "model.builtin": "mlp",
        "model.kwargs": {"in_features": 64, "hidden": [256, 128], "num_classes": 10},
        "quantization.weight_only": {"bits": bits, "group_size": 64}, "pruning.enabled": False,
    }, source="test")
    report = run_recipe(recipe)
    (row,) = [r for r in report.deployment if r["runtime"].startswith("weight-only")]
    # Linear weights 256x64, 128x256, 10x128 = 50,432 floats = 201,728 bytes.
    # int8: a byte per weight + a float32 scale per row: 50,432 + 4 * (256 + 128 + 10) = 52,008 bytes.
    # int4, groups of 64: half a byte per weight + a scale per row and group:
    #   256*32 + 256*1*4 + 128*128 + 128*4*4 + 10*64 + 10*2*4 = 28,368 bytes.
    expected = {8: 52_008 / 201_728, 4: 28_368 / 201_728}[bits]
    assert row["linear_weight_ratio"] == pytest.approx(expected, abs=1e-4)
    saved = tmp_path / "run" / "compressed" / f"weight_only_int{bits}.safetensors"
    assert saved.stat().st_size == row["file_bytes"]
    assert saved.stat().st_size < (tmp_path / "run" / "compressed" / "model.safetensors").stat().st_size
    assert abs(row["accuracy_delta"]) <= 0.05


def test_regression_int8_check_compares_r2_not_a_missing_accuracy(tmp_path):
    """The int8 fallback of a regression model scores both files by R² on the validation split
    (it read an 'accuracy' that regression has none of: 0 vs 0, any int8 error accepted)."""
    from prunekit.evaluation.metrics import evaluate, onnx_predictor
    from prunekit.recipes.sources import load_data

    recipe = apply_overrides(load_recipe(builtin_recipe_path("digits_demo")), {
        **MINIMAL, "output_dir": str(tmp_path / "run"), "data": {"builtin": "synthetic_regression", "task": "regression"},
        "model.builtin": "mlp", "model.kwargs": {"in_features": 16, "hidden": [64], "num_classes": 1},
        "model.train_baseline.epochs": 20, "pruning.target.ratio": 0.3, "quantization.mode": "static",
        "quantization.tolerance": 0.05, "recovery.epochs": 2,
    }, source="test")
    report = run_recipe(recipe)
    q = report.quantization
    assert 0.5 < q.float_accuracy <= 1.0 and 0.5 < q.int8_accuracy <= 1.0  # R² of a fitted linear target
    bundle = load_data(recipe.data, seed=recipe.seed)
    fp32 = evaluate(onnx_predictor(tmp_path / "run" / "quantization" / "model_fp32.onnx"), bundle.val, task="regression")
    assert q.float_accuracy == pytest.approx(fp32["r2"], abs=1e-6)
    html = (tmp_path / "run" / "report.html").read_text()
    assert "float R² (validation split)" in html and "int8 R² (validation split)" in html
