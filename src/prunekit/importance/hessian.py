"""Per-weight second-order criteria: OBD saliency (LeCun et al. 1990) and empirical Fisher.

Registered as ``obd_weight``, ``obd_weight_hutchinson`` and ``fisher_weight``: they score each
weight from accumulated weight gradients, which on a trained model rank units worse than the
gate forms ``obd`` and ``fisher`` of :mod:`prunekit.importance.gate` (``benchmarks/criteria_oracle.py``);
kept for their per-weight form (``weight_scores``, unstructured masks). Both Hessian estimates
are diagonals kept per tensor by ``collect``:

* ``"fisher"``: the empirical Fisher ``mean over batches of (dL/dw)**2``, with ``L`` the
  batch-mean loss (per *batch*, not per sample: with batch size 1 it is the per-sample Fisher;
  with larger batches it is smaller by about the batch size, the same factor for every weight).
* ``"hutchinson"``: ``E[v * Hv]`` with Rademacher ``v`` and ``Hv`` by double backward; it is
  unbiased for diag(H) and may be negative where the loss is locally concave.
"""

from __future__ import annotations

from typing import Callable, Iterable, Literal

import torch

from prunekit.errors import InvalidParameterError
from prunekit.importance._slotwise import SlotCriterion
from prunekit.importance.base import CRITERIA, ROLES, ScoreContext


class WeightOBD(SlotCriterion):
    """Optimal Brain Damage saliency ``0.5 * H_ii * w**2``, summed per unit, reduced across slots."""

    name = "obd_weight"

    def __init__(self, hessian: Literal["fisher", "hutchinson"] = "fisher", *,
                 reduction: str | Callable = "mean", roles: Iterable[str] = ROLES,
                 include_bias: bool = False) -> None:
        super().__init__(reduction=reduction, roles=roles, include_bias=include_bias)
        self.hessian = hessian

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"weights", "hessian" if self.hessian == "hutchinson" else "grads"})

    def weight_scores(self, name: str, ctx: ScoreContext) -> torch.Tensor:
        if self.hessian == "fisher":
            h = ctx.grad_squared(name)
        elif self.hessian == "hutchinson":
            h = ctx.hessian(name)
        else:
            raise InvalidParameterError(
                f"The 'hessian' parameter of WeightOBD must be 'fisher' or 'hutchinson'. Got {self.hessian!r} instead."
            )
        return 0.5 * h * ctx.tensor(name) ** 2

    def __repr__(self) -> str:
        return f"WeightOBD(hessian={self.hessian!r}, reduction={self.reduction!r})"


class WeightFisher(SlotCriterion):
    """Empirical Fisher information ``E[(dL/dw)**2]`` per weight (per batch, see module doc)."""

    name = "fisher_weight"
    requires = frozenset({"grads"})

    def weight_scores(self, name: str, ctx: ScoreContext) -> torch.Tensor:
        return ctx.grad_squared(name)


CRITERIA.register("obd_weight")(WeightOBD)
CRITERIA.register("obd_weight_hutchinson")(lambda **kw: WeightOBD("hutchinson", **kw))
CRITERIA.register("fisher_weight")(WeightFisher)
