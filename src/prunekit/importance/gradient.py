"""Weight-gradient criteria: gradient magnitude and the accumulated-gradient Taylor variants.

Gradients come from the context: the mean over calibration batches of the gradient of the
batch-mean loss (``ctx.grads``), so per-batch signs cancel on a trained model (where the mean
gradient is close to zero) and the scores are mostly noise there
(``benchmarks/criteria_oracle.py``). Registered as ``gradient``, ``taylor_weight`` and
``taylor_elementwise``; the unit-removal Taylor criterion ``taylor`` lives in
:mod:`prunekit.importance.gate`. They keep a per-weight form (``weight_scores``).
"""

from __future__ import annotations

from typing import Callable, Iterable, Literal

import torch

from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import InvalidParameterError
from prunekit.importance._slotwise import SlotCriterion
from prunekit.importance.base import CRITERIA, ROLES, ScoreContext


class GradientMagnitude(SlotCriterion):
    """``|dL/dw|`` per weight, summed per unit in each slot, reduced across slots."""

    name = "gradient"
    requires = frozenset({"grads"})

    def weight_scores(self, name: str, ctx: ScoreContext) -> torch.Tensor:
        return ctx.grad(name).abs()


class WeightTaylor(SlotCriterion):
    """First-order Taylor estimate of the loss change when a unit is removed.

    ``variant="group"`` (default; Molchanov et al. 2019, with |.| instead of the square): the
    gradient of a gate on the whole unit, ``|sum over every scored slot, position and axis of
    w * dL/dw|``: signed products are summed across slots *before* the absolute value, so
    ``reduction`` does not apply. ``variant="elementwise"``: ``sum |w * dL/dw|`` per unit in each
    slot, then ``reduction`` across slots. ``weight_scores`` is ``|w * dL/dw|``.
    """

    name = "taylor_weight"
    requires = frozenset({"weights", "grads"})

    def __init__(self, variant: Literal["group", "elementwise"] = "group", *,
                 reduction: str | Callable = "mean", roles: Iterable[str] = ROLES,
                 include_bias: bool = False) -> None:
        super().__init__(reduction=reduction, roles=roles, include_bias=include_bias)
        self.variant = variant

    def weight_scores(self, name: str, ctx: ScoreContext) -> torch.Tensor:
        return (ctx.tensor(name) * ctx.grad(name)).abs()

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        if self.variant == "elementwise":
            return super().__call__(group, ctx)
        if self.variant != "group":
            raise InvalidParameterError(
                f"The 'variant' parameter of WeightTaylor must be 'group' or 'elementwise'. Got {self.variant!r} instead."
            )
        signed = [self._fold(ctx.tensor(s.tensor) * ctx.grad(s.tensor), s, group) for s in self.slots(group, ctx)]
        return torch.stack(signed).sum(0).abs()  # (size,)

    def __repr__(self) -> str:
        return f"WeightTaylor(variant={self.variant!r}, reduction={self.reduction!r})"


CRITERIA.register("gradient")(GradientMagnitude)
CRITERIA.register("taylor_weight")(WeightTaylor)
CRITERIA.register("taylor_elementwise")(lambda **kw: WeightTaylor("elementwise", **kw))
