from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.dependency.groups import ChannelGroup, Slot
from prunekit.errors import InvalidParameterError
from prunekit.training import (
    FinetuneConfig, bn_scale_penalty, finetune, group_lasso_penalty, l1_penalty, l2_penalty,
)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def _hidden_group(units: list[int], size: int) -> ChannelGroup:
    """The 4 hidden channels: rows of 0.weight/0.bias, BN params and stats, columns of 3.weight."""
    u = np.asarray(units, dtype=np.int64)
    slots = (
        Slot("0.weight", 0, u, "out", "0"), Slot("0.bias", 0, u, "out", "0"),
        Slot("1.weight", 0, u, "norm", "1"), Slot("1.bias", 0, u, "norm", "1"),
        Slot("1.running_mean", 0, u, "norm", "1"), Slot("3.weight", 1, u, "in", "3"),
    )
    return ChannelGroup(id="0:out", size=size, slots=slots)


def _by_hand(net: nn.Sequential, units: list[int], size: int) -> float:
    sq = [0.0] * size
    w0, b0 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    g, b, w3 = net[1].weight.detach().numpy(), net[1].bias.detach().numpy(), net[3].weight.detach().numpy()
    for p, unit in enumerate(units):
        if unit < 0:
            continue
        sq[unit] += float((w0[p] ** 2).sum() + b0[p] ** 2 + g[p] ** 2 + b[p] ** 2 + (w3[:, p] ** 2).sum())
    return float(sum(np.sqrt(sq)))


def test_l1_l2_bn_scale_hand_values() -> None:
    net = _net()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
    w0, w3 = net[0].weight.detach(), net[3].weight.detach()
    assert l1_penalty(net, weight=0.1).item() == pytest.approx(0.1 * (w0.abs().sum() + w3.abs().sum()).item(), rel=1e-6)
    assert l1_penalty(net, weight=1.0, modules=["3"]).item() == pytest.approx(w3.abs().sum().item(), rel=1e-6)
    assert l2_penalty(net, weight=0.5).item() == pytest.approx(0.5 * ((w0**2).sum() + (w3**2).sum()).item(), rel=1e-6)
    assert bn_scale_penalty(net, 0.2).item() == pytest.approx(0.2 * 3.5)


def test_group_lasso_hand_value_all_slots_and_skipped_positions() -> None:
    net = _net()
    units = [0, 1, 2, 3]
    assert group_lasso_penalty(net, [_hidden_group(units, 4)], 0.3).item() == pytest.approx(0.3 * _by_hand(net, units, 4), rel=1e-6)
    # Two positions per unit, one position owned by another group (-1).
    units = [1, 0, 1, -1]
    assert group_lasso_penalty(net, [_hidden_group(units, 2)], 1.0).item() == pytest.approx(_by_hand(net, units, 2), rel=1e-6)


def test_group_lasso_zero_unit_has_finite_gradient() -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight[2] = 0
        net[0].bias[2] = 0
        net[1].weight[2] = 0
        net[1].bias[2] = 0
        net[3].weight[:, 2] = 0
    group_lasso_penalty(net, [_hidden_group([0, 1, 2, 3], 4)], 1.0).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert net[0].weight.grad[2].abs().sum() == 0


def test_group_lasso_reads_torch_prune_masked_weight() -> None:
    net = _net()
    prune.l1_unstructured(net[0], "weight", amount=0.5)
    net(torch.randn(4, 3))  # the hook recomputes weight = weight_orig * weight_mask
    assert group_lasso_penalty(net, [_hidden_group([0, 1, 2, 3], 4)], 1.0).item() == pytest.approx(
        _by_hand(net, [0, 1, 2, 3], 4), rel=1e-6)


def test_group_lasso_errors() -> None:
    net = _net()
    bad = ChannelGroup("g", 1, (Slot("9.weight", 0, np.zeros(4, dtype=np.int64), "out", "9"),))
    with pytest.raises(InvalidParameterError, match="no tensor '9.weight'"):
        group_lasso_penalty(net, [bad], 1.0)
    stale = ChannelGroup("g", 1, (Slot("0.weight", 0, np.zeros(6, dtype=np.int64), "out", "0"),))
    with pytest.raises(InvalidParameterError, match="rebuild the groups"):
        group_lasso_penalty(net, [stale], 1.0)
    with pytest.raises(InvalidParameterError, match="'weight'.*Got -1"):
        group_lasso_penalty(net, [], -1)
    with pytest.raises(InvalidParameterError, match="no module named 'x'"):
        l1_penalty(net, weight=1.0, modules=["x"])


def _unit_norms(net: nn.Sequential) -> torch.Tensor:
    with torch.no_grad():
        return (net[0].weight.pow(2).sum(1) + net[0].bias.pow(2) + net[1].weight.pow(2) + net[1].bias.pow(2)
                + net[3].weight.pow(2).sum(0)).sqrt()


def test_training_with_group_lasso_drives_units_toward_zero() -> None:
    torch.manual_seed(1)
    x = torch.randn(256, 3)
    y = (x[:, 0] > 0).long()  # one hidden unit is enough
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, generator=torch.Generator())
    norms = {}
    for weight in (0.0, 0.1):
        net = _net()
        cfg = FinetuneConfig(epochs=40, lr=0.1, optimizer="sgd", scheduler="constant", group_lasso=weight)
        groups = [_hidden_group([0, 1, 2, 3], 4)]
        finetune(net, loader, None, config=cfg, groups=groups if weight else None)
        norms[weight] = _unit_norms(net)
    assert (norms[0.0] > 0.5).all()  # without the penalty every unit stays alive
    assert (norms[0.1] < 0.05).sum() >= 2  # with it, at least two units collapse
