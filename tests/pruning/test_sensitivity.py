from __future__ import annotations

import numpy as np
import pytest
import torch

from prunekit.dependency import build_graph
from prunekit.dependency.groups import ChannelGroup, Slot
from prunekit.errors import InvalidParameterError, PrunekitWarning
from prunekit.evaluation.complexity import count_params
from prunekit.models.builtin import MLP
from prunekit.pruning.sensitivity import (
    allocate_from_sensitivity,
    evaluate_loss_accuracy,
    group_savings,
    sensitivity_scan,
)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = MLP(in_features=4, hidden=(4,), num_classes=3)
    with torch.no_grad():  # hidden units 0 and 1 are dead: zero rows, bias and columns
        model.net[1].weight[:2] = 0
        model.net[1].bias[:2] = 0
        model.net[3].weight[:, :2] = 0
        model.net[1].bias[2:] = 3.0  # live units: always active
    data = [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]
    return model, torch.randn(1, 4), data


def test_scan_prunes_one_group_at_a_time(setup):
    model, x, data = setup
    curves = sensitivity_scan(model, x, data, ratios=(0.25, 0.5, 0.75))
    base = evaluate_loss_accuracy(model, data)
    (gid,) = curves
    ratios = [r for r, _, _ in curves[gid]]
    assert ratios == [0.0, 0.25, 0.5, 0.75]
    assert curves[gid][0][1:] == pytest.approx(base)
    # L2 ranks the two dead units lowest: removing them leaves the function unchanged
    assert curves[gid][1][1:] == pytest.approx(base, abs=1e-6)
    assert curves[gid][2][1:] == pytest.approx(base, abs=1e-6)
    assert curves[gid][3][1] != pytest.approx(base[0], abs=1e-6)


def test_scan_uses_the_given_evaluate(setup):
    model, x, data = setup
    curves = sensitivity_scan(model, x, data, ratios=(0.5,),
                              evaluate=lambda m, d: (float(m.net[1].out_features), 0.0))
    assert list(curves.values())[0] == [(0.0, 4.0, 0.0), (0.5, 2.0, 0.0)]
    with pytest.raises(InvalidParameterError, match="'ratios' parameter"):
        sensitivity_scan(model, x, data, ratios=(1.0,))


def test_group_savings_counts_params_per_unit(setup):
    model, x, data = setup
    graph = build_graph(model, x)
    gid = graph.prunable_groups()[0].id
    curves = {gid: [(0.0, 0, 0), (0.25, 0, 0), (0.5, 0, 0)]}
    total, saved = group_savings(model, graph, curves, {gid: torch.arange(4.0)}, count_params)
    # one hidden unit: 4 weights in + 1 bias + 3 weights out
    assert total == count_params(model) and saved[gid] == [0.0, 8.0, 16.0]


def _g(gid: str) -> ChannelGroup:
    return ChannelGroup(gid, 4, (Slot(f"{gid}.weight", 0, np.arange(4), "out", gid),))


def test_greedy_cuts_where_loss_rises_least_per_cost():
    curves = {
        "a": [(0.0, 1.0, 0.9), (0.25, 1.1, 0.9), (0.5, 2.0, 0.5), (0.75, 5.0, 0.1)],
        "b": [(0.0, 1.0, 0.9), (0.25, 1.0, 0.9), (0.5, 1.3, 0.8), (0.75, 1.4, 0.8)],
    }
    costs = {"a": [0, 10, 20, 30], "b": [0, 1, 2, 3]}
    scores = {"a": torch.tensor([3.0, 0.0, 2.0, 1.0]), "b": torch.tensor([0.0, 1.0, 2.0, 3.0])}
    # steps: b->0.25 (0/1), a->0.25 (0.1/10 = .01) ; then to reach 25 of 100: b->0.75 (.4/2 = .2) vs
    # a->0.5 (.9/10 = .09): a wins, saved 21; then b->0.75 (.2) vs a->0.75 (3.9/20...) -> b, saved 23;
    # then a->0.75 (3.0/10): saved 33
    both = dict(total=100, groups=[_g("a"), _g("b")], scores=scores, interpolate=False)
    plan = allocate_from_sensitivity(curves, costs, 0.25, **both)
    assert plan.meta["ratios"] == {"a": 0.75, "b": 0.75}
    plan = allocate_from_sensitivity(curves, costs, 0.2, **both)
    assert plan.meta["ratios"] == {"a": 0.5, "b": 0.25}
    assert plan.removed == {"a": (1, 3), "b": (0,)} and plan.meta["saved"] == pytest.approx(0.21)


def test_last_jump_stops_where_the_target_is_met():
    curves = {
        "a": [(0.0, 1.0, 0.9), (0.25, 1.1, 0.9), (0.5, 2.0, 0.5), (0.75, 5.0, 0.1)],
        "b": [(0.0, 1.0, 0.9), (0.25, 1.0, 0.9), (0.5, 1.3, 0.8), (0.75, 1.4, 0.8)],
    }
    costs = {"a": [0, 10, 20, 30], "b": [0, 1, 2, 3]}
    scores = {"a": torch.tensor([3.0, 0.0, 2.0, 1.0]), "b": torch.tensor([0.0, 1.0, 2.0, 3.0])}
    both = dict(total=100, groups=[_g("a"), _g("b")], scores=scores)
    # same jumps as above; the last (a: 0.5 -> 0.75, saving 23 -> 33) needs 2 of its 10: 0.2 of the way
    plan = allocate_from_sensitivity(curves, costs, 0.25, **both)
    assert plan.meta["ratios"] == pytest.approx({"a": 0.55, "b": 0.75})
    assert plan.meta["saved"] == pytest.approx(0.25)
    assert plan.removed == {"a": (1, 3), "b": (0, 1, 2)}  # floor(0.55 * 4) = 2 lowest-scored units
    # target 0.2: b -> 0.25, a -> 0.25, a -> 0.5 saves 11 -> 21, 9 of its 10 needed: a at 0.475
    plan = allocate_from_sensitivity(curves, costs, 0.2, **both)
    assert plan.meta["ratios"] == pytest.approx({"a": 0.475, "b": 0.25})
    assert plan.removed == {"a": (1,), "b": (0,)}


def test_unreachable_target_warns():
    curves = {"a": [(0.0, 1.0, 0.9), (0.5, 2.0, 0.5)]}
    with pytest.warns(PrunekitWarning, match="short of the target"):
        plan = allocate_from_sensitivity(curves, {"a": [0, 10]}, 0.5, total=100, groups=[_g("a")],
                                         scores={"a": torch.arange(4.0)})
    assert plan.removed == {"a": (0, 1)}
    with pytest.raises(InvalidParameterError, match="one cost per curve point"):
        allocate_from_sensitivity(curves, {"a": [0]}, 0.5, total=100, groups=[_g("a")], scores={"a": torch.arange(4.0)})
