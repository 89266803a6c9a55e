"""Run a model once and show every tensor operation to a visitor, with the executing module.

Why a TorchFunctionMode rather than torch.fx or torch.export: it runs the model's own Python in
eager mode, so data-dependent control flow, ``**kwargs`` forwards and Hugging Face's dynamic code
all trace; the visitor sees real shapes and the exact arguments (including ``-1`` in reshapes and
the parameter objects themselves), and functional calls inside custom modules are seen too.
The cost is one forward pass on the example inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunekit.errors import TracingError
from prunekit.tracing.modes import training_mode

# Calls that only read metadata; they never carry channels anywhere.
_METADATA = {
    "dim", "size", "numel", "is_floating_point", "__len__", "__bool__", "item", "tolist",
    "element_size", "stride", "is_contiguous", "data_ptr", "get_device", "__format__", "__repr__",
    "__hash__", "__index__", "__int__", "__float__", "nelement", "ndimension", "is_complex",
    "storage_offset", "has_names", "__iter__", "__array__", "untyped_storage", "_is_view",
}

Visitor = Callable[[str, Callable, tuple, dict, Any, str], None]


def op_name(func: Callable) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return name


class _Recorder(TorchFunctionMode):
    def __init__(self, visitor: Visitor, module_stack: list[str]) -> None:
        super().__init__()
        self.visitor = visitor
        self.module_stack = module_stack

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = op_name(func)
        if name not in _METADATA:
            self.visitor(name, func, args, kwargs, out, self.module_stack[-1] if self.module_stack else "")
        return out


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """Call ``model`` with a tensor, a tuple/list of positional tensors, or a dict of keywords."""
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def iter_tensors(obj: Any):
    """Yield every tensor in a nested output (tuples, lists, dicts, HF ModelOutput)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from iter_tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from iter_tensors(v)


def trace_ops(model: nn.Module, example_inputs: Any, visitor: Visitor, *, training: bool = False) -> Any:
    """Run ``model`` once, calling ``visitor`` for each op.

    The visitor receives ``(name, func, args, kwargs, output, module_path)``. Eval mode without
    gradients by default; ``training=True`` runs the train-mode paths (see :func:`training_mode`)
    with gradients recorded, so the caller can try a backward on the output. The model's
    training flags, buffers and the global RNG are restored afterwards; nothing else is changed.
    """
    stack: list[str] = []
    handles = []

    def enter(path: str) -> Callable:
        def hook(module, args) -> None:
            stack.append(path)
        return hook

    def leave(module, args, output) -> None:
        stack.pop()

    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(path)))
        handles.append(module.register_forward_hook(leave))
    modes = {m: m.training for m in model.modules()}
    mode = training_mode(model) if training else contextlib.nullcontext()
    if not training:
        model.eval()
    try:
        with mode, torch.set_grad_enabled(training), _Recorder(visitor, stack):
            return call_model(model, example_inputs)
    except TracingError:
        raise
    except Exception as exc:  # the user's model failed to run: say so in one line
        raise TracingError(
            f"model {type(model).__name__} could not run{' in train mode' if training else ''} on the example inputs "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "check the input shape/dtype, or pass a dict of keyword inputs"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            m.train(flag)
