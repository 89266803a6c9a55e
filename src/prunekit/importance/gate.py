"""Criteria on per-sample unit gates: Taylor, Fisher and OBD of removing a whole unit.

With ``g_n = dL_n/dgate`` the gradient of sample ``n``'s loss with respect to the unit's gate
(:mod:`prunekit.importance.gates`; the gate multiplies every value its consumers read, so
gate = 0 is the removal) and ``H_n`` the gate's second derivative, the loss change of removing
the unit (gate 1 -> 0) is ``-g_n + H_n / 2 - ...`` per sample. The criteria:

* ``taylor`` (Molchanov et al., CVPR 2019, squared gate gradient): accumulated per sample,
  ``E_n[g_n**2]`` (``accumulate="sample"``, the default), or per batch as in the paper,
  ``mean over batches of (dL_batch/dgate)**2`` with ``L_batch`` the batch-mean loss
  (``accumulate="batch"``, registered as ``taylor_batch``). Squaring before averaging keeps signs
  from cancelling on a trained model, where ``E_n[g_n]`` is close to zero. Measured in
  ``benchmarks/criteria_oracle.py``: per batch (with 64-sample batches, close to ``E_n[g_n]**2``)
  follows the single-unit oracle more closely, but per sample keeps the units whose effect is
  large on some samples and cancels on average, and prunes far better one-shot; hence the default.
* ``fisher`` (Theis et al. 2018): ``0.5 * E_n[g_n**2]``, the Fisher information of the gate
  (the per-sample Taylor, halved: same ranking, kept under the paper's name).
* ``obd`` (LeCun et al. 1990, on the gate, whose value is 1): ``0.5 * E_n[H_n]``, the per-sample
  gate Hessian diagonal, exact for groups of at most ``collect(exact_hessian_units=64)`` units
  (one double backward per unit and batch) and from Hutchinson probes beyond; one probe's
  cross-unit noise cost it a third of its Spearman with the oracle on the digits CNN
  (``docs/criteria.md``). It stays informative when every first-order term is
  exactly zero (a distance to a dense teacher's output at the dense model), because there the
  Hessian is the Gauss-Newton ``J^T J`` of the distance.
* ``output_sensitivity``: ``0.5 * E_n[|dy_n/dgate|^2]`` over all model outputs ``y``, the
  Gauss-Newton diagonal. For a squared distance to the dense outputs it is that loss's exact
  curvature at the dense model (so the second-order loss increase of removing the unit), like
  ``obd`` there but never negative and without Hutchinson's cross-unit noise (random projections of
  the outputs instead of the gates). It needs no loss and no targets: the criterion for losses
  whose gradient vanishes at the dense model (distillation to a dense teacher).
* :class:`TaylorFirstOrder` ``-E_n[g_n]``, the signed first-order estimate of the loss increase
  (exact when the loss is linear in the gate) and :class:`TaylorSecondOrder`
  ``-E_n[g_n] + 0.5 E_n[H_n]``: estimates of the single-unit loss change, not registered as
  pruning criteria because one-shot they prune worse than random in ``docs/criteria.md`` (units
  whose removal lowers the training loss to first order go first, and removing many of them
  together breaks the model).
"""

from __future__ import annotations

from typing import Literal

import torch

from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import InvalidParameterError
from prunekit.importance.base import CRITERIA, ScoreContext, UnscorableGroupError
from prunekit.importance.gates import GateStats


class _GateCriterion:
    name = "gate"
    requires = frozenset({"gates"})
    constant_reason = (  # what an all-zero score means, for DegenerateScoresError
        "every per-sample gate gradient is exactly 0: the calibration loss does not change to first order "
        "when these units change (e.g. a distance to the dense model's own outputs, at its minimum there); "
        "use criterion 'obd' (the gate's second derivative) or a task loss"
    )

    def stats(self, group: ChannelGroup, ctx: ScoreContext) -> GateStats:
        stats = ctx.gates.get(group.id)
        if stats is None:
            raise UnscorableGroupError(
                f"criterion '{self.name}' cannot score group '{group.id}': no gate site of it ran during "
                f"calibration (no consumer or producer module of the group is called as a module)"
            )
        return stats

    def score(self, stats: GateStats) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define score(stats)")

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return self.score(self.stats(group, ctx)).float()  # (size,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GateTaylor(_GateCriterion):
    """Squared gate gradient, averaged per batch (the paper) or per sample; see the module doc."""

    name = "taylor"

    def __init__(self, accumulate: Literal["batch", "sample"] = "sample") -> None:
        if accumulate not in ("batch", "sample"):
            raise InvalidParameterError(
                f"The 'accumulate' parameter of GateTaylor must be 'batch' or 'sample'. Got {accumulate!r} instead."
            )
        self.accumulate = accumulate

    def score(self, stats: GateStats) -> torch.Tensor:
        if self.accumulate == "sample":
            return stats.mean_sq
        return stats.batch_mean_sq / max(stats.batches, 1)

    def __repr__(self) -> str:
        return f"GateTaylor(accumulate={self.accumulate!r})"


class TaylorFirstOrder(_GateCriterion):
    """``-E_n[dL_n/dgate]``: the first-order estimate of the loss increase of removing the unit."""

    name = "taylor_first_order"

    def score(self, stats: GateStats) -> torch.Tensor:
        return -stats.mean


class GateFisher(_GateCriterion):
    """``0.5 * E_n[(dL_n/dgate)**2]`` (Theis et al. 2018)."""

    name = "fisher"

    def score(self, stats: GateStats) -> torch.Tensor:
        return 0.5 * stats.mean_sq


class GateOBD(_GateCriterion):
    """``0.5 * E_n[d2L_n/dgate2]`` (exact for small groups, else Hutchinson; negative where the loss is concave)."""

    name = "obd"
    requires = frozenset({"gates", "gate_hessian"})
    constant_reason = (
        "every per-sample second derivative of the loss in these units' gates is exactly 0: the loss is "
        "linear in them (e.g. a linear loss after the last nonlinearity); use 'taylor' or a curved loss"
    )

    def score(self, stats: GateStats) -> torch.Tensor:
        return 0.5 * stats.hessian


class OutputSensitivity(_GateCriterion):
    """``0.5 * E_n[|dy_n/dgate|^2]``, the Gauss-Newton curvature of the outputs in the gate; see the module doc."""

    name = "output_sensitivity"
    requires = frozenset({"gate_ggn"})
    constant_reason = ("the model outputs do not depend on these units at all (every output Jacobian "
                       "column is 0)")

    def score(self, stats: GateStats) -> torch.Tensor:
        return 0.5 * stats.output_sensitivity


class TaylorSecondOrder(_GateCriterion):
    """``-E_n[g_n] + 0.5 * E_n[H_n]``: the second-order estimate of the loss increase."""

    name = "taylor_second_order"
    requires = frozenset({"gates", "gate_hessian"})

    def score(self, stats: GateStats) -> torch.Tensor:
        return -stats.mean + 0.5 * stats.hessian


CRITERIA.register("taylor")(GateTaylor)
CRITERIA.register("taylor_batch")(lambda **_: GateTaylor("batch"))
CRITERIA.register("fisher")(GateFisher)
CRITERIA.register("obd")(GateOBD)
CRITERIA.register("output_sensitivity")(OutputSensitivity)
