"""The pruning stage of a recipe: one criterion, one target, one schedule, with recovery between.

Structured pruning shrinks the model (its record composes across steps); unstructured and N:M
pruning hold masks through fine-tuning and bake them at the end.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.data import DataBundle
from prunekit.errors import InvalidParameterError, PrunekitWarning, UnsupportedLayerError
from prunekit.evaluation.complexity import count_macs, count_params
from prunekit.pruning.surgery import SurgeryRecord
from prunekit.recipes.schema import PruningSpec
from prunekit.training.distributed import broadcast_object, rank, world_size
from prunekit.training.objectives import calibration_loss


@dataclass
class PruneOutcome:
    model: nn.Module
    record: SurgeryRecord | None  # None for mask-based pruning
    masks: dict[str, torch.Tensor] | None
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""


def _cost(model: nn.Module, example: Any, metric: str, *, threads: int | None = None) -> float:
    if metric == "params":
        return float(count_params(model))
    if metric == "latency":
        return measured_latency_ms(model, example, threads=threads)
    return float(count_macs(model, example).total)


def measured_latency_ms(model: nn.Module, example: Any, *, runs: int = 40, threads: int | None = None) -> float:
    """ONNX Runtime p50 latency (ms) of ``model`` at batch 1: the cost for latency targets.

    ``threads``: the intra-op threads the report's latency table uses (``evaluation.threads``),
    so the target is met at the thread count the user reads it at."""
    import tempfile
    from pathlib import Path

    from prunekit.evaluation.latency import onnx_latency
    from prunekit.export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(copy.deepcopy(model).eval(), example, Path(tmp) / "m.onnx")
        timings = onnx_latency({"m": path}, input_shape=tuple(example.shape[1:]), batch_sizes=(1,),
                               runs=runs, warmup=5, threads=threads)
    return float(timings["m"][1]["p50_ms"])


def _structured_step(model: nn.Module, spec: PruningSpec, example: Any, bundle: DataBundle, *,
                     dense_cost: float, dense_units: int, fraction: float, seed: int,
                     latency_threads: int | None = None):
    """Prune ``model`` so that ``fraction`` of the DENSE model's metric is removed in total."""
    from prunekit.pruning.pruner import StructuredPruner

    metric = spec.target.metric
    if metric == "channels":
        current_units = sum(g.size for g in _graph(model, example).prunable_groups())
        ratio = 1.0 - (1.0 - fraction) * dense_units / max(current_units, 1)
    else:
        ratio = 1.0 - (1.0 - fraction) * dense_cost / _cost(model, example, metric, threads=latency_threads)
    ratio = min(max(ratio, 0.0), 0.95)
    if ratio <= 1e-6:
        return model, None, None
    latency = metric == "latency"
    pruner = StructuredPruner(
        criterion=spec.criterion, ratio=ratio, target="cost" if latency else metric, scope=spec.scope,
        cost=(lambda m: measured_latency_ms(m, example, threads=latency_threads)) if latency else None,
        round_to=spec.round_to if spec.round_to > 1 else None, min_keep=spec.min_keep,
        ignore=tuple(spec.ignore), per_module=dict(spec.per_layer) or None, seed=seed,
        loss_fn=calibration_loss(bundle.task),
    )
    pruner.fit(model, example, bundle.calib)
    if world_size() > 1:  # decided once on rank 0, applied identically on every rank
        pruner.plan_ = broadcast_object(pruner.plan_ if rank() == 0 else None)
    if spec.reconstruct != "none":
        return (*_reconstructed(model, pruner.plan_, spec, example, bundle), pruner)
    pruned = pruner.transform(model)
    return pruned, pruner.record_, pruner


def _reconstructed(model: nn.Module, plan: Any, spec: PruningSpec, example: Any, bundle: DataBundle):
    """``plan`` applied block by block, the consumers of the removed heads and channels refit on the
    calibration batches (``pruning.reconstruct``); ``(pruned, record)``."""
    from prunekit.pruning.oneshot import reconstruct_plan

    batches = [batch[0] if isinstance(batch, (tuple, list)) else batch for batch in bundle.calib]
    try:
        pruned, result = reconstruct_plan(model, plan, batches, reconstruct=spec.reconstruct,
                                          weighting=spec.reconstruct_weighting, example_inputs=example)
    except (InvalidParameterError, UnsupportedLayerError) as err:  # e.g. a CNN: no transformer blocks to refit
        raise type(err)(f"pruning.reconstruct: {spec.reconstruct} cannot be applied: {err}; "
                        "set pruning.reconstruct: none for this model") from err
    return pruned, result.record


def _graph(model: nn.Module, example: Any):
    from prunekit.dependency import build_graph

    return build_graph(model, example)


def group_table(pruner: Any) -> list[dict[str, Any]]:
    rows = []
    for g in pruner.graph_.groups:
        removed = len(pruner.plan_.removed.get(g.id, ()))
        rows.append({"group": g.id, "unit": g.unit, "units": g.size, "kept": g.size - removed,
                     "prunable": g.prunable, "exact": g.exact, "reason": g.reason})
    return rows


