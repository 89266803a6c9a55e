"""Per-group sensitivity curves and a non-uniform allocation from them.

``sensitivity_scan`` prunes one group at a time (on a copy) at several ratios and measures
loss and accuracy; ``allocate_from_sensitivity`` then cuts greedily where the loss rises least
per unit of cost saved, until a global cost target is met. Savings of different groups are
assumed to add up (true for params, close for MACs, approximate for latency).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.dependency import DependencyGraph, build_graph
from prunekit.dependency.groups import ChannelGroup, PruningPlan
from prunekit.errors import InvalidParameterError, PrunekitWarning, check_ratio
from prunekit.importance import Criterion, collect, make_criterion, score_groups
from prunekit.importance.collect import run_batch, to_device
from prunekit.pruning.allocate import constrain, lowest
from prunekit.pruning.surgery import apply_plan

Curve = list[tuple[float, float, float]]  # (ratio, loss, accuracy)
Evaluate = Callable[[nn.Module, Iterable], tuple[float, float]]
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def evaluate_loss_accuracy(model: nn.Module, loader: Iterable, *, loss_fn: Callable | None = None) -> tuple[float, float]:
    """Mean loss per sample (default cross-entropy) and top-1 accuracy, in eval mode without grads."""
    loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
    was_training = model.training
    model.eval()
    total, correct, n = 0.0, 0, 0
    device = next(iter(model.parameters())).device
    try:
        with torch.no_grad():
            for inputs, targets in loader:
                out = run_batch(model, inputs, device)
                targets = to_device(targets, device)
                b = len(targets)
                total += float(loss_fn(out, targets)) * b
                if out.dim() == 2 and targets.dim() == 1:
                    correct += int((out.argmax(1) == targets).sum())
                n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise InvalidParameterError("the evaluation loader yielded no batches: give at least one (inputs, targets) batch")
    return total / n, correct / n


def group_plan(group: ChannelGroup, scores: torch.Tensor, ratio: float, *, min_keep: int = 1,
               round_to: int | None = None) -> PruningPlan:
    """Remove ``floor(ratio * size)`` lowest-scored units of one group (after the keep rules)."""
    n = constrain(group, int(math.floor(ratio * group.size + 1e-9)), min_keep=min_keep, round_to=round_to)
    return PruningPlan({group.id: lowest(scores, n)} if n else {}, {"ratio": ratio})


def sensitivity_scan(model: nn.Module, example_inputs: Any, loader: Iterable, *,
                     ratios: Sequence[float] = DEFAULT_RATIOS, criterion: str | Criterion = "l2",
                     evaluate: Evaluate | None = None, graph: DependencyGraph | None = None,
                     groups: Iterable[str] | None = None, min_keep: int = 1, round_to: int | None = None,
                     loss_fn: Callable | None = None, batches: int | None = None,
                     on_group: Callable[[int, int, str], None] | None = None) -> dict[str, Curve]:
    """Loss and accuracy of the model with one group pruned at each ratio.

    Each curve starts with the unpruned point ``(0.0, loss, accuracy)``; scores come from
    ``criterion`` on the unpruned model (calibrated on ``loader`` if it needs data). A ratio that
    removes nothing after the keep rules reuses the unpruned numbers. ``evaluate(model, loader)
    -> (loss, accuracy)`` defaults to cross-entropy and top-1 accuracy. ``on_group(done, total, id)``
    is called before each group is scanned (progress for long scans).
    """
    for r in ratios:
        check_ratio(r, "ratios", "sensitivity_scan")
    crit = make_criterion(criterion, owner="sensitivity_scan")
    graph = graph if graph is not None else build_graph(model, example_inputs)
    evaluate = evaluate if evaluate is not None else (lambda m, data: evaluate_loss_accuracy(m, data, loss_fn=loss_fn))
    wanted = graph.prunable_groups() if groups is None else [graph.group(g) for g in groups]
    ctx = collect(model, loader, needs=crit.requires, loss_fn=loss_fn, batches=batches, groups=wanted)
    scores, _ = score_groups(wanted, ctx, crit)
    base = tuple(float(v) for v in evaluate(model, loader))
    curves: dict[str, Curve] = {}
    for done, group in enumerate(wanted):
        if on_group is not None:
            on_group(done, len(wanted), group.id)
        if group.id not in scores:
            continue
        curve = [(0.0, *base)]
        for r in sorted(set(float(r) for r in ratios) - {0.0}):
            plan = group_plan(group, scores[group.id], r, min_keep=min_keep, round_to=round_to)
            if not plan.removed:
                curve.append((r, *base))
                continue
            pruned, _ = apply_plan(model, graph, plan)
            curve.append((r, *(float(v) for v in evaluate(pruned, loader))))
        curves[group.id] = curve
    return curves


def group_savings(model: nn.Module, graph: DependencyGraph, curves: Mapping[str, Curve],
                  scores: Mapping[str, torch.Tensor], cost: Callable[[nn.Module], float], *, min_keep: int = 1,
                  round_to: int | None = None) -> tuple[float, dict[str, list[float]]]:
    """``(unpruned cost, {group id: cost saved at each curve ratio})`` by pruning copies and pricing them."""
    base = float(cost(model))
    saved: dict[str, list[float]] = {}
    for gid, curve in curves.items():
        group, row = graph.group(gid), []
        for r, _, _ in curve:
            plan = group_plan(group, scores[gid], r, min_keep=min_keep, round_to=round_to)
            row.append(base - float(cost(apply_plan(model, graph, plan, verify=False)[0])) if plan.removed else 0.0)
        saved[gid] = row
    return base, saved


def allocate_from_sensitivity(curves: Mapping[str, Curve], costs: Mapping[str, Sequence[float]], target: float, *,
                              total: float, groups: Iterable[ChannelGroup], scores: Mapping[str, torch.Tensor],
                              min_keep: int = 1, round_to: int | None = None,
                              interpolate: bool = True) -> PruningPlan:
    """Greedy non-uniform ratios saving at least ``target * total`` cost, as a plan.

    Parameters
    ----------
    curves : group id -> [(ratio, loss, accuracy), ...] from :func:`sensitivity_scan`.
    costs : group id -> cost saved at each point of its curve (0 at ratio 0), e.g. from
        :func:`group_savings` with params, MACs or a measured latency.
    target : fraction in (0, 1) of ``total`` (the unpruned cost) to save.
    groups, scores : the groups and criterion scores the scan used, to turn ratios into units.

    At each step every group may jump from its current point to any later one; the jump with the
    smallest ``loss increase / cost saved`` is taken (ties: smaller loss increase). With
    ``interpolate`` the last jump stops part-way, at the ratio where the cost saved (taken as
    linear between the two scan points) meets the target: without it only the sums of scan points
    are reachable, e.g. 30.9% or 80.8% of a small CNN's MACs when 50% is asked.
    """
    check_ratio(target, "target", "allocate_from_sensitivity", low_inclusive=False)
    by_id = {g.id: g for g in groups}
    for gid in curves:
        if gid not in by_id or gid not in scores or len(costs.get(gid, ())) != len(curves[gid]):
            raise InvalidParameterError(
                f"group '{gid}' of the curves has no group, scores or one cost per curve point "
                f"({len(costs.get(gid, ()))} costs for {len(curves[gid])} points)"
            )
    at = {gid: 0 for gid in curves}
    goal = target * total

    def saved() -> float:
        return sum(costs[g][i] for g, i in at.items())

    last = None  # (group, previous point) of the latest jump
    while saved() < goal:
        best = None
        for gid, i in at.items():
            for j in range(i + 1, len(curves[gid])):
                gain = costs[gid][j] - costs[gid][i]
                if gain <= 0:
                    continue
                rise = curves[gid][j][1] - curves[gid][i][1]
                key = (rise / gain, rise)
                if best is None or key < best[0]:
                    best = (key, gid, j)
        if best is None:
            warnings.warn(f"sensitivity allocation saves only {saved() / total:.3f} of the cost, "
                          f"short of the target {target}: scan higher ratios", PrunekitWarning, stacklevel=2)
            break
        last = (best[1], at[best[1]])
        at[best[1]] = best[2]
    ratios = {gid: curves[gid][i][0] for gid, i in at.items()}
    reached = saved()
    if interpolate and last is not None and reached > goal:
        gid, before = last
        lo, hi = costs[gid][before], costs[gid][at[gid]]
        part = 1.0 - (reached - goal) / (hi - lo)  # of the way from the previous point to the new one
        r0, r1 = curves[gid][before][0], curves[gid][at[gid]][0]
        ratios[gid] = r0 + part * (r1 - r0)
        reached = goal
    removed = {}
    for gid, r in ratios.items():
        plan = group_plan(by_id[gid], scores[gid], r, min_keep=min_keep, round_to=round_to)
        removed.update(plan.removed)
    return PruningPlan(removed, {"ratios": ratios, "target": target, "saved": reached / total,
                                 "method": "sensitivity"})
