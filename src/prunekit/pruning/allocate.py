"""Scores + target -> :class:`PruningPlan`: which units of which groups to remove.

Eligible groups are prunable, scored, and do not touch an ignored module's "out" slot. Each
group's removal count then obeys, in order: ``round_to`` (kept units rounded to the nearest
multiple, for channel groups of at least ``2 * round_to`` units, never rounding a zero removal
into a cut), then ``max(min_keep, group.min_units)`` kept units. Inside a group the lowest
scores go first (ties by index).

* ``scope="local"``: every group loses ``floor(ratio * size)`` units (or its per-module ratio).
* ``scope="global"``: scores are normalized per group, ranked together, and the ``k`` lowest
  removed, so layers lose different fractions.
* ``target="params" | "macs" | "cost"``: ``ratio`` is the fraction of the whole model's cost to
  remove; ``measure(plan) -> cost`` prices a candidate plan (the pruner prunes a copy and
  counts) and bisection finds the smallest cut meeting the target, so the result overshoots by
  at most one removal step (one unit, or one ``round_to`` block). With ``estimate(plan) -> cost``
  (:mod:`prunekit.pruning.cost_model`, priced from the graph in microseconds) the bisection runs
  on the estimate and ``measure`` only re-counts the chosen plan; if the two disagree, the
  bisection is redone on ``measure`` (``plan.meta["pricing"]`` says which happened).
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from typing import Callable, Iterable, Literal, Mapping, Sequence

import torch

from prunekit.dependency.groups import ChannelGroup, PruningPlan
from prunekit.errors import InvalidParameterError, PrunekitWarning, check_ratio
from prunekit.importance.reduce import get_normalizer

Scope = Literal["local", "global"]
Target = Literal["channels", "params", "macs", "cost"]
TARGETS = ("channels", "params", "macs", "cost")


def matches(module: str, patterns: Iterable[str]) -> bool:
    """``module`` equals a pattern, lies below it (``head`` covers ``head.1``) or fnmatches it."""
    return any(module == p or module.startswith(p + ".") or fnmatch.fnmatchcase(module, p) for p in patterns)


def eligible_groups(groups: Iterable[ChannelGroup], scores: Mapping[str, torch.Tensor],
                    ignore: Sequence[str] = ()) -> list[ChannelGroup]:
    """Prunable, scored groups none of whose "out" slots belongs to an ignored module."""
    return [
        g for g in groups
        if g.prunable and g.id in scores and not any(matches(s.module, ignore) for s in g.slots_with_role("out"))
    ]


def override_ratio(group: ChannelGroup, per_module: Mapping[str, float] | None) -> float | None:
    """The per-module ratio for a group (smallest when its producers have several), or None."""
    if not per_module:
        return None
    found = [r for pattern, r in per_module.items() if any(matches(s.module, [pattern]) for s in group.slots_with_role("out"))]
    return min(found) if found else None


def constrain(group: ChannelGroup, n_remove: int, *, min_keep: int = 1, round_to: int | None = None) -> int:
    """Removal count after rounding the kept units and the keep floors (see module docstring)."""
    size = group.size
    n_remove = max(0, min(int(n_remove), size))
    if n_remove == 0:
        return 0
    keep = size - n_remove
    rounding = bool(round_to) and round_to > 1 and group.unit == "channel" and size >= 2 * round_to
    if rounding:
        keep = min(size, max(round_to, int(math.floor(keep / round_to + 0.5)) * round_to))
    floor = min(size, max(min_keep, group.min_units, 1))
    if keep < floor:
        keep = min(size, math.ceil(floor / round_to) * round_to) if rounding else floor
    return size - keep


def lowest(scores: torch.Tensor, n: int) -> tuple[int, ...]:
    """Indices of the ``n`` lowest scores (ties by index), sorted."""
    order = torch.argsort(scores, stable=True)[:n]
    return tuple(sorted(int(i) for i in order))


def local_counts(groups: Sequence[ChannelGroup], ratio: float, *,
                 per_module: Mapping[str, float] | None = None) -> dict[str, int]:
    """Unconstrained removal counts: ``floor(r * size)`` with ``r`` the group's own ratio."""
    counts = {}
    for g in groups:
        r = override_ratio(g, per_module)
        counts[g.id] = int(math.floor((ratio if r is None else r) * g.size + 1e-9))
    return counts


def global_counts(groups: Sequence[ChannelGroup], normalized: Mapping[str, torch.Tensor], k: int) -> dict[str, int]:
    """How many of each group's units are among the ``k`` lowest normalized scores overall."""
    if not groups:
        return {}
    owner = torch.cat([torch.full((g.size,), i) for i, g in enumerate(groups)])
    allscores = torch.cat([normalized[g.id].double() for g in groups])
    chosen = owner[torch.argsort(allscores, stable=True)[:k]]
    counts = torch.bincount(chosen, minlength=len(groups))
    return {g.id: int(counts[i]) for i, g in enumerate(groups)}


def plan_from_counts(groups: Sequence[ChannelGroup], scores: Mapping[str, torch.Tensor], counts: Mapping[str, int], *,
                     min_keep: int = 1, round_to: int | None = None, meta: dict | None = None) -> PruningPlan:
    """Constrain each count and remove that many lowest-scored units per group."""
    removed = {}
    for g in groups:
        n = constrain(g, counts.get(g.id, 0), min_keep=min_keep, round_to=round_to)
        if n:
            removed[g.id] = lowest(scores[g.id], n)
    return PruningPlan(removed, dict(meta or {}))


