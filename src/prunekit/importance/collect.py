"""Calibration passes that fill a :class:`ScoreContext` with what criteria require.

The model is run in eval mode (no BatchNorm statistic updates, no dropout) and restored to its
mode afterwards; gradients are taken with ``torch.autograd.grad`` so ``.grad`` fields are never
touched; frozen parameters are temporarily made to require grad so they can be scored too.
Per-group statistics (gate gradients, activations) are read at the gate sites described in
:mod:`prunekit.importance.gates`; memory for them is bounded by the number of units.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import InvalidParameterError, PrunekitWarning
from prunekit.importance.base import REQUIREMENTS, ActivationStats, ScoreContext
from prunekit.importance.gates import GateRecorder, GateStats, candidate_sites, choose_sites

LossFn = Callable[[Any, Any], torch.Tensor]


def collect(model: nn.Module, loader: Iterable | None, *, needs: Iterable[str],
            loss_fn: LossFn | None = None, batches: int | None = None,
            groups: Iterable[ChannelGroup] | None = None, hutchinson_samples: int = 1,
            exact_hessian_units: int = 64, exact_hessian_seconds: float = 300.0, seed: int = 0) -> ScoreContext:
    """Run calibration batches and return a context holding what ``needs`` asks for.

    Parameters
    ----------
    model : nn.Module
        The model the groups were built from; left unchanged (mode, grads, weights, hooks).
    loader : iterable of (inputs, targets)
        Calibration data; inputs may be a tensor, a tuple (positional) or a dict (keywords).
        Only read when ``needs`` goes beyond ``{"weights"}``.
    needs : subset of {"weights", "grads", "hessian", "gates", "gate_hessian", "gate_ggn", "activations"}
        Usually the union of the criteria's ``requires``. ``grads``/``hessian``: per weight tensor.
        ``gates``/``gate_hessian``/``gate_ggn``/``activations``: per group, at its gate sites
        (:mod:`prunekit.importance.gates`); ``gate_ggn`` and ``activations`` need no loss.
    loss_fn : callable(outputs, targets) -> tensor, optional
        Default cross-entropy. Any differentiable loss works, e.g. a distance to a dense teacher's
        outputs passed as the targets. It returns either the batch *mean* (a scalar, as
        ``F.cross_entropy`` does) or one loss per sample (shape ``(N,)``); per-sample gate
        gradients are those of each sample's own loss either way (a scalar is multiplied by N).
    batches : int, optional
        Stop after this many batches (default: the whole loader).
    groups : iterable of ChannelGroup, optional
        The groups to gate (``graph.prunable_groups()``). Default: built from the first batch's
        inputs with :func:`prunekit.dependency.build_graph` (same ids as any graph of the model).
    hutchinson_samples : int
        Rademacher probes per batch for the Hessian diagonals (weights and gates) and ``gate_ggn``.
    exact_hessian_units : int
        ``gate_hessian``: groups of at most this many units get the exact per-sample diagonal (one
        double backward per unit and batch) instead of Hutchinson probes; 0 probes every group.
    exact_hessian_seconds : float
        The exact diagonal is used only while its projected cost (units x batches x 3 forward
        passes, timed on the first batch) stays under this many seconds; beyond it every group is
        probed and a warning says so. 152 s on ResNet-8 at 28x28 (224 units, 8 batches of 64) is
        affordable; ResNet-18 at 224x224 would take hours.
    seed : int
        Seeds the Rademacher probes.
    """
    needs = frozenset(needs)
    if not needs <= REQUIREMENTS:
        raise InvalidParameterError(
            f"The 'needs' parameter of collect must be a subset of {sorted(REQUIREMENTS)}. "
            f"Got {sorted(needs)} instead."
        )
    if batches is not None and (not isinstance(batches, int) or isinstance(batches, bool) or batches < 1):
        raise InvalidParameterError(f"The 'batches' parameter of collect must be an int >= 1 or None. Got {batches!r} instead.")
    if not isinstance(exact_hessian_units, int) or isinstance(exact_hessian_units, bool) or exact_hessian_units < 0:
        raise InvalidParameterError(
            f"The 'exact_hessian_units' parameter of collect must be an int >= 0. Got {exact_hessian_units!r} instead."
        )
    if not isinstance(exact_hessian_seconds, (int, float)) or not exact_hessian_seconds >= 0:
        raise InvalidParameterError(
            f"The 'exact_hessian_seconds' parameter of collect must be a number >= 0. Got {exact_hessian_seconds!r} instead."
        )
    if not isinstance(hutchinson_samples, int) or hutchinson_samples < 1:
        raise InvalidParameterError(
            f"The 'hutchinson_samples' parameter of collect must be an int >= 1. Got {hutchinson_samples!r} instead."
        )
    ctx = ScoreContext.from_model(model)
    if needs <= {"weights"}:
        return ctx
    if loader is None:
        raise InvalidParameterError(
            f"criteria needing {sorted(needs - {'weights'})} need calibration data: pass a loader of "
            f"(inputs, targets) batches"
        )
    loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
    want_param_grad = bool(needs & {"grads", "hessian"})
    want_gates = bool(needs & {"gates", "gate_hessian", "gate_ggn"})
    want_loss = want_param_grad or bool(needs & {"gates", "gate_hessian"})
    gated = want_gates or "activations" in needs
    unique: dict[int, tuple[nn.Parameter, list[str]]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.is_floating_point():
            unique.setdefault(id(p), (p, []))[1].append(name)
    params = [p for p, _ in unique.values()]
    flags = [p.requires_grad for p in params]
    was_training = model.training
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, dict[int, torch.Tensor]] = {"g": {}, "g2": {}, "h": {}}
    recorder: GateRecorder | None = None
    handles: list = []
    gate_stats: dict[str, GateStats] = {}
    n = 0
    try:
        model.eval()
        for p in params:
            p.requires_grad_(want_param_grad)
        for batch in loader:
            if batches is not None and n >= batches:
                break
            inputs, targets = _split(batch)
            first = n == 0
            if gated and recorder is None:
                recorder, handles = _prepare_gates(model, inputs, groups, want_gates, "activations" in needs)
                gate_stats = {s.group: GateStats.zeros(s.size) for s in recorder.sites}
            if recorder is not None:
                recorder.gates = {}
            with torch.set_grad_enabled(want_param_grad or want_gates):
                started = time.perf_counter()
                outputs = run_batch(model, inputs, _device(model))
                gates = recorder.gates if recorder is not None and want_gates else {}
                if first and "gate_hessian" in needs and exact_hessian_units:
                    exact_hessian_units = _affordable_exact_units(
                        gates, exact_hessian_units, time.perf_counter() - started,
                        batches or _length(loader), exact_hessian_seconds)
                if "gate_ggn" in needs and gates:
                    _output_sensitivity(outputs, gates, hutchinson_samples, generator, gate_stats,
                                        retain=want_loss)
                if want_loss:
                    loss = loss_fn(outputs, to_device(targets, _device(model)))
                    _backward(loss, params if want_param_grad else [], gates, needs, hutchinson_samples,
                              generator, sums, gate_stats, exact_hessian_units)
                for gid, gate in gates.items():
                    gate_stats[gid].samples += gate.shape[0]
                    gate_stats[gid].batches += 1
            n += 1
            ctx.n_samples += _batch_size(inputs)
    finally:
        for h in handles:
            h.remove()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    if n == 0:
        raise InvalidParameterError("the calibration loader yielded no batches: give at least one (inputs, targets) batch")
    ctx.n_batches = n
    for p, names in unique.values():
        for key, table in (("g", ctx.grads), ("g2", ctx.grad_sq), ("h", ctx.hessian_diag)):
            if id(p) in sums[key]:
                for name in names:
                    table[name] = sums[key][id(p)] / n
    if recorder is not None:
        where: dict[str, list[str]] = {}
        for site in recorder.sites:
            where.setdefault(site.group, []).append(f"{site.kind}:{site.module}")
        ctx.gates = {gid: stats for gid, stats in gate_stats.items() if stats.samples}
        for gid, stats in ctx.gates.items():
            stats.sites = tuple(where.get(gid, ()))
        ctx.activations = {gid: ActivationStats(*acc[0]) for gid, acc in recorder.activations.items()}
    ctx.collected = needs | {"weights"}
    return ctx


def _prepare_gates(model: nn.Module, inputs: Any, groups: Iterable[ChannelGroup] | None, want_gates: bool,
                   want_activations: bool) -> tuple[GateRecorder, list]:
    """Find which gate sites run on this model (one probe forward, no gradients) and hook them."""
    if groups is None:
        from prunekit.dependency import build_graph

        groups = build_graph(model, to_device(inputs, _device(model))).prunable_groups()
    candidates = candidate_sites(model, groups)
    probe = GateRecorder([s for sites in candidates.values() for s in sites], probing=True)
    handles = probe.install(model)
    try:
        with torch.no_grad():
            run_batch(model, inputs, _device(model))
    finally:
        for h in handles:
            h.remove()
    recorder = GateRecorder(choose_sites(candidates, probe.fired), want_gates=want_gates,
                            want_activations=want_activations)
    return recorder, recorder.install(model)


def _backward(loss: torch.Tensor, params: list[nn.Parameter], gates: dict[str, torch.Tensor],
              needs: frozenset[str], probes: int, generator: torch.Generator,
              sums: dict[str, dict[int, torch.Tensor]], gate_stats: dict[str, GateStats],
              exact_units: int = 0) -> None:
    """One backward for weight gradients and per-sample gate gradients; Hutchinson probes after.

    Weight statistics are of the batch-mean loss (as before); gate gradients are rescaled to each
    sample's own loss: with a batch-mean loss, ``dL_mean/dg_n = dL_n/dg_n / N``.
    """
    if loss.dim() == 1:  # per-sample losses
        loss = loss.mean()
    elif loss.dim() != 0:
        raise InvalidParameterError(
            f"loss_fn must return a scalar (the batch mean) or one loss per sample; got shape {tuple(loss.shape)}"
        )
    gate_items = list(gates.items())
    weight_hessian, gate_hessian = "hessian" in needs, "gate_hessian" in needs
    inputs = list(params) + [g for _, g in gate_items]
    if not inputs:
        return
    grads = torch.autograd.grad(loss, inputs, create_graph=weight_hessian or gate_hessian, allow_unused=True)
    param_grads, gate_grads = grads[: len(params)], grads[len(params):]
    for p, g in zip(params, param_grads):
        g = torch.zeros_like(p) if g is None else g.detach()
        _add(sums["g"], p, g)
        _add(sums["g2"], p, g * g)
    for (gid, gate), g in zip(gate_items, gate_grads):
        n = gate.shape[0]
        g64 = (torch.zeros_like(gate) if g is None else g.detach() * n).double().cpu()  # (N, units) per-sample
        stats = gate_stats[gid]
        stats.g_sum += g64.sum(0)
        stats.g2_sum += (g64 * g64).sum(0)
        stats.abs_sum += g64.abs().sum(0)
        stats.batch_mean_sq += g64.mean(0) ** 2
    if gate_hessian:
        _gate_hutchinson(gate_items, gate_grads, probes, generator, gate_stats, retain=weight_hessian,
                         exact_units=exact_units)
    if not weight_hessian:
        return
    used = [(p, g) for p, g in zip(params, param_grads) if g is not None and g.requires_grad]
    for k in range(probes):
        vs = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p, _ in used]
        hvs = torch.autograd.grad([g for _, g in used], [p for p, _ in used], grad_outputs=vs,
                                  retain_graph=k < probes - 1, allow_unused=True)
        for (p, _), v, hv in zip(used, vs, hvs):
            _add(sums["h"], p, (v * hv / probes) if hv is not None else torch.zeros_like(p))
    for p in params:  # parameters with no second-order path get a zero Hessian estimate
        sums["h"].setdefault(id(p), torch.zeros_like(p, dtype=torch.float32))


def _output_sensitivity(outputs: Any, gates: dict[str, torch.Tensor], probes: int, generator: torch.Generator,
                        gate_stats: dict[str, GateStats], *, retain: bool) -> None:
    """``sum_n |dy_n/dgate|^2`` per unit, the Gauss-Newton diagonal of a squared distance to the outputs.

    With Rademacher ``z`` over the outputs, ``E_z[(z . dy_n/dgate)^2] = |dy_n/dgate|^2``; samples do
    not interact, so one backward of ``sum_n z_n . y_n`` gives every sample's projection. Unlike
    Hutchinson on the gate Hessian, the estimate is never negative and has no cross-unit terms.
    Needs no loss and no targets.
    """
    from prunekit.tracing import iter_tensors

    ys = [y for y in iter_tensors(outputs) if y.is_floating_point() and y.requires_grad]
    items = list(gates.items())
    if not ys or not items:
        return
    n_samples = items[0][1].shape[0]
    for k in range(probes):
        zs = [(torch.randint(0, 2, y.shape, generator=generator) * 2 - 1).to(y) for y in ys]
        total = sum((y * z).sum() for y, z in zip(ys, zs))
        grads = torch.autograd.grad(total, [g for _, g in items], retain_graph=retain or k < probes - 1,
                                    allow_unused=True)
        for (gid, gate), g in zip(items, grads):
            if g is not None and gate.shape[0] == n_samples:
                gate_stats[gid].ggn_sum += (g.detach().double().cpu() ** 2).sum(0) / probes


def _gate_hutchinson(gate_items: list, gate_grads: tuple, probes: int, generator: torch.Generator,
                     gate_stats: dict[str, GateStats], *, retain: bool, exact_units: int = 0) -> None:
    """Per-sample gate Hessian diagonal: exact for groups of at most ``exact_units`` units, else Hutchinson.

    Samples do not interact (eval mode), so the Hessian of the summed per-sample losses is
    block-diagonal over samples: a probe ``v`` of shape (N, units) reads every sample at once.
    Exact: ``v`` is one unit's column of ones, and ``(Hv)[:, u]`` is that unit's diagonal entry
    for every sample (one double backward per unit). Hutchinson: ``E_v[v * Hv]`` with Rademacher
    ``v`` over the remaining groups together, whose error per unit is the sum of its cross terms
    with every other probed unit (measured on the digits CNN: Spearman of the ``obd`` ranking with
    the single-unit oracle +0.41 with 1 probe, +0.57 with 32, +0.60 exact).
    """
    used = [(gid, gate, g) for (gid, gate), g in zip(gate_items, gate_grads) if g is not None and g.requires_grad]
    exact = [item for item in used if item[1].shape[1] <= exact_units]
    probed = [item for item in used if item[1].shape[1] > exact_units]
    calls = [(gid, gate, g, u) for gid, gate, g in exact for u in range(gate.shape[1])]
    calls += [None] * (probes if probed else 0)
    for k, call in enumerate(calls):
        keep = retain or k < len(calls) - 1
        if call is not None:
            gid, gate, g, u = call
            v = torch.zeros_like(gate)
            v[:, u] = 1.0
            (hv,) = torch.autograd.grad(g, gate, grad_outputs=v, retain_graph=keep, allow_unused=True)
            if hv is not None:
                gate_stats[gid].h_sum[u] += float(hv[:, u].detach().double().sum()) * gate.shape[0]
            continue
        vs = [(torch.randint(0, 2, gate.shape, generator=generator) * 2 - 1).to(gate) for _, gate, _ in probed]
        hvs = torch.autograd.grad([g for _, _, g in probed], [gate for _, gate, _ in probed], grad_outputs=vs,
                                  retain_graph=keep, allow_unused=True)
        for (gid, gate, _), v, hv in zip(probed, vs, hvs):
            if hv is not None:
                per_sample = v * hv * gate.shape[0] / probes  # (N, units), of each sample's own loss
                gate_stats[gid].h_sum += per_sample.detach().double().cpu().sum(0)
    for gid, _, _ in exact:
        gate_stats[gid].hessian_exact = True


def _length(loader: Iterable) -> int:
    try:
        return max(1, len(loader))  # type: ignore[arg-type]
    except TypeError:
        return 1


def _affordable_exact_units(gates: dict[str, torch.Tensor], exact_units: int, forward_s: float, batches: int,
                            budget_s: float) -> int:
    """``exact_units``, or 0 (Hutchinson everywhere, with a warning) when the exact diagonal's
    projected time, one double backward (~3 forwards) per unit of every small group and batch,
    exceeds ``budget_s``."""
    units = sum(g.shape[1] for g in gates.values() if g.shape[1] <= exact_units)
    projected = units * batches * 3 * forward_s
    if projected <= budget_s:
        return exact_units
    warnings.warn(
        f"obd: the exact gate Hessian would take about {projected:.0f} s here ({units} double backwards per "
        f"batch, {batches} batches); using Hutchinson probes for every group instead (collect("
        f"exact_hessian_seconds=...) allows more time, hutchinson_samples=... more probes)", PrunekitWarning,
        stacklevel=3)
    return 0


def _batch_size(inputs: Any) -> int:
    """Length of the first tensor's axis 0 (the batch), 1 if there is none."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    values = inputs.values() if isinstance(inputs, Mapping) else inputs if isinstance(inputs, (tuple, list)) else ()
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim():
            return int(v.shape[0])
    return 1


def _add(table: dict[int, torch.Tensor], p: torch.Tensor, value: torch.Tensor) -> None:
    value = value.detach().float()
    if id(p) in table:
        table[id(p)] += value
    else:
        table[id(p)] = value.clone()


def _split(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise InvalidParameterError(
        f"calibration batches must be (inputs, targets) pairs. Got {type(batch).__name__} instead"
    )


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    return x


def run_batch(model: nn.Module, inputs: Any, device: torch.device) -> Any:
    """Call the model on a batch's inputs: tensor, tuple (positional) or dict (keywords)."""
    inputs = to_device(inputs, device)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)