def remove_depth(model: nn.Module, spec: PruningSpec, example: Any, bundle: DataBundle) -> tuple[nn.Module, SurgeryRecord]:
    """Bypass the ``spec.depth_blocks`` whole blocks whose removal changes the output least."""
    from prunekit.pruning.depth import find_bypassable_blocks, remove_blocks, score_blocks

    blocks = find_bypassable_blocks(model, example)
    scores = score_blocks(model, blocks, bundle.val, max_batches=4) if blocks else {}
    chosen = sorted(scores, key=scores.get)[: spec.depth_blocks]
    if len(chosen) < spec.depth_blocks:
        warnings.warn(f"pruning.depth_blocks asks for {spec.depth_blocks} blocks but the model has only "
                      f"{len(blocks)} bypassable ones; removing {len(chosen)}", PrunekitWarning, stacklevel=2)
    pruned = remove_blocks(model, chosen, example_inputs=example)
    record = SurgeryRecord(bypassed={name: pruned.get_submodule(name).tuple_len for name in chosen})
    return pruned, record


def run_structured(model: nn.Module, spec: PruningSpec, example: Any, bundle: DataBundle, *, seed: int,
                   recover: Callable[[nn.Module], None], evaluate: Callable[[nn.Module], dict],
                   reference: nn.Module | None = None, record: SurgeryRecord | None = None,
                   latency_threads: int | None = None) -> PruneOutcome:
    """Run the recipe's schedule with structural surgery; ``recover`` fine-tunes between steps.

    Targets are fractions of ``reference`` (the dense model; default ``model``), so blocks already
    removed by depth pruning count towards them; ``record`` is the edit already made to ``model``.
    """
    from prunekit.pruning.schedule import Iterative, OneShot, run_adaptive, run_schedule

    metric = spec.target.metric
    reference = reference if reference is not None else model
    dense_cost = _cost(reference, example, "macs" if metric == "channels" else metric, threads=latency_threads)
    dense_units = sum(g.size for g in _graph(model, example).prunable_groups()) if metric == "channels" else 0
    state: dict[str, Any] = {"model": model, "record": record or SurgeryRecord(), "groups": []}

    def prune_to(fraction: float) -> None:
        pruned, record, pruner = _structured_step(
            state["model"], spec, example, bundle, dense_cost=dense_cost, dense_units=dense_units,
            fraction=fraction, seed=seed, latency_threads=latency_threads)
        if record is not None:
            state["model"], state["record"] = pruned, state["record"].merged(record)
            state["groups"] = group_table(pruner)

    def measured() -> dict[str, Any]:
        metrics = evaluate(state["model"])
        m = state["model"]
        return {**metrics, "macs": float(count_macs(m, example).total), "params": float(count_params(m))}

    schedule = spec.schedule
    if schedule.kind == "adaptive":
        tolerance = schedule.tolerance if schedule.tolerance is not None else 0.05
        trajectory = run_adaptive(
            state_get=lambda: (copy.deepcopy(state["model"]), state["record"], state["groups"]),
            state_set=lambda s: state.update(model=copy.deepcopy(s[0]), record=s[1], groups=s[2]),
            prune_to=prune_to, recover=lambda: recover(state["model"]), evaluate=measured,
            target=spec.target.ratio, tolerance=tolerance, initial_step=schedule.initial_step or 0.1,
        )
    else:
        if schedule.kind == "oneshot":
            plan = OneShot(spec.target.ratio)
        else:  # iterative and cubic both prune in `steps` increments here; cubic spaces them cubically
            plan = Iterative(spec.target.ratio, schedule.steps) if schedule.kind == "iterative" else _CubicSteps(
                spec.target.ratio, schedule.steps)
        trajectory = run_schedule(plan, prune_to=prune_to, recover=lambda: recover(state["model"]), evaluate=measured)
    return PruneOutcome(state["model"], state["record"], None, trajectory.to_list(), state["groups"],
                        trajectory.stop_reason)


@dataclass(frozen=True)
class _CubicSteps:
    """Zhu & Gupta's cubic ramp sampled at ``steps`` pruning events (step i of n: t = i / n)."""

    target_fraction: float
    steps: int

    def pruning_steps(self) -> list[int]:
        return list(range(1, self.steps + 1))

    def target(self, step: int) -> float:
        from prunekit.pruning.schedule import Cubic

        return Cubic(0.0, self.target_fraction, 0, self.steps, 1).target(step)


