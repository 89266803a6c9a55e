"""Structured one-shot pruning of a decoder: remove FFN channels and attention heads, for real.

Scores are Wanda's, aggregated over a unit (as in Wanda-sp / FLAP): a unit's inputs to the layer
that consumes it (``down_proj`` columns for an FFN channel, ``o_proj`` columns for a head) matter
by ``sum |W_ij| * ||X_j||_2`` over those columns. Blocks are processed in order: block ``i`` is
scored on hidden states that went through the already-pruned blocks before it; a removed unit is
first silenced (its consumer columns zeroed, which is exactly what removing it does to the
block's output) so the next block sees the pruned model's activations. The consumer compensates
(``reconstruct``): the removed units' mean contribution folded into its bias (FLAP's bias
compensation, the default) or its kept columns and bias refit by least squares on the calibration
inputs (see ``reconstruct.py``). A plan chosen by another criterion can be applied the same way
(``plan=`` / :func:`reconstruct_plan`). Finally prunekit's dependency graph and surgery cut the
units out, so the model really shrinks.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from prunekit.dependency import build_graph
from prunekit.dependency.groups import ChannelGroup, PruningPlan
from prunekit.errors import InvalidParameterError, check_ratio
from prunekit.pruning.oneshot.blocks import capture_block_inputs, find_blocks, is_linear_like
from prunekit.pruning.oneshot.reconstruct import (check_damping, check_reconstruct, check_weighting, observe_fit,
                                                  remove_inputs)
from prunekit.pruning.oneshot.stats import collect_inputs
from prunekit.pruning.surgery import SurgeryRecord, apply_plan


@dataclass
class StructuredResult:
    """The plan applied, its surgery record, unit scores per group, and what it cost."""

    plan: PruningPlan
    record: SurgeryRecord
    scores: dict[str, torch.Tensor]  # group id -> score per unit (higher = keep)
    kinds: dict[str, str]  # group id -> "head" | "channel"
    blocks: str
    seconds: float
    peak_held_bytes: int


def _first_example(batch: Any) -> Any:
    """One sample of a batch, for tracing the graph."""
    if isinstance(batch, torch.Tensor):
        return batch[:1]
    if isinstance(batch, Mapping):
        return {k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return type(batch)(v[:1] if isinstance(v, torch.Tensor) else v for v in batch)


def block_groups(graph, blocks_name: str, n_blocks: int) -> list[list[ChannelGroup]]:
    """Per block, the prunable head and channel groups whose every slot lies inside that block
    (attention heads, FFN hidden channels); the residual stream spans blocks and is never chosen."""
    out: list[list[ChannelGroup]] = [[] for _ in range(n_blocks)]
    for group in graph.prunable_groups():
        if group.unit not in ("head", "channel"):
            continue
        for i in range(n_blocks):
            prefix = f"{blocks_name}.{i}."
            if all(s.module.startswith(prefix) for s in group.slots):
                out[i].append(group)
                break
    return out


def prune_structured(model: nn.Module, calibration: Iterable[Any], *, channel_ratio: float = 0.0,
                     head_ratio: float = 0.0, blocks: str | None = None, example_inputs: Any = None,
                     compensate_bias: bool | None = None, score: str = "wanda", reconstruct: str = "bias",
                     damping: float = 0.01, weighting: str = "uniform",
                     plan: PruningPlan | None = None) -> tuple[nn.Module, StructuredResult]:
    """Remove ``channel_ratio`` of each block's FFN channels and ``head_ratio`` of its heads.

    Returns ``(smaller_model, result)``; ``model`` is not modified. ``example_inputs`` (default:
    one sample of the first batch) is what the dependency graph is traced and verified with.
    ``score="magnitude"`` drops the input norms (``sum |W|`` over the unit's columns): the
    data-free baseline, still processed block by block so the compensation applies alike.
    ``reconstruct`` is what the consumers of the removed units do (see
    :mod:`prunekit.pruning.oneshot.reconstruct`): ``"none"``, ``"bias"`` (FLAP's bias
    compensation, the default), ``"least_squares"`` (kept columns and bias refit on the
    calibration inputs, ``damping`` as a fraction of the mean diagonal) or ``"least_squares_dense"``
    (refit to the dense model's outputs: also corrects the drift of earlier blocks; runs a copy of
    the dense model beside). ``weighting="relative"`` makes the refits (and the bias's mean) weigh each
    token's error relative to its output norm (see ``reconstruct.observe_fit``). ``compensate_bias`` is the
    older spelling: ``False`` means ``reconstruct="none"``.

    ``plan`` removes exactly the units of a plan chosen elsewhere (by any criterion, on a graph of
    this model) instead of the lowest Wanda scores; the ratios are then ignored, and the blocks are
    still processed in order so each consumer is refit on the already-pruned model's activations.
    """
    owner = "prune_structured"
    if score not in ("wanda", "magnitude"):
        raise InvalidParameterError(f"The 'score' parameter of {owner} must be 'wanda' or 'magnitude'. "
                                    f"Got {score!r} instead.")
    reconstruct = check_reconstruct(reconstruct, owner)
    if compensate_bias is False:
        reconstruct = "none"
    damping = check_damping(damping, owner)
    weighting = check_weighting(weighting, owner)
    check_ratio(channel_ratio, "channel_ratio", owner)
    check_ratio(head_ratio, "head_ratio", owner)
    batches = list(calibration)
    if not batches:
        raise InvalidParameterError(f"{owner} needs calibration batches. Got none.")
    started = time.perf_counter()
    example = example_inputs if example_inputs is not None else _first_example(batches[0])
    graph = build_graph(model, example)
    work = copy.deepcopy(model).eval()
    blocks_name, block_list = find_blocks(work, blocks)
    per_block = block_groups(graph, blocks_name, len(block_list))
    if not any(per_block):
        raise InvalidParameterError(
            f"{owner} found no prunable head or channel group inside the blocks of '{blocks_name}'; "
            "see build_graph(model, x).explain() for why each group is frozen")
    if plan is not None:
        _check_plan(plan, per_block, blocks_name, owner)
    held = capture_block_inputs(work, block_list, batches)
    dense_blocks, dense_held = None, None
    if reconstruct == "least_squares_dense":  # the dense model runs beside, block by block, for the targets
        dense_model = copy.deepcopy(model).eval()
        dense_blocks = find_blocks(dense_model, blocks_name)[1]
        dense_held = capture_block_inputs(dense_model, dense_blocks, batches)
    removed: dict[str, tuple[int, ...]] = {}
    scores: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    peak = 0
    with torch.no_grad():
        for index, block in enumerate(block_list):
            prefix = f"{blocks_name}.{index}."
            consumers = {s.module[len(prefix):] for g in per_block[index] for s in g.slots_with_role("in")}
            # in the block's registration order, which is the order its forward calls them
            layers = {name: layer for name, layer in block.named_modules()
                      if name in consumers and is_linear_like(layer)}
            sizes = {name: _in_features(layer) for name, layer in layers.items()}
            collector = collect_inputs(layers, hessian=False, in_features=sizes)
            with collector as stats:
                held.observe(index, block, collector)
            peak = max(peak, held.held_bytes() + sum(s.nbytes() for s in stats.values()))
            positions: dict[str, list[torch.Tensor]] = {}
            for group in per_block[index]:
                ratio = head_ratio if group.unit == "head" else channel_ratio
                slots = [s for s in group.slots_with_role("in") if s.module[len(prefix):] in layers]
                if not slots:
                    continue
                unit_scores = sum(s.scatter(_column_scores(block, s, prefix, stats, score), group.size) for s in slots)
                scores[group.id], kinds[group.id] = unit_scores, group.unit
                if plan is not None:
                    drop = torch.tensor(sorted(plan.removed.get(group.id, ())), dtype=torch.long)
                else:
                    k = min(math.floor(ratio * group.size), group.size - max(group.min_units, 1))
                    drop = torch.sort(unit_scores, stable=True).indices[:max(k, 0)].sort().values
                if drop.numel() == 0:
                    continue
                removed[group.id] = tuple(drop.cpu().tolist())
                for s in slots:
                    positions.setdefault(s.module[len(prefix):], []).append(
                        torch.as_tensor(s.positions(drop.cpu().numpy()), dtype=torch.long))
            for name, layer in layers.items():
                if name not in positions:
                    continue
                layer_stats = stats[name]
                if reconstruct.startswith("least_squares") or (reconstruct == "bias" and weighting == "relative"):
                    # on inputs taken after the consumers before it were refit
                    layer_stats = observe_fit(held, index, block, name, weighting=weighting, dense_held=dense_held,
                                              dense_block=dense_blocks[index] if dense_blocks is not None else None)
                peak = max(peak, held.held_bytes() + layer_stats.nbytes()
                           + (dense_held.held_bytes() if dense_held is not None else 0))
                remove_inputs(layer, torch.cat(positions[name]), layer_stats, reconstruct, damping=damping)
            held.advance(index, block)
            if dense_held is not None:
                dense_held.advance(index, dense_blocks[index])
    meta = {"method": f"{score}-structured", "channel_ratio": channel_ratio, "head_ratio": head_ratio,
            "reconstruct": reconstruct}
    if plan is not None:
        meta = {**plan.meta, "reconstruct": reconstruct}
    if reconstruct.startswith("least_squares"):
        meta.update(damping=damping, weighting=weighting)
    elif reconstruct == "bias":
        meta.update(weighting=weighting)
    applied = PruningPlan(removed, meta)
    pruned, record = apply_plan(work, graph, applied)  # work carries the compensation
    pruned.train(model.training)
    return pruned, StructuredResult(applied, record, scores, kinds, blocks_name, time.perf_counter() - started, peak)


def reconstruct_plan(model: nn.Module, plan: PruningPlan, calibration: Iterable[Any], *,
                     reconstruct: str = "least_squares", damping: float = 0.01, weighting: str = "uniform",
                     blocks: str | None = None, example_inputs: Any = None) -> tuple[nn.Module, StructuredResult]:
    """Apply ``plan`` (chosen by any criterion) block by block, the consumers of the removed heads
    and channels compensating per ``reconstruct``; ``(smaller_model, result)``."""
    return prune_structured(model, calibration, blocks=blocks, example_inputs=example_inputs,
                            reconstruct=reconstruct, damping=damping, weighting=weighting, plan=plan)


def _check_plan(plan: PruningPlan, per_block: list[list[ChannelGroup]], blocks_name: str, owner: str) -> None:
    """Every group of ``plan`` is a head or channel group inside a block, with unit indices in range."""
    sizes = {g.id: g for groups in per_block for g in groups}
    for gid, units in plan.removed.items():
        group = sizes.get(gid)
        if group is None:
            raise InvalidParameterError(
                f"The 'plan' of {owner} removes units of group {gid!r}, which is not a head or channel group inside "
                f"the blocks of '{blocks_name}'; build the plan on build_graph(model, x) of this model")
        if any(not 0 <= u < group.size for u in units) or len(set(units)) > group.size - max(group.min_units, 1):
            raise InvalidParameterError(
                f"The 'plan' of {owner} removes units {sorted(units)} of group {gid!r}, which has {group.size} units "
                f"and must keep {max(group.min_units, 1)}; give indices in [0, {group.size}) leaving enough")


def _in_features(layer: nn.Module) -> int:
    return layer.weight.shape[0] if not isinstance(layer, nn.Linear) else layer.weight.shape[1]


def _column_scores(block: nn.Module, slot, prefix: str, stats, score: str) -> torch.Tensor:
    """``sum_i |W_ij| * ||X_j||`` (or ``sum_i |W_ij|``) per input position j of the consumer (float64)."""
    name = slot.module[len(prefix):]
    weight = block.get_submodule(name).weight.detach().abs().to(torch.float64)
    per_position = weight.movedim(slot.axis, 0).reshape(weight.shape[slot.axis], -1).sum(1)
    return per_position * stats[name].norms() if score == "wanda" else per_position
