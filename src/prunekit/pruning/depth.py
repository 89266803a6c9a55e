"""Depth pruning: find residual blocks / transformer layers that can be bypassed, score, remove.

A block is *bypassable* when it sits in an ``nn.Sequential`` or ``nn.ModuleList`` (so the model
calls its members one after another), owns parameters and submodules (a composite block, not a
lone Linear or activation), and its output has its first input's shape and dtype. A block
returning a tuple qualifies when the first element does and the rest are ``None`` (HF layers
without attention maps or caches), since only then can an identity reproduce the structure.
Removing such a block replaces it with ``Bypass``, which returns its first input in the block's
return structure; for a residual block ``x + f(x)`` that equals zeroing the branch ``f``.
The replacement keeps the container's indices, so state_dict names of other layers do not shift.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from prunekit.tracing import call_model
from prunekit.errors import InvalidParameterError, TracingError

Inputs = Any  # a tensor, a tuple of positional tensors, or a dict of keyword tensors


class Bypass(nn.Module):
    """Stands in for a removed block: returns its first input, as a tensor or a tuple padded with None."""

    def __init__(self, *, tuple_len: int | None = None, removed: str = "") -> None:
        super().__init__()
        self.tuple_len = tuple_len
        self.removed = removed

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = _first_input(args, kwargs)
        return x if self.tuple_len is None else (x,) + (None,) * (self.tuple_len - 1)

    def extra_repr(self) -> str:
        return f"removed={self.removed!r}, tuple_len={self.tuple_len}"


@dataclass(frozen=True)
class _Probe:
    reason: str  # "" when bypassable
    tuple_len: int | None = None  # None: the block returns a tensor


def _first_input(args: tuple, kwargs: Mapping[str, Any]) -> Any:
    if args:
        return args[0]
    return next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)




def _run(model: nn.Module, inputs: Inputs) -> Any:
    """Forward in eval mode without grad (no BN statistics move), restoring the training flags."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return call_model(model, inputs)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise TracingError(
            f"The model could not run on the example inputs: {exc}. Pass inputs the forward accepts."
        ) from exc
    finally:
        for m, mode in modes.items():
            m.training = mode


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Children of every nn.Sequential / nn.ModuleList, by qualified name."""
    out: dict[str, nn.Module] = {}
    for qual, mod in model.named_modules():
        if isinstance(mod, (nn.Sequential, nn.ModuleList)):
            for child_name, child in mod.named_children():
                out[f"{qual}.{child_name}" if qual else child_name] = child
    return out


def _judge(args: tuple, kwargs: Mapping[str, Any], output: Any) -> _Probe:
    x = _first_input(args, kwargs)
    if not isinstance(x, torch.Tensor):
        return _Probe("first input is not a tensor")
    tuple_len = None
    if isinstance(output, tuple) and type(output) is tuple:
        if not output or any(o is not None for o in output[1:]):
            return _Probe("returns a tuple whose extra elements are not None")
        tuple_len, output = len(output), output[0]
    if not isinstance(output, torch.Tensor):
        return _Probe(f"returns {type(output).__name__}, not a tensor")
    if output.shape != x.shape or output.dtype != x.dtype:
        return _Probe(f"maps {tuple(x.shape)} to {tuple(output.shape)}")
    return _Probe("", tuple_len)


def _probe(model: nn.Module, example_inputs: Inputs) -> dict[str, _Probe]:
    """Run once with hooks on every candidate child and judge each."""
    candidates = _candidates(model)
    seen: dict[str, list[_Probe]] = {name: [] for name in candidates}
    handles = []
    for name, child in candidates.items():
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any, name: str = name) -> None:
            seen[name].append(_judge(args, kwargs, output))

        handles.append(child.register_forward_hook(hook, with_kwargs=True))
    try:
        _run(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    result: dict[str, _Probe] = {}
    for name, child in candidates.items():
        calls = seen[name]
        if not any(True for _ in child.children()) or not any(True for _ in child.parameters()):
            result[name] = _Probe("not a composite block with parameters")
        elif not calls:
            result[name] = _Probe("not called by the forward")
        elif any(c.reason for c in calls):
            result[name] = next(c for c in calls if c.reason)
        elif len({c.tuple_len for c in calls}) > 1:
            result[name] = _Probe("returns different structures on different calls")
        else:
            result[name] = calls[0]
    return result


def explain_blocks(model: nn.Module, example_inputs: Inputs) -> dict[str, str]:
    """Every child of a Sequential/ModuleList with why it cannot be bypassed ("" when it can)."""
    return {name: p.reason for name, p in _probe(model, example_inputs).items()}


def find_bypassable_blocks(model: nn.Module, example_inputs: Inputs) -> list[str]:
    """Names of blocks that an identity can replace (see the module docstring), in model order."""
    return [name for name, p in _probe(model, example_inputs).items() if not p.reason]


# ----------------------------------------------------------------------------- removal


def _check_names(model: nn.Module, names: Sequence[str], owner: str) -> None:
    known = _candidates(model)
    for name in names:
        if name not in known:
            is_module = name in dict(model.named_modules())
            hint = "it is not in an nn.Sequential or nn.ModuleList" if is_module else "it is not a module"
            raise InvalidParameterError(f"{owner} cannot remove block {name!r}: {hint}. Use find_bypassable_blocks().")
    for a in names:
        for b in names:
            if a != b and b.startswith(a + "."):
                raise InvalidParameterError(f"{owner} got overlapping blocks {a!r} and {b!r}. Name each block once.")


def _bypass_for(name: str, probes: Mapping[str, _Probe] | None, owner: str) -> Bypass:
    if probes is None:
        return Bypass(removed=name)
    probe = probes[name]
    if probe.reason:
        raise InvalidParameterError(f"{owner} cannot remove block {name!r}: it {probe.reason}.")
    return Bypass(tuple_len=probe.tuple_len, removed=name)


def _swap(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = parent._modules[child]
    setattr(parent, child, new)
    return old


@contextlib.contextmanager
def _bypassed(model: nn.Module, name: str, bypass: Bypass) -> Iterator[None]:
    old = _swap(model, name, bypass)
    try:
        yield
    finally:
        _swap(model, name, old)


def remove_blocks(
    model: nn.Module,
    names: Iterable[str],
    *,
    example_inputs: Inputs | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Replace the named blocks with ``Bypass``; returns the model (a deep copy unless ``inplace``).

    With ``example_inputs`` every block is checked to be bypassable and its return structure is
    reproduced (tuples padded with None); without them ``Bypass`` returns the bare tensor, which
    is right for residual blocks but not for layers that return tuples.
    """
    owner = "remove_blocks"
    names = list(names)
    _check_names(model, names, owner)
    target = model if inplace else copy.deepcopy(model)
    probes = _probe(target, example_inputs) if example_inputs is not None else None
    for name in names:
        _swap(target, name, _bypass_for(name, probes, owner))
    return target


