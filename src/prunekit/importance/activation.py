"""Activation statistics: APoZ (Hu et al. 2016) and mean |activation|, where the unit is consumed.

``collect`` reads each group's value at its gate sites (:mod:`prunekit.importance.gates`): the
inputs of the modules that consume it, i.e. after the norm and nonlinearity that follow the
producer (conv -> BN -> ReLU -> *here* -> next conv), after the residual sum and its ReLU in a
residual stream, and the head outputs for attention heads. So APoZ counts what the paper counts,
zeros after the ReLU. Several positions per unit (heads, flatten) and several consumers are
pooled: every element read counts once. Groups with no consumer module fall back to the
producer's raw output.

APoZ refuses (:class:`UnscorableGroupError`, the group is left whole and the pruner says why)
any group whose consumed value is ever negative: no ReLU-family nonlinearity makes its zeros
(a LayerNorm output, GELU, attention heads, a raw producer output), so "the percentage of
zeros" would be the percentage of negative values, a property of the offset and not of how much
the unit is used. Scoring such groups anyway gave a transformer's groups a mean Spearman of +0.02
with the single-unit oracle in ``docs/criteria.md``. Where it is defined it is still weak there
(below random one-shot in every cell it scores), so constructing it warns. ``activation`` (mean ``|a|``) means the same
thing everywhere and stays available there, as does ``output_sensitivity``.
"""

from __future__ import annotations

import warnings

import torch

from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import PrunekitWarning
from prunekit.importance.base import CRITERIA, ActivationStats, ScoreContext, UnscorableGroupError


class _ActivationCriterion:
    name = "activation"
    requires = frozenset({"activations"})

    def __init__(self, **_: object) -> None:
        pass

    def statistic(self, stats: ActivationStats) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define statistic(stats)")

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        stats = ctx.activations.get(group.id)
        if stats is None or stats.count.numel() != group.size:
            raise UnscorableGroupError(
                f"criterion '{self.name}' cannot score group '{group.id}': no activation statistics were "
                f"collected where its units are consumed (no consumer or producer module ran as a module)"
            )
        return self.statistic(stats).float()  # (size,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class APoZ(_ActivationCriterion):
    """Importance ``1 - APoZ``: units that are rarely positive where consumed matter little."""

    name = "apoz"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        # measured, not assumed: docs/criteria.md (benchmarks/criteria_oracle.py, three seeds)
        warnings.warn("criterion 'apoz' ranked units below random one-shot in all 6 cells it could score in "
                      "docs/criteria.md (Spearman +0.09 with the cost of removing a unit, l2 +0.47); it is kept "
                      "for comparison: prefer 'output_sensitivity' (the default) or 'l2'", PrunekitWarning,
                      stacklevel=2)

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        scores = super().__call__(group, ctx)
        negative = ctx.activations[group.id].negative
        if negative is not None and bool((negative > 0).any()):
            count = ctx.activations[group.id].count
            raise UnscorableGroupError(
                f"criterion 'apoz' cannot score group '{group.id}': {int(negative.sum())} of {int(count.sum())} "
                f"values its consumers read are negative, so no ReLU makes its zeros and the percentage of "
                f"zeros means nothing there; use 'activation' or 'output_sensitivity' for this group"
            )
        return scores

    def statistic(self, stats: ActivationStats) -> torch.Tensor:
        return 1.0 - stats.apoz


class MeanActivation(_ActivationCriterion):
    """Mean ``|a|`` of the consumed value over every calibration element."""

    name = "activation"

    def statistic(self, stats: ActivationStats) -> torch.Tensor:
        return stats.mean_abs


CRITERIA.register("apoz")(APoZ)
CRITERIA.register("activation")(MeanActivation)