def allocate(groups: Iterable[ChannelGroup], scores: Mapping[str, torch.Tensor], *, ratio: float,
             scope: Scope = "local", target: Target = "channels",
             measure: Callable[[PruningPlan], float] | None = None, round_to: int | None = None,
             min_keep: int = 1, ignore: Sequence[str] = (), per_module: Mapping[str, float] | None = None,
             normalizer: str | Callable | None = "mean",
             estimate: Callable[[PruningPlan], float] | None = None) -> PruningPlan:
    """Decide a plan; see the module docstring for the rules.

    Parameters
    ----------
    groups : iterable of ChannelGroup
        Usually ``graph.groups``; non-prunable, unscored and ignored groups are left whole.
    scores : mapping group id -> (size,) tensor
        Higher = more important (raw criterion scores; ``normalizer`` is applied here).
    ratio : float in [0, 1)
        Fraction of units (``target="channels"``) or of the model's cost to remove.
    measure : callable(plan) -> float
        Cost of the model pruned by ``plan``; required for every target but "channels".
    per_module : mapping module name/pattern -> ratio
        Groups whose producers match keep that local ratio and leave the global ranking.
    estimate : callable(plan) -> float, optional
        A fast price of a plan; the search runs on it and ``measure`` verifies the result.
    """
    check_ratio(ratio, "ratio", "allocate")
    for name, r in (per_module or {}).items():
        check_ratio(r, f"per_module[{name!r}]", "allocate")
    if target not in TARGETS:
        raise InvalidParameterError(f"The 'target' parameter of allocate must be one of {TARGETS}. Got {target!r} instead.")
    if scope not in ("local", "global"):
        raise InvalidParameterError(f"The 'scope' parameter of allocate must be 'local' or 'global'. Got {scope!r} instead.")
    chosen = eligible_groups(groups, scores, ignore)
    fixed = [g for g in chosen if override_ratio(g, per_module) is not None]
    free = [g for g in chosen if override_ratio(g, per_module) is None]
    fixed_counts = local_counts(fixed, 0.0, per_module=per_module)
    meta = {"ratio": ratio, "scope": scope, "target": target, "round_to": round_to, "min_keep": min_keep}
    norm = get_normalizer(normalizer, "allocate")
    normalized = {g.id: norm(scores[g.id].double()) for g in free} if scope == "global" else {}

    def counts_for(step: float | int) -> dict[str, int]:
        if scope == "global":
            return fixed_counts | global_counts(free, normalized, int(step))
        return fixed_counts | local_counts(free, float(step))

    def plan_for(step: float | int) -> PruningPlan:
        return plan_from_counts(chosen, scores, counts_for(step), min_keep=min_keep, round_to=round_to, meta=meta)

    n_free = sum(g.size for g in free)
    if target == "channels":
        return plan_for(int(math.floor(ratio * n_free + 1e-9)) if scope == "global" else ratio)
    if measure is None:
        raise InvalidParameterError(f"target '{target}' needs a measure(plan) -> cost callable to price candidate plans")
    steps = list(range(n_free + 1)) if scope == "global" else _local_steps(free)
    if estimate is None:
        return _search(steps, plan_for, measure, ratio, target)
    return _search_estimated(steps, plan_for, measure, estimate, ratio, target)


def _search_estimated(steps: Sequence, plan_for: Callable[[object], PruningPlan],
                      measure: Callable[[PruningPlan], float], estimate: Callable[[PruningPlan], float],
                      ratio: float, target: str) -> PruningPlan:
    """Bisect on ``estimate``; keep the result if ``measure`` agrees on it, else bisect on ``measure``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = _search(steps, plan_for, estimate, ratio, target)
    chosen = PruningPlan(plan.removed)
    real, dense = float(measure(chosen)), float(estimate(PruningPlan({})))  # the estimate's dense cost is a real count
    if abs(real - estimate(chosen)) <= 1e-9 * max(dense, 1.0):
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=3)
        return PruningPlan(plan.removed, plan.meta | {"achieved": 1 - real / dense, "pricing": "graph estimate, verified"})
    plan = _search(steps, plan_for, measure, ratio, target)
    return PruningPlan(plan.removed, plan.meta | {"pricing": f"re-counted (graph estimate was off by {real - estimate(chosen):+.0f})"})


def _local_steps(groups: Sequence[ChannelGroup]) -> list[float]:
    """Every uniform ratio at which some group's unconstrained count changes, ascending."""
    steps = {0.0}
    for g in groups:
        steps.update(j / g.size for j in range(1, g.size))
    return sorted(steps)


def _search(steps: Sequence, plan_for: Callable[[object], PruningPlan], measure: Callable[[PruningPlan], float],
            ratio: float, target: str) -> PruningPlan:
    """Smallest step whose plan removes at least ``ratio`` of the unpruned cost (bisection)."""
    base = float(measure(PruningPlan({})))
    goal = base * (1.0 - ratio)

    cache: dict[int, float] = {}

    def cost(i: int) -> float:
        if i not in cache:
            cache[i] = float(measure(plan_for(steps[i])))
        return cache[i]

    lo, hi = 0, len(steps) - 1
    if cost(hi) > goal:
        plan = plan_for(steps[hi])
        warnings.warn(
            f"target {target} ratio {ratio} cannot be reached: the deepest allowed cut removes "
            f"{1 - cost(hi) / base:.3f}; relax min_keep, round_to or ignore", PrunekitWarning, stacklevel=3)
        return PruningPlan(plan.removed, plan.meta | {"achieved": 1 - cost(hi) / base})
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(mid) <= goal:
            hi = mid
        else:
            lo = mid + 1
    plan = plan_for(steps[lo])
    return PruningPlan(plan.removed, plan.meta | {"achieved": 1 - cost(lo) / base})