def run_masked(model: nn.Module, spec: PruningSpec, example: Any, calib: Any = None) -> PruneOutcome:
    """Unstructured or N:M masks (held by torch.nn.utils.prune hooks until made permanent).

    ``method: wanda | sparsegpt`` prunes a transformer's blocks one by one from the calibration
    loader's inputs (``prunekit.pruning.oneshot``); SparseGPT's updated weights are kept under the masks.
    """
    from prunekit.pruning.masking import apply_masks, nm_masks, sparsity_report, unstructured_masks

    if spec.method != "magnitude":
        from prunekit.pruning.oneshot import prune_oneshot

        batches = [batch[0] if isinstance(batch, (tuple, list)) else batch for batch in (calib or [])]
        pattern = {"nm": tuple(spec.nm)} if spec.granularity == "nm" else {"sparsity": spec.target.ratio}
        pruned, result = prune_oneshot(model, batches, method=spec.method, ignore=tuple(spec.ignore), **pattern)
        apply_masks(pruned, result.masks)
        trajectory = [{"step": 0, "sparsity": float(result.sparsity)}]
        return PruneOutcome(pruned, None, result.masks, trajectory, [], "oneshot")
    pruned = copy.deepcopy(model)
    if spec.granularity == "nm":
        n, m = spec.nm
        masks = nm_masks(pruned, n=n, m=m, ignore=tuple(spec.ignore))
    else:
        masks = unstructured_masks(pruned, sparsity=spec.target.ratio, scope=spec.scope, ignore=tuple(spec.ignore))
    apply_masks(pruned, masks)
    trajectory = [{"step": 0, "sparsity": float(sparsity_report(pruned)["global"]["sparsity"])}]
    return PruneOutcome(pruned, None, masks, trajectory, [], "oneshot")


def nearest(trials: list[tuple], target: float) -> tuple:
    """The trial ``(achieved, ...)`` nearest ``target`` on either side; a tie goes to the one meeting it."""
    return min(trials, key=lambda t: (abs(t[0] - target), t[0] < target))


def run_sensitivity_allocation(model: nn.Module, spec: PruningSpec, example: Any, bundle: DataBundle, *,
                               seed: int, on_group: Any = None) -> tuple[PruneOutcome, dict[str, list[tuple[float, float]]]]:
    """Scan each group alone, then spend the global target where accuracy suffers least.

    Returns the pruned outcome and the curves as ``{group: [(ratio, accuracy)]}`` for the report.
    """
    from prunekit.dependency import build_graph
    from prunekit.importance import collect, make_criterion, score_groups
    from prunekit.pruning.sensitivity import allocate_from_sensitivity, group_savings, sensitivity_scan
    from prunekit.pruning.surgery import apply_plan
    from prunekit.recipes.text_stage import scan_evaluator

    graph = build_graph(model, example)
    round_to = spec.round_to if spec.round_to > 1 else None
    loss_fn = calibration_loss(bundle.task)
    curves = sensitivity_scan(model, example, bundle.val, ratios=tuple(spec.sensitivity_ratios),
                              criterion=spec.criterion, graph=graph, min_keep=spec.min_keep, round_to=round_to,
                              on_group=on_group, loss_fn=loss_fn, evaluate=scan_evaluator(model, bundle))
    criterion = make_criterion(spec.criterion, owner="recipe pruning.criterion")
    ctx = collect(model, bundle.calib, needs=criterion.requires, seed=seed, loss_fn=loss_fn)
    scores, _ = score_groups([graph.group(g) for g in curves], ctx, criterion)
    curves = {g: c for g, c in curves.items() if g in scores}
    metric = spec.target.metric

    def cost(m: nn.Module) -> float:
        return _cost(m, example, metric)

    total, savings = group_savings(model, graph, curves, scores, cost, min_keep=spec.min_keep, round_to=round_to)
    # Savings measured one group at a time overlap when coupled neighbours are both cut (a consumer's
    # input shrinks with its producer), so the allocation's own estimate is off: bisect the aim until
    # the MEASURED saving is the smallest one that meets the target.
    groups = [graph.group(g) for g in curves]

    def attempt(aim: float):
        plan = allocate_from_sensitivity(curves, savings, aim, total=total, groups=groups, scores=scores,
                                         min_keep=spec.min_keep, round_to=round_to)
        pruned, record = apply_plan(model, graph, plan)
        return 1 - cost(pruned) / total, plan, pruned, record

    target = spec.target.ratio
    trials = [attempt(target)]
    if trials[0][0] < target:  # aim higher until the measured saving crosses the target
        lo, hi = target, 0.99
        trials.append(attempt(hi))
    else:  # aim lower: the plan just short of the target may be nearer than this one
        lo, hi = 0.0, target
    for _ in range(8):
        mid = (lo + hi) / 2
        trials.append(attempt(mid))
        if trials[-1][0] >= target:
            hi = mid
        else:
            lo = mid
    _, plan, pruned, record = nearest(trials, target)
    rows = []
    for g in graph.groups:
        removed = len(plan.removed.get(g.id, ()))
        rows.append({"group": g.id, "unit": g.unit, "units": g.size, "kept": g.size - removed,
                     "prunable": g.prunable, "exact": g.exact, "reason": g.reason})
    report_curves = {g: [(float(r), float(acc)) for r, _, acc in c] for g, c in curves.items()}
    step = {"step": 0, metric: cost(pruned), "sparsity": 1 - cost(pruned) / total}
    return PruneOutcome(pruned, record, None, [step], rows, "sensitivity"), report_curves
