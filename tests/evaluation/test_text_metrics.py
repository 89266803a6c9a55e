"""Cosine fidelity, the linear probe and perplexity, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prunekit.errors import InvalidParameterError
from prunekit.evaluation.text_metrics import cosine_fidelity, embedding_metrics, linear_probe, perplexity


def test_cosine_fidelity_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    out = cosine_fidelity(a, b)
    expected = [1.0, 0.0, 1.0, 1 / math.sqrt(2)]
    assert out["cosine_mean"] == pytest.approx(sum(expected) / 4)
    assert out["cosine_min"] == pytest.approx(0.0)
    with pytest.raises(InvalidParameterError, match="needs embeddings of one shape"):
        cosine_fidelity(a, b[:2])


def test_linear_probe_separates_separable_classes_and_skips_unlabelled():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 4, generator=g)
    y = (x[:, 0] > 0).long()
    y_test = y.clone()
    y_test[:5] = -1  # unlabelled rows are not scored
    out = linear_probe(x, y, x, y_test, c=100.0)
    assert out["probe_accuracy"] == 1.0 and out["probe_f1_macro"] == 1.0
    with pytest.raises(InvalidParameterError, match="at least 2 classes"):
        linear_probe(x, torch.zeros(80, dtype=torch.long), x, y)


def test_perplexity_is_exp_of_mean_token_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, 3], [4, 0, -100]])
    loader = [({"input_ids": labels.clamp(min=0)}, labels)]
    out = perplexity(lambda inputs: logits, loader)
    pairs = [(0, 0, 2), (0, 1, 3), (1, 0, 0)]
    mean = sum(float(F.cross_entropy(logits[b, t][None], torch.tensor([y]))) for b, t, y in pairs) / 3
    assert out["tokens"] == 3 and out["perplexity"] == pytest.approx(math.exp(mean), rel=1e-6)


def test_embedding_metrics_probe_on_its_own_train_embeddings():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g)
    y = (x[:, 1] > 0).long()
    train = [(x[:20], y[:20])]
    test = [(x[20:], y[20:])]
    out = embedding_metrics(lambda inputs: inputs * 2.0, test, reference=x[20:], train=train)
    assert out["cosine_mean"] == pytest.approx(1.0)  # scaling keeps the direction
    assert out["probe_accuracy"] >= 0.9 and out["n"] == 20
