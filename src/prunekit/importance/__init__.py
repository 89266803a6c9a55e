"""Importance criteria: one callable per family scoring the units of a channel group.

Names for recipes live in :data:`CRITERIA` (``l1``, ``l2``, ``gradient``, ``taylor``,
``taylor_elementwise``, ``obd``, ``obd_hutchinson``, ``fisher``, ``apoz``, ``activation``,
``bn_scale``, ``heads``, ``random``, ``lamp``).
"""

from __future__ import annotations

from prunekit.importance.activation import APoZ, MeanActivation
from prunekit.importance.attention import HeadImportance
from prunekit.importance.base import (
    CRITERIA,
    REQUIREMENTS,
    ActivationStats,
    Criterion,
    ScoreContext,
    UnscorableGroupError,
)
from prunekit.importance.collect import collect
from prunekit.importance.gradient import GradientMagnitude, Taylor
from prunekit.importance.hessian import OBD, Fisher
from prunekit.importance.magnitude import BNScale, Magnitude
from prunekit.importance.random import RandomCriterion
from prunekit.importance.reduce import NORMALIZERS, REDUCTIONS, Lamp, Normalized, get_normalizer, get_reduction
from prunekit.importance.score import make_criterion, score_groups, weight_scores

CRITERIA.register("lamp")(lambda **kw: Normalized(Magnitude(p=2, **kw), Lamp()))

__all__ = [
    "APoZ", "ActivationStats", "BNScale", "CRITERIA", "Criterion", "Fisher", "GradientMagnitude",
    "HeadImportance", "Lamp", "Magnitude", "MeanActivation", "NORMALIZERS", "Normalized", "OBD",
    "REDUCTIONS", "REQUIREMENTS", "RandomCriterion", "ScoreContext", "Taylor", "UnscorableGroupError",
    "collect", "get_normalizer", "get_reduction", "make_criterion", "score_groups", "weight_scores",
]
