"""Channel coupling: follow every channel position through the traced ops.

Each axis of each tensor seen during the trace carries *labels*: an array of channel nodes, one
per position, or None for axes that carry no prunable channels (batch, spatial, sequence, model
inputs). Rules per op say how output labels follow from input labels and which positions must be
removed together (union). Whenever the engine cannot follow a labelled axis (an unknown op, a
partial slice, a concat with an untracked tensor) it *freezes* those channels with a reason, so a
model is never silently broken: the worst case is a group that is not prunable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.dependency.rules.attention import AttentionRules
from prunekit.dependency.rules.common import (
    _EXTRA_ELEMENTWISE, ELEMENTWISE, IDENTITY_GETTERS, ORDERING, REDUCTIONS, RESHAPES, AttrFix, ConvMode, Labels,
    SlotRecord, _tensors_in,
)
from prunekit.dependency.rules.layers import LayerRules
from prunekit.dependency.rules.pointwise import PointwiseRules
from prunekit.dependency.rules.shapes import ShapeRules
from prunekit.dependency.unionfind import ChannelSets


class CouplingTracer(PointwiseRules, LayerRules, AttentionRules, ShapeRules):
    """The visitor given to ``trace_ops``: keeps labels per tensor and applies op rules."""

    def __init__(self, model: nn.Module) -> None:
        self.sets = ChannelSets()
        self.labels: dict[int, Labels] = {}
        self._keepalive: list[Any] = []
        self.tensor_names: dict[int, list[str]] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            self.tensor_names.setdefault(id(p), []).append(name)
        for name, b in model.named_buffers(remove_duplicate=False):
            self.tensor_names.setdefault(id(b), []).append(name)
        self.slots: dict[tuple[str, int], SlotRecord] = {}
        self.fixes: list[AttrFix] = []
        self.conv_modes: dict[str, ConvMode] = {}
        self.unknown_ops: dict[str, str] = {}  # "op at module" -> reason
        self.group_kind: set[int] = set()  # nodes whose unit is a GroupNorm group
        self.modules = dict(model.named_modules())
        self.views: dict[int, tuple[torch.Tensor, list[int]]] = {}  # id(view of a param) -> (param, axis map)
        self._op = ""
        self._module = ""

    # ------------------------------------------------------------------ labels
    def _name(self, t: torch.Tensor) -> str | None:
        names = self.tensor_names.get(id(t))
        return names[0] if names else None

    def get(self, t: Any) -> Labels:
        if not isinstance(t, torch.Tensor):
            return []
        lab = self.labels.get(id(t))
        if lab is not None and len(lab) == t.dim():
            return lab
        if lab is not None:  # its rank changed in place by an op no rule followed: channels lost
            for nodes in lab:
                self.freeze(nodes, "tensor reshaped in place")
            self.labels[id(t)] = [None] * t.dim()
        name = self._name(t)
        if name is not None and t.is_floating_point():  # a bare parameter or buffer used directly
            lab = [None] * t.dim()
            for ax in range(t.dim()):
                if t.shape[ax] > 1:
                    lab[ax] = self._param_axis_nodes(t, name, ax, "param")
            self._store(t, lab)
            return lab
        return [None] * t.dim()

    def _store(self, t: torch.Tensor, lab: Labels) -> None:
        self.labels[id(t)] = lab
        self._keepalive.append(t)

    def _param_axis_nodes(self, t: torch.Tensor, name: str, axis: int, role: str) -> np.ndarray:
        key = (name, axis)
        if key not in self.slots:
            owner = name.rsplit(".", 1)[0] if "." in name else ""
            self.slots[key] = SlotRecord(name, axis, self.sets.new(t.shape[axis]), role, owner)
        elif role != "param" and self.slots[key].role == "param":
            self.slots[key].role = role
        return self.slots[key].nodes

    def param_axis(self, t: torch.Tensor | None, axis: int, role: str) -> np.ndarray | None:
        """Labels of one axis of a parameter/buffer (created on first use), or the tensor's labels."""
        if t is None:
            return None
        name = self._name(t)
        if name is None:
            return self.get(t)[axis]
        nodes = self._param_axis_nodes(t, name, axis, role)
        lab = self.labels.get(id(t))
        if lab is None:
            lab = [None] * t.dim()
            self._store(t, lab)
        lab[axis] = nodes
        return nodes

    # ------------------------------------------------------------------ coupling primitives
    def where(self) -> str:
        return f"op '{self._op}' in module '{self._module or '<root>'}'"

    def freeze(self, nodes: np.ndarray | None, why: str) -> None:
        if nodes is not None:
            self.sets.freeze(nodes, f"{why} ({self.where()})")

    def couple(self, a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
        """Positions of a and b must go together; an untracked side freezes the other."""
        if a is not None and b is not None:
            if len(a) != len(b):
                self.freeze(a, "axes of different sizes combined")
                self.freeze(b, "axes of different sizes combined")
                return a
            self.sets.union_arrays(a, b)
            return a
        if a is not None:
            self.freeze(a, "combined with an untracked tensor")
            return a
        if b is not None:
            self.freeze(b, "combined with an untracked tensor")
        return b

    def freeze_all(self, tensors: list[Any], why: str) -> None:
        for t in tensors:
            for nodes in self.get(t):
                self.freeze(nodes, why)

    # ------------------------------------------------------------------ visitor entry point
    def __call__(self, name: str, func: Callable, args: tuple, kwargs: dict, out: Any, module: str) -> None:
        self._op, self._module = name, module
        tensors_in = _tensors_in(args, kwargs)
        if name == "__get__":
            self._getter(func, args, out)
            return
        if not tensors_in:
            return
        rule = _RULES.get(name)
        if rule is None and (name in ELEMENTWISE or name in _EXTRA_ELEMENTWISE):
            rule = CouplingTracer._elementwise
        if rule is None and "pool" in name:
            rule = CouplingTracer._pool
        if rule is None:
            self._unknown(name, tensors_in, out)
            return
        rule(self, args, kwargs, out)

    def _unknown(self, name: str, tensors_in: list, out: Any) -> None:
        if any(n is not None for t in tensors_in for n in self.get(t)):
            reason = (f"op '{name}' is unknown to the coupling engine, so the channels it touches stay unpruned; "
                      "if it is elementwise call register_elementwise('" + name + "'), else ignore that layer")
            self.unknown_ops.setdefault(f"{name} in '{self._module or '<root>'}'", reason)
            self.freeze_all(tensors_in, reason)

    def _getter(self, func: Callable, args: tuple, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or not args:
            return
        attr = getattr(getattr(func, "__self__", None), "__name__", "")
        lab = self.get(args[0])
        if attr in IDENTITY_GETTERS or attr in ("real",):
            self._store(out, list(lab))
        elif attr == "T":
            self._store(out, list(reversed(lab)))
            self._note_view(args[0], out, list(reversed(range(len(lab)))))
        elif attr in ("mT", "mH", "H"):
            self._store(out, lab[:-2] + [lab[-1], lab[-2]])
            order = list(range(len(lab)))
            self._note_view(args[0], out, order[:-2] + [order[-1], order[-2]])
        else:
            self._unknown(f"attribute .{attr}", [args[0]], out)


_RULES: dict[str, Callable] = {}
for _names, _rule in [
    ("linear", CouplingTracer._linear),
    ("conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d", CouplingTracer._conv),
    ("embedding", CouplingTracer._embedding),
    ("batch_norm", CouplingTracer._batch_norm),
    ("instance_norm", CouplingTracer._instance_norm),
    ("layer_norm rms_norm", CouplingTracer._layer_norm),
    ("group_norm", CouplingTracer._group_norm),
    ("prelu", CouplingTracer._prelu),
    ("glu", CouplingTracer._glu),
    ("multi_head_attention_forward", CouplingTracer._mha),
    ("scaled_dot_product_attention", CouplingTracer._sdpa),
    ("matmul __matmul__ __rmatmul__ mm bmm", CouplingTracer._matmul),
    ("addmm baddbmm addbmm", CouplingTracer._addmm),
    ("einsum", CouplingTracer._einsum),
    (" ".join(RESHAPES), CouplingTracer._reshape),
    ("squeeze_ unsqueeze_", CouplingTracer._reshape_inplace),
    ("permute transpose transpose_ swapaxes swapdims t movedim moveaxis", CouplingTracer._permute),
    ("expand expand_as broadcast_to", CouplingTracer._expand),
    ("repeat tile", CouplingTracer._repeat),
    ("repeat_interleave", CouplingTracer._repeat_interleave),
    ("cat concat concatenate", CouplingTracer._cat),
    ("stack", CouplingTracer._stack),
    ("split chunk tensor_split unbind", CouplingTracer._split),
    ("__getitem__", CouplingTracer._getitem),
    ("__setitem__", CouplingTracer._setitem),
    (" ".join(REDUCTIONS), CouplingTracer._reduce),
    ("softmax log_softmax _softmax softmin", CouplingTracer._softmax),
    ("normalize", CouplingTracer._normalize),
    (" ".join(ORDERING), CouplingTracer._ordering),
    ("interpolate upsample upsample_nearest upsample_bilinear", CouplingTracer._resample),
    ("pad", CouplingTracer._pad),
]:
    for _n in _names.split():
        _RULES[_n] = _rule
