from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.data.builtin import digits
from prunekit.errors import InvalidParameterError
from prunekit.models.builtin import DigitsCNN
from prunekit.training import FinetuneConfig, evaluate, finetune, recalibrate_batchnorm


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.5), nn.BatchNorm1d(5, momentum=0.3), nn.ReLU(), nn.Linear(5, 2))


def test_stats_equal_hand_computed_cumulative_average_and_modes_restored() -> None:
    net = _net()
    x = torch.randn(64, 6)  # (N, F)
    loader = DataLoader(TensorDataset(x, torch.zeros(64)), batch_size=16)
    net.train()
    net[1].eval()  # a caller's odd mix of modes must survive
    with torch.no_grad():
        net[2].running_mean.add_(5.0)
        net[2].running_var.mul_(10.0)
    assert recalibrate_batchnorm(net, loader, batches=3) == 1
    with torch.no_grad():
        h = net[0](x[:48]).reshape(3, 16, 5)  # dropout must have been off: use pre-dropout features
    assert torch.allclose(net[2].running_mean, h.mean(1).mean(0), atol=1e-6)
    assert torch.allclose(net[2].running_var, h.var(1, unbiased=True).mean(0), atol=1e-6)
    assert net[2].momentum == 0.3
    assert net.training and net[2].training and not net[1].training


def test_recalibration_restores_outputs_after_corrupted_stats() -> None:
    net = _net()
    x = torch.randn(128, 6)
    loader = DataLoader(TensorDataset(x, torch.zeros(128)), batch_size=128)
    net.eval()
    with torch.no_grad():  # reference: stats of the exact data, set by hand
        h = net[0](x)
        net[2].running_mean.copy_(h.mean(0))
        net[2].running_var.copy_(h.var(0, unbiased=True))
        reference = net(x)
        net[2].running_mean.normal_()
        net[2].running_var.uniform_(5, 10)
        assert (net(x) - reference).abs().max() > 0.1
    recalibrate_batchnorm(net, loader)
    with torch.no_grad():
        assert torch.allclose(net(x), reference, atol=1e-5)


def test_recalibration_recovers_accuracy_of_a_trained_cnn() -> None:
    torch.manual_seed(0)
    data = digits(batch_size=64)
    model = DigitsCNN(width=8)
    finetune(model, data.train, None, config=FinetuneConfig(epochs=2, lr=3e-3, optimizer="adam", weight_decay=0.0))
    before = evaluate(model, data.val)["accuracy"]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-2, 2)
                m.running_var.uniform_(0.01, 0.1)
    broken = evaluate(model, data.val)["accuracy"]
    assert recalibrate_batchnorm(model, data.calib) == 4
    after = evaluate(model, data.val)["accuracy"]
    assert before > 0.85 and broken < before - 0.3
    assert after >= before - 0.03


def test_model_without_batchnorm_returns_zero() -> None:
    assert recalibrate_batchnorm(nn.Linear(3, 2), [(torch.randn(2, 3), None)]) == 0


def test_empty_loader_raises_and_keeps_old_stats() -> None:
    net = _net()
    with torch.no_grad():
        net[2].running_mean.fill_(3.0)
    with pytest.raises(InvalidParameterError, match="empty loader"):
        recalibrate_batchnorm(net, [])
    assert torch.equal(net[2].running_mean, torch.full((5,), 3.0))
    assert net[2].momentum == 0.3


def test_batches_must_be_positive_int() -> None:
    with pytest.raises(InvalidParameterError, match="'batches'.*Got 0"):
        recalibrate_batchnorm(_net(), [], batches=0)
