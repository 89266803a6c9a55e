"""Importance criteria: one callable per family scoring the units of a channel group.

Names for recipes live in :data:`CRITERIA`: weights only (``l1``, ``l2``, ``bn_scale``,
``lamp``, ``random``); per-sample unit gates (``taylor``, ``taylor_batch``, ``fisher``, ``obd``,
``output_sensitivity``, ``heads``); activations where the unit is
consumed (``apoz``, ``activation``); accumulated weight gradients, kept for their per-weight
form (``gradient``, ``taylor_weight``, ``taylor_elementwise``, ``fisher_weight``, ``obd_weight``,
``obd_weight_hutchinson``). ``docs/criteria.md`` compares them against the loss increase of
removing each unit.
"""

from __future__ import annotations

from prunekit.importance.activation import APoZ, MeanActivation
from prunekit.importance.attention import HeadImportance
from prunekit.importance.base import (
    CRITERIA,
    REQUIREMENTS,
    ActivationStats,
    Criterion,
    DegenerateScoresError,
    ScoreContext,
    UnscorableGroupError,
)
from prunekit.importance.collect import collect
from prunekit.importance.gate import (
    GateFisher,
    GateOBD,
    GateTaylor,
    OutputSensitivity,
    TaylorFirstOrder,
    TaylorSecondOrder,
)
from prunekit.importance.gates import GateStats
from prunekit.importance.gradient import GradientMagnitude, WeightTaylor
from prunekit.importance.hessian import WeightFisher, WeightOBD
from prunekit.importance.magnitude import BNScale, Magnitude
from prunekit.importance.random import RandomCriterion
from prunekit.importance.reduce import NORMALIZERS, REDUCTIONS, Lamp, Normalized, get_normalizer, get_reduction
from prunekit.importance.score import make_criterion, score_groups, weight_scores

CRITERIA.register("lamp")(lambda **kw: Normalized(Magnitude(p=2, **kw), Lamp()))

__all__ = [
    "APoZ", "ActivationStats", "BNScale", "CRITERIA", "Criterion", "DegenerateScoresError", "GateFisher",
    "GateOBD", "GateStats", "GateTaylor", "GradientMagnitude", "HeadImportance", "Lamp", "Magnitude",
    "MeanActivation", "NORMALIZERS", "Normalized", "OutputSensitivity", "REDUCTIONS", "REQUIREMENTS", "RandomCriterion",
    "ScoreContext", "TaylorFirstOrder", "TaylorSecondOrder", "UnscorableGroupError", "WeightFisher",
    "WeightOBD", "WeightTaylor",
    "collect", "get_normalizer", "get_reduction", "make_criterion", "score_groups", "weight_scores",
]
