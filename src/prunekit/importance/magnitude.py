"""Weight magnitude (L1, L2) and BatchNorm scale (network slimming, Liu et al. 2017)."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from prunekit.dependency.groups import ChannelGroup, Slot
from prunekit.errors import InvalidParameterError
from prunekit.importance._slotwise import SlotCriterion
from prunekit.importance.base import CRITERIA, ROLES, ScoreContext, is_bias, require_slots


class Magnitude(SlotCriterion):
    """Lp norm of each unit's weights in each slot, reduced across slots.

    Per slot: ``(sum over the unit's positions and all other axes of |w|**p) ** (1/p)``.
    ``weight_scores`` gives ``|w|`` (the unstructured magnitude, whatever ``p``).
    """

    name = "magnitude"

    def __init__(self, p: int = 2, *, reduction: str | Callable = "mean", roles: Iterable[str] = ROLES,
                 include_bias: bool = False) -> None:
        super().__init__(reduction=reduction, roles=roles, include_bias=include_bias)
        self.p = p

    def weight_scores(self, name: str, ctx: ScoreContext) -> torch.Tensor:
        return ctx.tensor(name).abs()

    def unit_scores(self, slot: Slot, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        if self.p not in (1, 2):
            raise InvalidParameterError(f"The 'p' parameter of Magnitude must be 1 or 2. Got {self.p!r} instead.")
        powered = self.weight_scores(slot.tensor, ctx) ** self.p
        total = self._fold(powered, slot, group)  # (size,)
        return total if self.p == 1 else total.sqrt()

    def __repr__(self) -> str:
        return f"Magnitude(p={self.p}, reduction={self.reduction!r})"


class BNScale:
    """|gamma| of the group's BatchNorm/affine-norm weights (network slimming).

    Only "norm" slots on parameters named ``weight`` count; a group without one cannot be scored
    (:class:`UnscorableGroupError`) and is skipped by the pruner. Several norms: ``reduction``.
    """

    name = "bn_scale"
    requires = frozenset({"weights"})

    def __init__(self, *, reduction: str | Callable = "mean") -> None:
        self.reduction = reduction

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        from prunekit.importance.reduce import get_reduction

        slots = [s for s in group.slots_with_role("norm")
                 if s.tensor in ctx.params and not is_bias(s.tensor) and ctx.tensors[s.tensor].dim() == 1]
        slots = require_slots(slots, group, self.name, "affine normalization weight (BatchNorm gamma)")
        per_slot = torch.stack([s.scatter(ctx.tensor(s.tensor).abs(), group.size) for s in slots])
        return get_reduction(self.reduction, "BNScale")(per_slot)  # (size,)

    def __repr__(self) -> str:
        return f"BNScale(reduction={self.reduction!r})"


CRITERIA.register("l1")(lambda **kw: Magnitude(p=1, **kw))
CRITERIA.register("l2")(lambda **kw: Magnitude(p=2, **kw))
CRITERIA.register("bn_scale")(BNScale)
