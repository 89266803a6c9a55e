"""Template for criteria that score each weight, sum per unit within a slot, then reduce slots."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from prunekit.dependency.groups import ChannelGroup, Slot
from prunekit.importance.base import (
    ROLES,
    ScoreContext,
    check_roles,
    param_slots,
    per_position,
    require_slots,
)
from prunekit.importance.reduce import get_reduction


class SlotCriterion:
    """Subclasses give ``weight_scores(name, ctx)`` (one score per weight, tensor-shaped).

    Unit score in one slot = sum of the weight scores at the unit's positions (over every other
    axis of the tensor too); the group score = ``reduction`` over the slots that are parameters
    with a role in ``roles`` (biases only with ``include_bias``).
    """

    name = "slotwise"
    requires: frozenset[str] = frozenset({"weights"})

    def __init__(self, *, reduction: str | Callable = "mean", roles: Iterable[str] = ROLES,
                 include_bias: bool = False) -> None:
        self.reduction = reduction
        self.roles = tuple(roles)
        self.include_bias = include_bias

    def weight_scores(self, name: str, ctx: ScoreContext) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define weight_scores(name, ctx)")

    def unit_scores(self, slot: Slot, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return self._fold(self.weight_scores(slot.tensor, ctx), slot, group)

    @staticmethod
    def _fold(values: torch.Tensor, slot: Slot, group: ChannelGroup) -> torch.Tensor:
        """Sum a tensor-shaped score over the non-slot axes, then over each unit's positions."""
        return slot.scatter(per_position(values, slot.axis), group.size)  # (size,)

    def slots(self, group: ChannelGroup, ctx: ScoreContext) -> list[Slot]:
        roles = check_roles(self.roles, type(self).__name__)
        chosen = param_slots(group, ctx, roles, self.include_bias)
        return require_slots(chosen, group, self.name, f"parameter slot with role in {roles}")

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        reduce = get_reduction(self.reduction, type(self).__name__)
        per_slot = torch.stack([self.unit_scores(s, group, ctx) for s in self.slots(group, ctx)])
        return reduce(per_slot)  # (size,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"
