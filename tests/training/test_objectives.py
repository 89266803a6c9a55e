"""Losses for embedding and language models, and the zero-gradient trap of distances at the dense model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.training.objectives import (
    calibration_loss, contrastive_to_reference, cosine_distance, lm_distillation_loss, lm_loss,
)


def test_cosine_distance_by_hand():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert float(cosine_distance(s, t)) == pytest.approx(((1 - 0) + (1 - 1)) / 2)


def test_contrastive_loss_by_hand_and_needs_two_texts():
    e = torch.eye(3)  # orthogonal rows: logits 1/T on the diagonal, 0 elsewhere
    expected = -math.log(math.e / (math.e + 2))
    assert float(contrastive_to_reference(e, e, temperature=1.0)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(InvalidParameterError, match="needs batches of at least 2 texts"):
        contrastive_to_reference(e[:1], e[:1])


def test_lm_loss_shifts_and_skips_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[1, 2, 3, 4], [0, 1, -100, -100]])
    # position t predicts token t+1: pairs (logit row, target)
    rows = [(0, 0, 2), (0, 1, 3), (0, 2, 4), (1, 0, 1)]
    expected = sum(F.cross_entropy(logits[b, t][None], torch.tensor([y])) for b, t, y in rows) / len(rows)
    assert float(lm_loss(logits, labels)) == pytest.approx(float(expected), rel=1e-6)


def test_lm_distillation_is_zero_against_itself_without_labels_weight():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    labels = torch.tensor([[1, 2, 3], [4, -100, -100]])
    assert float(lm_distillation_loss(logits, logits, labels, temperature=2.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    mixed = lm_distillation_loss(logits, logits, labels, temperature=2.0, alpha=0.25)
    assert float(mixed) == pytest.approx(0.75 * float(lm_loss(logits, labels)), rel=1e-5)


def test_distance_to_the_dense_model_has_zero_gradient_there_but_calibration_loss_does_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))
    x = torch.randn(12, 6)
    out = model(x)
    distance = cosine_distance(out, out.detach())
    grads = torch.autograd.grad(distance, list(model.parameters()))
    assert max(float(g.abs().max()) for g in grads) < 1e-6  # the trap: every first-order score would be 0
    out = model(x)
    calib = calibration_loss("embedding")(out, None)
    grads = torch.autograd.grad(calib, list(model.parameters()))
    assert float(grads[0].abs().sum()) > 1e-3
    assert calibration_loss("classification") is None and calibration_loss("causal_lm") is lm_loss


def test_finetune_embedding_needs_a_teacher_and_distils_towards_it():
    from torch.utils.data import DataLoader, TensorDataset

    from prunekit.training import FinetuneConfig, finetune
    from prunekit.training.evaluate import evaluate

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8)).eval()
    student = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8))
    x = torch.randn(64, 6)
    loader = DataLoader(TensorDataset(x, torch.full((64,), -1)), batch_size=16)
    with pytest.raises(InvalidParameterError, match="task 'embedding' has no labels to train on; pass teacher="):
        finetune(student, loader, None, task="embedding")
    before = evaluate(student, loader, task="embedding", teacher=teacher)["loss"]
    with torch.no_grad():
        by_hand = float((1 - F.cosine_similarity(student(x), teacher(x))).mean())
    assert before == pytest.approx(by_hand, rel=1e-5)
    finetune(student, loader, loader, config=FinetuneConfig(epochs=20, lr=1e-2), task="embedding", teacher=teacher)
    after = evaluate(student, loader, task="embedding", teacher=teacher)["loss"]
    assert after < 0.5 * before
