from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.errors import InvalidParameterError, SourceError
from prunekit.evaluation.metrics import (
    classification_metrics,
    evaluate,
    onnx_predictor,
    regression_metrics,
    torch_predictor,
)

# supports 3/2/1; per class (P, R, F1): 0 -> (1, 2/3, .8), 1 -> (.5, .5, .5), 2 -> (.5, 1, 2/3)
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_classification_metrics_match_hand_computation() -> None:
    m = classification_metrics(np.array(Y_TRUE), torch.tensor(Y_PRED), num_classes=3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_macro"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["precision_weighted"] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)
    assert m["recall_weighted"] == pytest.approx(4 / 6)
    assert m["f1_weighted"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_confusion_matrix_keeps_absent_classes_and_unpredicted_class_scores_zero() -> None:
    m = classification_metrics([0, 1], [0, 0], num_classes=4)
    assert m["confusion_matrix"] == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert m["precision_macro"] == pytest.approx(0.5 / 4)  # class 0 precision 1/2, the rest 0


def test_classification_metrics_agree_with_sklearn_on_random_labels() -> None:
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    m = classification_metrics(t, p, num_classes=5)
    assert m["f1_macro"] == pytest.approx(skm.f1_score(t, p, average="macro"))
    assert m["precision_weighted"] == pytest.approx(skm.precision_score(t, p, average="weighted"))
    assert np.array_equal(np.array(m["confusion_matrix"]), skm.confusion_matrix(t, p))


def test_classification_metrics_rejects_bad_num_classes() -> None:
    with pytest.raises(InvalidParameterError, match="num_classes"):
        classification_metrics([0], [0], num_classes=1)


def test_regression_metrics_match_hand_computation() -> None:
    m = regression_metrics(torch.tensor([1.0, 2.0, 3.0, 4.0]), np.array([[1.0], [2.0], [3.0], [5.0]]))
    assert m == pytest.approx({"mse": 0.25, "mae": 0.25, "r2": 1 - 1 / 5})  # SS_tot = 2.25+.25+.25+2.25


def _fixed_logits_model() -> nn.Module:
    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    return model


def test_evaluate_scores_all_batches_and_reports_cross_entropy() -> None:
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [1.0, 3.0], [3.0, 1.0]])
    y = torch.tensor([0, 1, 2, 0, 0])  # predictions: 0, 1, 2, 1, 0 -> 4 of 5 right
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    model = _fixed_logits_model()
    result = evaluate(torch_predictor(model), loader, task="classification", num_classes=3)
    assert result["n"] == 5
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["loss"] == pytest.approx(float(F.cross_entropy(model(x).detach(), y)))


def test_evaluate_regression_loss_is_mse() -> None:
    x = torch.arange(6, dtype=torch.float32).view(3, 2)
    y = torch.tensor([1.0, 0.0, 0.0])
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)  # outputs 0.5, 2.5, 4.5 -> errors -.5, 2.5, 4.5
    result = evaluate(torch_predictor(model), DataLoader(TensorDataset(x, y), batch_size=2), task="regression")
    assert result["mse"] == pytest.approx((0.25 + 6.25 + 20.25) / 3)
    assert result["loss"] == pytest.approx(result["mse"])
    assert result["n"] == 3


def test_torch_predictor_runs_in_eval_mode_and_restores_training_flag() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    before = model[1].running_mean.clone()
    out = torch_predictor(model)(torch.randn(8, 4))
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, before)  # eval mode: running stats untouched
    assert not out.requires_grad


def test_empty_loader_raises_source_error() -> None:
    with pytest.raises(SourceError, match="empty loader"):
        evaluate(lambda x: x, [], task="classification", num_classes=2)


def test_evaluate_validates_task_and_num_classes() -> None:
    with pytest.raises(InvalidParameterError, match="task"):
        evaluate(lambda x: x, [], task="ranking")
    with pytest.raises(InvalidParameterError, match="num_classes"):
        evaluate(lambda x: x, [], task="classification")


def test_onnx_predictor_matches_torch_and_scores_the_same(tiny_onnx) -> None:
    path, model = tiny_onnx
    torch.manual_seed(1)
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    predict = onnx_predictor(path, threads=1)
    torch.testing.assert_close(predict(x), model(x).detach(), rtol=1e-4, atol=1e-5)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    a = evaluate(predict, loader, task="classification", num_classes=3)
    b = evaluate(torch_predictor(model), loader, task="classification", num_classes=3)
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_onnx_predictor_missing_file(tmp_path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        onnx_predictor(tmp_path / "nope.onnx")


def test_quality_score_is_the_tasks_own_number_higher_is_better():
    from prunekit.evaluation.metrics import quality_label, quality_score

    assert quality_score({"accuracy": 0.9, "loss": 0.3}, "classification") == 0.9
    assert quality_score({"mse": 0.2, "r2": 0.75, "loss": 0.2}, "regression") == 0.75
    assert quality_score({"cosine_mean": 0.93}, "embedding") == 0.93
    assert quality_score({"loss": 2.5, "perplexity": 12.18}, "causal_lm") == -2.5
    assert quality_label("regression") == "R²"
    # a regression model has no accuracy: reading one gave 0 for float and int8 alike
    with pytest.raises(InvalidParameterError, match="the regression metrics have no finite 'r2'"):
        quality_score({"mse": 0.2, "r2": float("nan")}, "regression")
    with pytest.raises(InvalidParameterError, match="task must be one of"):
        quality_score({"accuracy": 1.0}, "ranking")
