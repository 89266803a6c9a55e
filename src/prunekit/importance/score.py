"""Turn a criterion name or object into scores for many groups or one tensor."""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Iterable

import torch

from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import InvalidParameterError
from prunekit.importance.base import (
    CRITERIA,
    DATA_DRIVEN,
    REQUIREMENTS,
    Criterion,
    DegenerateScoresError,
    ScoreContext,
    UnscorableGroupError,
)


def make_criterion(criterion: str | Criterion, *, owner: str = "StructuredPruner", **options: Any) -> Criterion:
    """A registered name (``"taylor"``) built with the ``options`` its factory accepts, or the object itself."""
    if isinstance(criterion, str):
        factory = CRITERIA.get(criterion)
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):  # builtins without a signature
            params = {}
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        chosen = {k: v for k, v in options.items() if v is not None and (takes_any or k in params)}
        criterion = factory(**chosen)
    if not callable(criterion) or not isinstance(getattr(criterion, "requires", None), frozenset):
        raise InvalidParameterError(
            f"The 'criterion' parameter of {owner} must be one of {CRITERIA.names()} or a callable with a "
            f"'requires' frozenset. Got {criterion!r} instead."
        )
    if not criterion.requires <= REQUIREMENTS:
        raise InvalidParameterError(
            f"criterion {criterion!r} requires {sorted(criterion.requires)}; allowed tags are {sorted(REQUIREMENTS)}"
        )
    return criterion


def score_groups(groups: Iterable[ChannelGroup], ctx: ScoreContext,
                 criterion: Criterion) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Score every group; groups the criterion cannot measure go to ``skipped`` with the reason.

    Raises :class:`InvalidParameterError` when a score has the wrong shape or is not finite, and
    :class:`DegenerateScoresError` when a data-driven criterion gives every unit of a group the
    same score (it cannot rank them: the calibration signal is missing, see :func:`check_ranks`).
    """
    scores: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for group in groups:
        try:
            s = criterion(group, ctx)
        except UnscorableGroupError as err:
            skipped[group.id] = str(err)
            continue
        s = torch.as_tensor(s).detach().float().cpu()
        if s.shape != (group.size,) or not bool(torch.isfinite(s).all()):
            raise InvalidParameterError(
                f"criterion {criterion!r} gave group '{group.id}' scores of shape {tuple(s.shape)} "
                f"(finite: {bool(torch.isfinite(s).all())}); it must give {group.size} finite scores"
            )
        if criterion.requires & DATA_DRIVEN:
            check_ranks(s, group, criterion)
        scores[group.id] = s
    return scores, skipped


def check_ranks(scores: torch.Tensor, group: ChannelGroup, criterion: Criterion) -> None:
    """Raise :class:`DegenerateScoresError` when all ``group.size > 1`` scores are equal."""
    if group.size < 2 or bool((scores != scores[0]).any()):
        return
    why = getattr(criterion, "constant_reason", None) if float(scores[0]) == 0.0 else None
    if why is None:
        why = ("the calibration data gives it nothing to tell the units apart (e.g. a loss that does not "
               "depend on them, or values that are never <= 0 for apoz); use another criterion or loss")
    raise DegenerateScoresError(
        f"criterion {criterion!r} gives all {group.size} units of group '{group.id}' the same score "
        f"{float(scores[0]):.6g}: {why}"
    )


def weight_scores(criterion: str | Criterion, name: str, ctx: ScoreContext) -> torch.Tensor:
    """Unstructured scores of one tensor (``name`` as in ``state_dict``), shaped like the tensor."""
    crit = make_criterion(criterion, owner="weight_scores")
    method: Callable | None = getattr(crit, "weight_scores", None)
    if method is None:
        raise InvalidParameterError(
            f"criterion {crit!r} has no single-weight form: use one of l1, l2, gradient, taylor_weight, "
            f"taylor_elementwise, obd_weight, fisher_weight, random"
        )
    scores = method(name, ctx)
    expected = tuple(ctx.tensors[name].shape)
    if tuple(scores.shape) != expected or not math.isfinite(float(scores.float().sum())):
        raise InvalidParameterError(f"criterion {crit!r} gave '{name}' scores of shape {tuple(scores.shape)}; expected {expected}")
    return scores
