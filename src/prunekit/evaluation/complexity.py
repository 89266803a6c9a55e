"""Parameter and multiply-accumulate (MAC) counts, measured by running the model once.

MACs are counted at the torch-function level under a :class:`torch.overrides.TorchFunctionMode`,
not from module types, so functional calls inside custom modules and Hugging Face code
(``torch.matmul``, ``F.scaled_dot_product_attention``, ``torch.einsum``) are counted too. Each
op is attributed to the innermost module executing it, tracked with forward pre/post hooks.

Counted: conv1d/2d/3d (grouped), conv_transpose1d/2d/3d, linear, matmul/``@``, mm, bmm, addmm,
baddbmm, addbmm, mv, addmv, dot, einsum, scaled_dot_product_attention and
``F.multi_head_attention_forward`` (``nn.MultiheadAttention``). Element-wise work (norms,
activations, pooling, adds) is not counted: it is small next to these and is not a MAC.
Recurrent layers (``nn.LSTM``/``nn.GRU``) run in one opaque kernel and are not counted.
"""

from __future__ import annotations

import inspect
import math
import string
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from prunekit.tracing import call_model
from prunekit.errors import TracingError

ExampleInputs = torch.Tensor | tuple | Mapping[str, Any]


@dataclass(frozen=True)
class MacReport:
    """MACs of one forward pass.

    Attributes
    ----------
    total : int
        All counted multiply-accumulates.
    per_module : dict[str, int]
        MACs of ops run directly by each module (innermost module wins; the root is ``""``).
        Only modules with a non-zero count appear; values sum to ``total``.
    per_op : dict[str, int]
        MACs by op kind (``"conv2d"``, ``"linear"``, ``"matmul"``...); values sum to ``total``.
    """

    total: int
    per_module: dict[str, int]
    per_op: dict[str, int]


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements; tied (shared) parameters are counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, example_inputs: ExampleInputs) -> MacReport:
    """Run ``model`` once on ``example_inputs`` and count its multiply-accumulates.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode under ``no_grad``; its training flag is restored, nothing else changes.
        A model and inputs on the ``meta`` device work without arithmetic (torch's first meta
        call pays a one-off load of its meta kernels).
    example_inputs : tensor, tuple of tensors, or dict of keyword tensors
        Called as ``model(x)``, ``model(*x)`` or ``model(**x)``.

    Raises
    ------
    TracingError
        The forward pass failed with these inputs.
    """
    names = {module: name for name, module in model.named_modules()}
    counter = _MacCounter()
    handles = []
    for module, name in names.items():
        handles.append(module.register_forward_pre_hook(_push(counter.stack, name)))
        handles.append(module.register_forward_hook(_pop(counter.stack), always_call=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            call_model(model, example_inputs)
    except TracingError:
        raise
    except Exception as exc:  # noqa: BLE001 - any user forward error becomes one message
        raise TracingError(
            f"count_macs could not run {type(model).__name__} on the example inputs: "
            f"{type(exc).__name__}: {exc}; check the input shape and type"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return MacReport(total=sum(counter.per_op.values()), per_module=dict(counter.per_module),
                     per_op=dict(counter.per_op))


def layer_table(model: nn.Module, example_inputs: ExampleInputs) -> list[dict]:
    """One row per module that owns parameters or runs counted ops, in definition order.

    Each row: ``name``, ``type``, ``params`` (the module's own, not its children's) and
    ``macs`` (ops it runs directly, as in :attr:`MacReport.per_module`); columns sum to the
    model's totals.
    """
    report = count_macs(model, example_inputs)
    rows = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        params, macs = sum(p.numel() for p in own), report.per_module.get(name, 0)
        if params or macs:
            rows.append({"name": name, "type": type(module).__name__, "params": params, "macs": macs})
    return rows


class _MacCounter(TorchFunctionMode):
    """Counts MACs of known functions; everything else passes through untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.per_module: dict[str, int] = {}
        self.per_op: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch protocol
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        rule = _RULES.get(func)
        if rule is not None:
            kind, count = rule
            macs = int(count(func, args, kwargs, result))
            if macs:
                where = self.stack[-1] if self.stack else ""
                self.per_module[where] = self.per_module.get(where, 0) + macs
                self.per_op[kind] = self.per_op.get(kind, 0) + macs
        return result


def _push(stack: list[str], name: str) -> Callable:
    def hook(module: nn.Module, args: tuple) -> None:
        stack.append(name)

    return hook


def _pop(stack: list[str]) -> Callable:
    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        if stack:
            stack.pop()

    return hook




def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _out_numel(result: Any) -> int:
    return result.numel() if isinstance(result, torch.Tensor) else 0


def _conv(func, args, kwargs, result) -> int:
    weight = _arg(args, kwargs, 1, "weight")  # (C_out, C_in / groups, *kernel)
    return _out_numel(result) * weight.shape[1] * math.prod(weight.shape[2:])


def _conv_transpose(func, args, kwargs, result) -> int:
    x, weight = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")  # w: (C_in, C_out / groups, *k)
    return x.numel() * weight.shape[1] * math.prod(weight.shape[2:])  # every input element fans out


def _linear(func, args, kwargs, result) -> int:
    weight = _arg(args, kwargs, 1, "weight")  # (out, in)
    return _out_numel(result) * weight.shape[-1]


def _contract(index: int, name: str) -> Callable:
    """Output elements x the left operand's last dim: right for matmul, mm, bmm, mv, dot."""

    def count(func, args, kwargs, result) -> int:
        left = _arg(args, kwargs, index, name)
        return _out_numel(result) * left.shape[-1] if left.dim() else 0

    return count


def _rmatmul(func, args, kwargs, result) -> int:
    left = args[1]  # b.__rmatmul__(a) is a @ b
    return _out_numel(result) * torch.as_tensor(left).shape[-1]


def _addbmm(func, args, kwargs, result) -> int:
    b1, b2 = _arg(args, kwargs, 1, "batch1"), _arg(args, kwargs, 2, "batch2")  # (B, n, k), (B, k, m)
    return b1.shape[0] * b1.shape[1] * b1.shape[2] * b2.shape[2]


def _sdpa(func, args, kwargs, result) -> int:
    q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
    batch = math.prod(q.shape[:-2])  # (..., L, E): every query head, also under GQA
    length, source = q.shape[-2], k.shape[-2]
    return batch * length * source * q.shape[-1] + batch * length * source * v.shape[-1]  # QK^T + AV


def _mha(func, args, kwargs, result) -> int:
    bound = _MHA_SIGNATURE.bind(*args, **kwargs).arguments
    query, key, value = bound["query"], bound["key"], bound["value"]  # (L, N, E), (S, N, Ek), (S, N, Ev)
    embed = query.shape[-1]
    batch = query.shape[1] if query.dim() == 3 else 1
    length, source = query.shape[0], key.shape[0]
    macs = 0
    if bound.get("static_k") is None:
        macs += batch * source * key.shape[-1] * embed
    if bound.get("static_v") is None:
        macs += batch * source * value.shape[-1] * embed
    macs += batch * length * embed * embed  # q projection
    source += int(bound.get("bias_k") is not None) + int(bool(bound.get("add_zero_attn")))
    macs += 2 * batch * length * source * embed  # scores and weighted sum over all heads
    macs += batch * length * embed * embed  # output projection
    return macs


def _einsum(func, args, kwargs, result) -> int:
    equation, operands = args[0], args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])  # torch turns the sublist form into this string form first
    inputs, output = _parse_einsum(equation, [op.dim() for op in operands])
    sizes: dict[str, int] = {}
    for subscripts, operand in zip(inputs, operands):
        for letter, size in zip(subscripts, operand.shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    if len(inputs) == 1:
        return 0  # a trace, sum or permutation: no multiplies
    macs, current = 0, inputs[0]
    for position in range(1, len(inputs)):  # torch contracts left to right without opt_einsum
        pair = set(current) | set(inputs[position])
        macs += math.prod(sizes[c] for c in pair)
        later = set(output).union(*inputs[position + 1:])
        current = "".join(c for c in sorted(pair) if c in later)
    return macs


def _parse_einsum(equation: str, ndims: list[int]) -> tuple[list[str], str]:
    """Split ``'...ij,...jk->...ik'`` into subscripts with the ellipsis spelled out as letters."""
    equation = equation.replace(" ", "")
    lhs, _, rhs = equation.partition("->")
    inputs = lhs.split(",")
    spare = [c for c in string.ascii_letters if c not in equation]
    width = max((nd - (len(s) - 3) for s, nd in zip(inputs, ndims) if "..." in s), default=0)
    ellipsis = "".join(spare[:width])
    expanded = [s.replace("...", ellipsis[width - (nd - (len(s) - 3)):]) if "..." in s else s
                for s, nd in zip(inputs, ndims)]
    if "->" in equation:
        output = rhs.replace("...", ellipsis)
    else:
        letters = "".join(expanded)
        output = ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ellipsis))
    return expanded, output


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)

