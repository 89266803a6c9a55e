"""The zoo's equivalence measure: relative to the output's own scale, on outputs of order one."""

from __future__ import annotations

import torch
from torch import nn

from models import PruneCheck, order_one, output_scale

torch.set_num_threads(1)


def test_relative_diff_is_not_vacuous_for_tiny_outputs() -> None:
    tiny = PruneCheck(graph=None, plan=None, pruned=None, max_diff=1e-9, exact=True,
                      params_before=0, params_after=0, scale=1e-8)
    assert tiny.relative_diff == 1e-9 / 1e-8  # the old max(1, scale) gave 1e-9: below any tolerance
    assert PruneCheck(None, None, None, 0.0, True, 0, 0, 0.0).relative_diff == 0.0


def test_order_one_lifts_a_vanishing_network() -> None:
    torch.manual_seed(0)
    layers = []
    for _ in range(6):  # std-0.02 convs, BN statistics (0, 1): outputs vanish like random-init EfficientNet's
        conv, bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        nn.init.normal_(conv.weight, std=0.02), nn.init.zeros_(conv.bias)
        layers += [conv, bn, nn.ReLU()]
    head = nn.Linear(8, 3)
    nn.init.zeros_(head.bias)  # the features vanish; re-drawing the head alone cannot lift them
    model = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    x = torch.randn(2, 3, 8, 8)
    assert output_scale(model, x) < 1e-3
    assert 0.1 < output_scale(order_one(model, x), x) < 100
    assert not model.training
