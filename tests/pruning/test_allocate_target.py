"""A MAC target lands as close as round_to allows: no group could give back one step and still meet it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.dependency.groups import PruningPlan
from prunekit.evaluation.complexity import count_macs
from prunekit.models import ResNet8
from prunekit.pruning.allocate import constrain
from prunekit.pruning.pruner import StructuredPruner
from prunekit.pruning.surgery import apply_plan


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                                        nn.Linear(84, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28)
        return self.classifier(self.features(x))


def _macs(model: nn.Module, graph, plan: PruningPlan, x: torch.Tensor) -> int:
    return count_macs(apply_plan(model, graph, plan, verify=False)[0], x).total


@pytest.mark.parametrize("build", [LeNet5, lambda: ResNet8(width=32)], ids=["lenet5", "resnet8"])
def test_mac_target_is_within_one_rounding_step_and_no_step_can_be_given_back(build):
    torch.manual_seed(0)
    model, x = build().eval(), torch.randn(1, 1, 28, 28)
    pruner = StructuredPruner(criterion="l2", ratio=0.5, target="macs", scope="global", round_to=8).fit(model, x)
    graph, plan = pruner.graph_, pruner.plan_
    dense = count_macs(model, x).total
    reached = 1 - _macs(model, graph, plan, x) / dense
    assert reached == pytest.approx(plan.meta["achieved"])
    assert reached >= 0.5
    steps = []  # MAC fraction each group would give back with one rounding step fewer removed
    for gid, units in plan.removed.items():
        group = graph.group(gid)
        n = len(units)
        fewer = next((m for m in range(n - 1, -1, -1) if constrain(group, m, round_to=8) < n), None)
        if fewer is None:
            continue
        kept_removed = units[:constrain(group, fewer, round_to=8)]  # MACs depend on counts only
        back = PruningPlan({k: v for k, v in (plan.removed | {gid: kept_removed}).items() if v})
        with_back = 1 - _macs(model, graph, back, x) / dense
        assert with_back < 0.5, f"giving back one step of {gid} still meets the target ({with_back:.4f})"
        steps.append(reached - with_back)
    assert steps, "the plan removed nothing"
    assert reached - 0.5 <= min(steps) + 1e-9  # within one rounding step of the smallest group step