_RULES: dict[Callable, tuple[str, Callable]] = {
    F.conv1d: ("conv1d", _conv),
    F.conv2d: ("conv2d", _conv),
    F.conv3d: ("conv3d", _conv),
    F.conv_transpose1d: ("conv_transpose1d", _conv_transpose),
    F.conv_transpose2d: ("conv_transpose2d", _conv_transpose),
    F.conv_transpose3d: ("conv_transpose3d", _conv_transpose),
    F.linear: ("linear", _linear),
    torch.Tensor.__rmatmul__: ("matmul", _rmatmul),
    torch.einsum: ("einsum", _einsum),
    F.scaled_dot_product_attention: ("scaled_dot_product_attention", _sdpa),
    F.multi_head_attention_forward: ("multi_head_attention", _mha),
}

# Products exist both as torch functions and Tensor methods, with the same arguments.
for _name, _rule in [
    ("matmul", _contract(0, "input")), ("mm", _contract(0, "input")), ("bmm", _contract(0, "input")),
    ("mv", _contract(0, "input")), ("dot", _contract(0, "input")), ("addmm", _contract(1, "mat1")),
    ("baddbmm", _contract(1, "batch1")), ("addmv", _contract(1, "mat")), ("addbmm", _addbmm),
]:
    _RULES[getattr(torch, _name)] = _RULES[getattr(torch.Tensor, _name)] = (_name, _rule)
