"""Calibration passes that fill a :class:`ScoreContext` with what criteria require.

The model is run in eval mode (no BatchNorm statistic updates, no dropout) and restored to its
mode afterwards; gradients are taken with ``torch.autograd.grad`` so ``.grad`` fields are never
touched; frozen parameters are temporarily made to require grad so they can be scored too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.importance.base import REQUIREMENTS, ActivationStats, ScoreContext

LossFn = Callable[[Any, Any], torch.Tensor]
_HOOKED = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)


def collect(model: nn.Module, loader: Iterable | None, *, needs: Iterable[str],
            loss_fn: LossFn | None = None, batches: int | None = None,
            modules: Iterable[str] | None = None, hutchinson_samples: int = 1,
            seed: int = 0) -> ScoreContext:
    """Run calibration batches and return a context holding what ``needs`` asks for.

    Parameters
    ----------
    model : nn.Module
        The model the groups were built from; left unchanged (mode, grads, weights).
    loader : iterable of (inputs, targets)
        Calibration data; inputs may be a tensor, a tuple (positional) or a dict (keywords).
        Only read when ``needs`` goes beyond ``{"weights"}``.
    needs : subset of {"weights", "grads", "activations", "hessian"}
        Usually the union of the criteria's ``requires``. ``grads`` and ``activations`` together
        also record the input products ``a * dL/da`` used by the attention-head criterion.
    loss_fn : callable(outputs, targets) -> scalar, optional
        Default cross-entropy.
    batches : int, optional
        Stop after this many batches (default: the whole loader).
    modules : iterable of str, optional
        Restrict hooks to these module names (default: every Linear, Conv and Embedding).
    hutchinson_samples : int
        Rademacher probes per batch for the Hessian diagonal.
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
    want_grad = bool(needs & {"grads", "hessian"})
    state = _State(want_products="grads" in needs and "activations" in needs)
    hooks = _install_hooks(model, state, modules) if "activations" in needs else []
    unique: dict[int, tuple[nn.Parameter, list[str]]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.is_floating_point():
            unique.setdefault(id(p), (p, []))[1].append(name)
    params = [p for p, _ in unique.values()]
    flags = [p.requires_grad for p in params]
    was_training = model.training
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, dict[int, torch.Tensor]] = {"g": {}, "g2": {}, "h": {}}
    n = 0
    try:
        model.eval()
        for p in params:
            p.requires_grad_(want_grad)
        for batch in loader:
            if batches is not None and n >= batches:
                break
            inputs, targets = _split(batch)
            state.armed = True
            with torch.set_grad_enabled(want_grad):
                outputs = run_batch(model, inputs, _device(model))
                if want_grad:
                    loss = loss_fn(outputs, to_device(targets, _device(model)))
                    _backward(loss, params, needs, hutchinson_samples, generator, sums, state)
            n += 1
    finally:
        for h in hooks:
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
    ctx.activations = {m: ActivationStats(*s) for m, s in state.stats.items()}
    ctx.input_products = {m: torch.cat(rows) for m, rows in state.rows.items()}
    ctx.collected = needs | {"weights"}
    return ctx


class _State:
    """Hook accumulators; ``armed`` is cleared before the Hessian probe so hooks fire once."""

    def __init__(self, *, want_products: bool) -> None:
        self.want_products = want_products
        self.armed = True
        self.stats: dict[str, list[torch.Tensor]] = {}
        self.rows: dict[str, list[torch.Tensor]] = {}


def _install_hooks(model: nn.Module, state: _State, modules: Iterable[str] | None) -> list:
    wanted = None if modules is None else set(modules)
    handles = []
    for name, module in model.named_modules():
        if (wanted is None and isinstance(module, _HOOKED)) or (wanted is not None and name in wanted):
            handles.append(module.register_forward_hook(_make_hook(name, module, state)))
    return handles


def _channel_axis(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.modules.conv._ConvNd) else -1


def _make_hook(name: str, module: nn.Module, state: _State) -> Callable:
    axis = _channel_axis(module)

    def hook(mod: nn.Module, args: tuple, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() >= 1:
            _accumulate_stats(state.stats, name, out.detach(), axis)
        a = args[0] if args else None
        if state.want_products and isinstance(a, torch.Tensor) and a.requires_grad and a.dim() >= 1:
            a_detached = a.detach()

            def on_grad(g: torch.Tensor) -> None:
                if state.armed:
                    rows = _per_sample(a_detached * g.detach(), axis)  # (B, features)
                    state.rows.setdefault(name, []).append(rows.double())

            a.register_hook(on_grad)

    return hook


def _accumulate_stats(table: dict[str, list[torch.Tensor]], name: str, out: torch.Tensor, axis: int) -> None:
    flat = out.movedim(axis, -1).reshape(-1, out.shape[axis]).double()  # (elements, features)
    count = torch.full((flat.shape[1],), float(flat.shape[0]), dtype=torch.float64)
    nonpositive = (flat <= 0).sum(0).double()
    abs_sum = flat.abs().sum(0)
    if name in table:
        for acc, new in zip(table[name], (count, nonpositive, abs_sum)):
            acc += new
    else:
        table[name] = [count, nonpositive, abs_sum]


def _per_sample(t: torch.Tensor, axis: int) -> torch.Tensor:
    """Sum over every axis but the batch (0) and the feature axis: (B, features)."""
    if t.dim() == 1:
        return t.unsqueeze(0)
    moved = t.movedim(axis, -1)  # (B, ..., features)
    return moved.reshape(moved.shape[0], -1, moved.shape[-1]).sum(1)


def _backward(loss: torch.Tensor, params: list[nn.Parameter], needs: frozenset[str], probes: int,
              generator: torch.Generator, sums: dict[str, dict[int, torch.Tensor]], state: _State) -> None:
    hessian = "hessian" in needs
    grads = torch.autograd.grad(loss, params, create_graph=hessian, allow_unused=True)
    state.armed = False
    for p, g in zip(params, grads):
        g = torch.zeros_like(p) if g is None else g.detach()
        _add(sums["g"], p, g)
        _add(sums["g2"], p, g * g)
    if not hessian:
        return
    used = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
    for k in range(probes):
        vs = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p, _ in used]
        hvs = torch.autograd.grad([g for _, g in used], [p for p, _ in used], grad_outputs=vs,
                                  retain_graph=k < probes - 1, allow_unused=True)
        for (p, _), v, hv in zip(used, vs, hvs):
            _add(sums["h"], p, (v * hv / probes) if hv is not None else torch.zeros_like(p))
    for p in params:  # parameters with no second-order path get a zero Hessian estimate
        sums["h"].setdefault(id(p), torch.zeros_like(p, dtype=torch.float32))


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