# ----------------------------------------------------------------------------- scoring


def _primary(output: Any) -> torch.Tensor:
    """The tensor to compare: the output itself, ``logits`` of a mapping, or the first element."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return _primary(output["logits"] if "logits" in output else next(iter(output.values())))
    if isinstance(output, (tuple, list)) and output:
        return _primary(output[0])
    raise InvalidParameterError(f"score_blocks cannot compare a model output of type {type(output).__name__}.")


def _batches(data: Any, max_batches: int | None) -> list[tuple[Inputs, Any]]:
    """One set of inputs (tensor, tuple, dict) or an iterable of ``(inputs, targets)`` batches."""
    if isinstance(data, (torch.Tensor, tuple, Mapping)):
        return [(data, None)]
    out: list[tuple[Inputs, Any]] = []
    for item in data:
        if max_batches is not None and len(out) >= max_batches:
            break
        if isinstance(item, (tuple, list)) and len(item) == 2:
            out.append((item[0], item[1]))
        else:
            out.append((item, None))
    if not out:
        raise InvalidParameterError("score_blocks got no batches. Pass inputs or a non-empty loader.")
    return out


def score_blocks(
    model: nn.Module,
    blocks: Iterable[str],
    loader_or_inputs: Any,
    *,
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """How much removing each block (alone) changes the model; lower = safer to remove.

    Without ``loss_fn``: the mean squared difference between the outputs with and without the
    block, over all output elements. With ``loss_fn(output, targets)`` (batches must carry
    targets): the increase of the batch-size-weighted mean loss. The model is left unchanged.
    """
    owner = "score_blocks"
    blocks = list(blocks)
    _check_names(model, blocks, owner)
    batches = _batches(loader_or_inputs, max_batches)
    if loss_fn is not None and any(t is None for _, t in batches):
        raise InvalidParameterError(f"{owner} with a loss_fn needs (inputs, targets) batches. Pass a loader.")
    probes = _probe(model, batches[0][0])
    bypasses = {name: _bypass_for(name, probes, owner) for name in blocks}
    reference = [_primary(_run(model, inputs)) for inputs, _ in batches]

    def measure() -> float:
        if loss_fn is None:
            num = den = 0.0
            for (inputs, _), ref in zip(batches, reference):
                out = _primary(_run(model, inputs))
                num += float(((out.float() - ref.float()) ** 2).sum())
                den += ref.numel()
            return num / den
        total = count = 0.0
        for (inputs, targets), ref in zip(batches, reference):
            n = ref.shape[0] if ref.dim() else 1
            with torch.no_grad():
                total += float(loss_fn(_primary(_run(model, inputs)), targets)) * n
            count += n
        return total / count

    base = 0.0 if loss_fn is None else measure()
    scores: dict[str, float] = {}
    for name in blocks:
        with _bypassed(model, name, bypasses[name]):
            scores[name] = measure() - base
    return scores
