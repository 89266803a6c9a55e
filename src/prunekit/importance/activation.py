"""Activation statistics: APoZ (Hu et al. 2016) and mean |activation|.

Statistics are gathered by ``collect`` with forward hooks on the modules that own a group's
"out" slots, on their raw output (channel axis 1 for convolutions, the last axis otherwise),
before any following norm or activation. APoZ uses ReLU semantics: an element counts as zero
when it is ``<= 0``. Several positions per unit (heads) are averaged; several producer modules
(a residual sum) are combined with ``reduction``.
"""

from __future__ import annotations

from typing import Callable

import torch

from prunekit.dependency.groups import ChannelGroup
from prunekit.importance.base import CRITERIA, ActivationStats, ScoreContext, UnscorableGroupError
from prunekit.importance.reduce import get_reduction


class _ActivationCriterion:
    name = "activation"
    requires = frozenset({"activations"})

    def __init__(self, *, reduction: str | Callable = "mean") -> None:
        self.reduction = reduction

    def statistic(self, stats: ActivationStats) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define statistic(stats)")

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        per_slot, seen = [], set()
        for slot in group.slots_with_role("out"):
            stats = ctx.activations.get(slot.module)
            if slot.module in seen or stats is None or stats.count.numel() != len(slot.unit_of_position):
                continue
            seen.add(slot.module)
            value = self.statistic(stats).float()  # (features,)
            positions = slot.scatter(torch.ones_like(value), group.size)  # (size,) positions per unit
            per_slot.append(slot.scatter(value, group.size) / positions.clamp_min(1))
        if not per_slot:
            raise UnscorableGroupError(
                f"criterion '{self.name}' cannot score group '{group.id}': no activation statistics were "
                f"collected for the modules owning its 'out' slots"
            )
        return get_reduction(self.reduction, type(self).__name__)(torch.stack(per_slot))  # (size,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class APoZ(_ActivationCriterion):
    """Importance ``1 - APoZ``: units that are rarely positive matter little."""

    name = "apoz"

    def statistic(self, stats: ActivationStats) -> torch.Tensor:
        return 1.0 - stats.apoz


class MeanActivation(_ActivationCriterion):
    """Mean ``|a|`` of the unit's output over every calibration element."""

    name = "activation"

    def statistic(self, stats: ActivationStats) -> torch.Tensor:
        return stats.mean_abs


CRITERIA.register("apoz")(APoZ)
CRITERIA.register("activation")(MeanActivation)
