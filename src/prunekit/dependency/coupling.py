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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.dependency.reshape import factorize
from prunekit.dependency.unionfind import ChannelSets

Labels = list  # list[np.ndarray | None], one entry per tensor axis


@dataclass
class AttrFix:
    """A module attribute that counts surviving units, e.g. ``num_heads`` or ``num_groups``."""

    module: str
    attr: str
    old_value: int
    nodes: np.ndarray  # one node per counted thing; new value = how many survive
    multiplier: int = 1


@dataclass
class SlotRecord:
    tensor: str
    axis: int
    nodes: np.ndarray
    role: str
    module: str


@dataclass
class ConvMode:
    kind: str  # "dense" | "depthwise" | "grouped" | "transposed"
    groups: int
    multiplier: int = 1  # out channels per group for depthwise


ELEMENTWISE = set(
    """add __add__ __radd__ __iadd__ add_ sub __sub__ __rsub__ __isub__ sub_ rsub mul __mul__ __rmul__ __rdiv__
    __imul__ mul_ div __truediv__ __rtruediv__ __itruediv__ div_ true_divide floor_divide __floordiv__
    __rfloordiv__ remainder __mod__ fmod pow __pow__ __rpow__ float_power neg __neg__ negative abs __abs__
    exp exp2 expm1 log log2 log10 log1p sqrt rsqrt square reciprocal sign sin cos tan sinh cosh tanh asin
    acos atan atan2 sigmoid relu relu_ relu6 gelu silu silu_ mish hardswish hardsigmoid hardtanh hardtanh_
    leaky_relu leaky_relu_ elu elu_ selu celu softplus softsign tanhshrink threshold logsigmoid log_sigmoid
    clamp clamp_ clip clamp_min clamp_max where masked_fill masked_fill_ maximum minimum fmax fmin erf erfc
    lerp addcmul addcdiv logical_and logical_or logical_not logical_xor eq ne gt lt ge le __eq__ __ne__
    __gt__ __lt__ __ge__ __le__ __and__ __or__ __xor__ __invert__ bitwise_and bitwise_or bitwise_not
    isnan isinf isfinite nan_to_num type_as fill_ zero_ copy_ round floor ceil trunc frac hypot
    dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
    contiguous clone detach detach_ to type float half double bfloat16 int long bool cpu cuda
    requires_grad_ sigmoid_ tanh_ exp_ div_ mul_ add_ clamp_ gelu_ hardswish_
    rrelu celu_ selu_ _to_copy hardshrink softshrink logit sinc xlogy sgn deg2rad rad2deg heaviside""".split()
)
REDUCTIONS = set("sum mean amax amin max min var std norm logsumexp prod nansum nanmean median mode "
                 "count_nonzero any all var_mean std_mean linalg_vector_norm vector_norm".split())
_ORD_FIRST = {"norm", "linalg_vector_norm", "vector_norm"}
ORDERING = set("cumsum cumprod argsort sort topk argmax argmin kthvalue cummax cummin".split())
RESHAPES = set("view reshape flatten unflatten view_as reshape_as squeeze unsqueeze _unsafe_view ravel".split())
IDENTITY_GETTERS = {"data"}

_EXTRA_ELEMENTWISE: set[str] = set()
_PER_HEAD_WORDS = ("dim", "size", "scale")  # head_dim, attention_head_size: sizes kept by head pruning


def register_elementwise(name: str) -> None:
    """Declare a custom op (by its function name) as elementwise so it keeps channels aligned."""
    _EXTRA_ELEMENTWISE.add(name)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _norm_axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


class CouplingTracer:
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

    # ------------------------------------------------------------------ generic rules
    def _elementwise(self, args: tuple, kwargs: dict, out: Any) -> None:
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor)]
        if not outs:
            return
        shape = outs[0].shape
        ins = _tensors_in(args, kwargs)
        result: Labels = [None] * len(shape)
        for k in range(1, len(shape) + 1):  # align from the right, as broadcasting does
            size = shape[-k]
            acc, untracked = None, False
            for t in ins:
                if t.dim() < k:
                    continue
                nodes = self.get(t)[-k]
                if t.shape[-k] != size:  # broadcast from 1: a labelled size-1 axis is lost
                    self.freeze(nodes, "broadcast along a channel axis")
                elif nodes is None:
                    untracked = untracked or size > 1
                else:
                    acc = nodes if acc is None else self.couple(acc, nodes)
            if acc is not None and untracked:
                self.freeze(acc, "combined with an untracked tensor")
            result[-k] = acc
        for o in outs:
            if o.shape == shape:
                self._store(o, list(result))

    def _pool(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        lab = self.get(x)
        spatial = 3 if "3d" in self._op else 1 if "1d" in self._op else 2
        keep = lab[: max(len(lab) - spatial, 0)]
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.dim() == len(lab):
                self._store(o, keep + [None] * spatial)
        for nodes in lab[len(keep):]:
            self.freeze(nodes, "pooled over a channel axis")

    def _resample(self, args: tuple, kwargs: dict, out: Any) -> None:  # interpolate / upsample
        lab = self.get(args[0] if args else kwargs.get("input"))
        for nodes in lab[2:]:
            self.freeze(nodes, "resampled along a channel axis")
        if isinstance(out, torch.Tensor):
            self._store(out, lab[:2] + [None] * (out.dim() - 2))

    def _pad(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        pad = _arg(args, kwargs, 1, "pad")
        lab = list(self.get(x))
        n_axes = len(pad) // 2
        for i in range(n_axes):
            ax = len(lab) - 1 - i
            if pad[2 * i] or pad[2 * i + 1]:
                self.freeze(lab[ax], "padded along a channel axis")
                lab[ax] = None
        if isinstance(out, torch.Tensor):
            self._store(out, lab)

    def _reduce(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        second = _arg(args, kwargs, 1, "other")
        if isinstance(second, torch.Tensor):  # torch.max(a, b) is elementwise
            self._elementwise(args, kwargs, out)
            return
        lab = self.get(x)
        dim = _arg(args, kwargs, 1, "dim")
        ord_first = self._op in _ORD_FIRST  # norm(x, p, dim, keepdim)
        if ord_first:
            dim = _arg(args, kwargs, 2, "dim")
        keepdim = bool(_arg(args, kwargs, 3 if ord_first else 2, "keepdim", False))
        if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
            dims = list(range(len(lab)))
        else:
            dims = [_norm_axis(d, len(lab)) for d in (dim if isinstance(dim, (tuple, list)) else [dim])]
        for d in dims:
            if lab[d] is not None:
                self.sets.mark_inexact(lab[d], f"'{self._op}' over the axis ({self.where()})")
        new = [None if i in dims else n for i, n in enumerate(lab)] if keepdim else [
            n for i, n in enumerate(lab) if i not in dims]
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.dim() == len(new):
                self._store(o, new)

    def _softmax(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        lab = self.get(x)
        dim = _arg(args, kwargs, 1, "dim")
        # softmax, log_softmax and softmin normalise over ``dim``: a removed unit leaves the sum.
        # Without a dim, torch picks one from the rank; every labelled axis is then suspect.
        axes = range(len(lab)) if dim is None else [_norm_axis(dim, len(lab))]
        for ax in axes:
            if lab[ax] is not None:
                self.sets.mark_inexact(lab[ax], f"{self._op} over the axis ({self.where()})")
        if isinstance(out, torch.Tensor):
            self._store(out, list(lab))

    def _normalize(self, args: tuple, kwargs: dict, out: Any) -> None:  # F.normalize(x, p, dim)
        lab = self.get(_arg(args, kwargs, 0, "input"))
        dim = _norm_axis(_arg(args, kwargs, 2, "dim", 1), len(lab))
        if lab[dim] is not None:
            self.sets.mark_inexact(lab[dim], f"normalize over the axis ({self.where()})")
        self._store(out, list(lab))

    def _ordering(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        lab = self.get(x)
        k_first = self._op in ("topk", "kthvalue")  # topk(x, k, dim), kthvalue(x, k, dim)
        dim = _arg(args, kwargs, 2 if k_first else 1, "dim", -1)
        if dim is None:
            self.freeze_all([x], f"'{self._op}' over flattened channels")
            return
        d = _norm_axis(dim, len(lab))
        self.freeze(lab[d], f"'{self._op}' orders positions along a channel axis")
        new = list(lab)
        new[d] = None
        reduced = new[:d] + new[d + 1:]  # argmax / argmin / kthvalue without keepdim
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.dim() == len(lab):
                self._store(o, new)
            elif isinstance(o, torch.Tensor) and o.dim() == len(lab) - 1:
                self._store(o, reduced)

    # ------------------------------------------------------------------ layers
    def _linear(self, args: tuple, kwargs: dict, out: Any) -> None:
        x, w, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        lab = self.get(x)
        w_out = self.param_axis(w, 0, "out")
        w_in = self.param_axis(w, 1, "in") if w.dim() > 1 else None
        self.couple(lab[-1] if lab else None, w_in)
        if b is not None:
            w_out = self.couple(w_out, self.param_axis(b, 0, "out"))
        self._store(out, lab[:-1] + [w_out])

    def _conv(self, args: tuple, kwargs: dict, out: Any) -> None:
        transposed = "transpose" in self._op
        x, w, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        groups = int(_arg(args, kwargs, 6, "groups", 1) or 1)
        lab = self.get(x)
        x_ch = lab[1] if len(lab) > 1 else None
        wname = self._name(w) or ""
        if transposed:
            if groups != 1:
                self.freeze(x_ch, "grouped transposed convolution")
                self._store(out, [lab[0], None] + [None] * (out.dim() - 2))
                return
            self.couple(x_ch, self.param_axis(w, 0, "in"))
            w_out = self.param_axis(w, 1, "out")
            self.conv_modes[wname] = ConvMode("transposed", 1)
        else:
            w_out = self.param_axis(w, 0, "out")
            n_out, per_group_in = w.shape[0], w.shape[1]
            if groups == 1:
                self.couple(x_ch, self.param_axis(w, 1, "in"))
                self.conv_modes[wname] = ConvMode("dense", 1)
            elif per_group_in == 1:  # depthwise: input channel j feeds outputs j*m .. j*m+m-1
                mult = n_out // groups
                if x_ch is None:
                    self.freeze(w_out, "depthwise convolution over an untracked input")
                else:
                    for j in range(groups):
                        for t in range(mult):
                            self.sets.union(int(x_ch[j]), int(w_out[j * mult + t]))
                self.conv_modes[wname] = ConvMode("depthwise", groups, mult)
            else:  # grouped: remove the same index inside every group, so groups stay equal
                w_in = self.param_axis(w, 1, "in")
                if x_ch is None:
                    self.freeze(w_in, "grouped convolution over an untracked input")
                else:
                    for j in range(groups):
                        self.couple(x_ch[j * per_group_in : (j + 1) * per_group_in], w_in)
                per_group_out = n_out // groups
                for j in range(1, groups):
                    self.couple(w_out[:per_group_out], w_out[j * per_group_out : (j + 1) * per_group_out])
                self.conv_modes[wname] = ConvMode("grouped", groups)
        if b is not None:
            w_out = self.couple(w_out, self.param_axis(b, 0, "out"))
        self._store(out, [lab[0] if lab else None, w_out] + [None] * (out.dim() - 2))

    def _embedding(self, args: tuple, kwargs: dict, out: Any) -> None:
        ids, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
        self._store(out, list(self.get(ids)) + [self.param_axis(w, 1, "out")])

    def _batch_norm(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        lab = list(self.get(x))
        ch = lab[1] if len(lab) > 1 else None
        for i, key in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
            t = _arg(args, kwargs, i, key)
            if isinstance(t, torch.Tensor):
                ch = self.couple(ch, self.param_axis(t, 0, "norm"))
        if len(lab) > 1:
            lab[1] = ch
        self._store(out, lab)

    def _instance_norm(self, args: tuple, kwargs: dict, out: Any) -> None:
        self._batch_norm(args, kwargs, out)

    def _layer_norm(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        shape = _arg(args, kwargs, 1, "normalized_shape")
        w_index, b_index = (2, 3)
        if self._op == "rms_norm":
            w_index, b_index = 2, None
        w = _arg(args, kwargs, w_index, "weight")
        b = _arg(args, kwargs, b_index, "bias") if b_index is not None else None
        lab = list(self.get(x))
        k = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
        for i in range(k):
            ax = len(lab) - k + i
            ch = lab[ax]
            for t in (w, b):
                if isinstance(t, torch.Tensor):
                    ch = self.couple(ch, self.param_axis(t, i, "norm"))
            if ch is not None:
                self.sets.mark_inexact(ch, f"{self._op} statistics over the axis ({self.where()})")
                module = self.modules.get(self._module)
                if k == 1 and module is not None and isinstance(getattr(module, "normalized_shape", None), tuple):
                    self.fixes.append(AttrFix(self._module, "normalized_shape", len(ch), ch))
            lab[ax] = ch
        self._store(out, lab)

    def _group_norm(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        n_groups = int(_arg(args, kwargs, 1, "num_groups"))
        w, b = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
        lab = list(self.get(x))
        ch = lab[1]
        for t in (w, b):
            if isinstance(t, torch.Tensor):
                ch = self.couple(ch, self.param_axis(t, 0, "norm"))
        if ch is not None:
            per = len(ch) // n_groups
            for g in range(n_groups):
                self.sets.union_all(ch[g * per : (g + 1) * per])
            self.group_kind.update(ch.tolist())
            module = self.modules.get(self._module)
            if getattr(module, "num_groups", None) == n_groups:
                self.fixes.append(AttrFix(self._module, "num_groups", n_groups, ch[::per]))
            elif n_groups > 1:
                self.freeze(ch, "group_norm whose group count is not a module attribute")
        lab[1] = ch
        self._store(out, lab)

    def _prelu(self, args: tuple, kwargs: dict, out: Any) -> None:
        x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
        lab = list(self.get(x))
        if w.numel() > 1:
            lab[1] = self.couple(lab[1], self.param_axis(w, 0, "norm"))
        self._store(out, lab)

    def _glu(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        lab = list(self.get(x))
        d = _norm_axis(_arg(args, kwargs, 1, "dim", -1), len(lab))
        if lab[d] is not None:
            half = len(lab[d]) // 2
            lab[d] = self.couple(lab[d][:half], lab[d][half:])
        self._store(out, lab)

    def _mha(self, args: tuple, kwargs: dict, out: Any) -> None:
        self.freeze_all(_tensors_in(args, kwargs), "nn.MultiheadAttention packs q/k/v (not pruned yet)")

    # ------------------------------------------------------------------ attention and products
    def _sdpa(self, args: tuple, kwargs: dict, out: Any) -> None:
        q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
        lq, lk, lv = self.get(q), self.get(k), self.get(v)
        self.couple(lq[-1], lk[-1])
        for ax in range(len(lq) - 2):
            self._couple_batch_axis(lq[ax], lk[ax], q.shape[ax], k.shape[ax])
            self._couple_batch_axis(lk[ax], lv[ax], k.shape[ax], v.shape[ax])
        mask = _arg(args, kwargs, 3, "attn_mask")
        if isinstance(mask, torch.Tensor):
            self.freeze_all([mask], "attention mask with channel axes")
        self._store(out, lq[:-1] + [lv[-1]])

    def _couple_batch_axis(self, a, b, size_a: int, size_b: int) -> None:
        if size_a == size_b:
            self.couple(a, b)
        elif a is not None and b is not None and size_a % size_b == 0:  # grouped-query attention
            rep = size_a // size_b
            for h in range(size_a):
                self.sets.union(int(a[h]), int(b[h // rep]))
        else:
            self.freeze(a, "broadcast along a channel axis")
            self.freeze(b, "broadcast along a channel axis")

    def _matmul_labels(self, a: torch.Tensor, b: torch.Tensor) -> Labels:
        la, lb = self.get(a), self.get(b)
        if a.dim() == 1 and b.dim() == 1:
            self.couple(la[0], lb[0])
            return []
        if a.dim() == 1:
            self.couple(la[0], self._role(b, lb, -2, "in"))
            return lb[:-2] + [self._role(b, lb, -1, "out")]
        if b.dim() == 1:
            self.couple(self._role(a, la, -1, "in"), lb[0])
            return la[:-1]
        self.couple(self._role(a, la, -1, "in"), self._role(b, lb, -2, "in"))
        batch_a, batch_b = la[:-2], lb[:-2]
        sa, sb = a.shape[:-2], b.shape[:-2]
        n = max(len(batch_a), len(batch_b))
        batch: Labels = [None] * n
        for i in range(1, n + 1):
            na = batch_a[-i] if i <= len(batch_a) else None
            nb = batch_b[-i] if i <= len(batch_b) else None
            za = sa[-i] if i <= len(sa) else 1
            zb = sb[-i] if i <= len(sb) else 1
            if za == zb:
                batch[-i] = self.couple(na, nb) if (na is not None or nb is not None) and za > 1 else (na if na is not None else nb)
            else:
                if za == 1:
                    self.freeze(na, "broadcast along a channel axis")
                    batch[-i] = nb
                else:
                    self.freeze(nb, "broadcast along a channel axis")
                    batch[-i] = na
        return batch + [la[-2], self._role(b, lb, -1, "out")]

    def _role(self, t: torch.Tensor, lab: Labels, axis: int, role: str):
        """For a parameter used directly in a product, label its axis with a producer/consumer role."""
        name = self._name(t)
        if name is not None and t.shape[axis] > 1:
            return self.param_axis(t, _norm_axis(axis, t.dim()), role)
        if id(t) in self.views and t.shape[axis] > 1:  # weight.T and friends
            base, order = self.views[id(t)]
            return self.param_axis(base, order[_norm_axis(axis, t.dim())], role)
        return lab[axis]

    def _note_view(self, x: torch.Tensor, out: torch.Tensor, order: list[int]) -> None:
        """Remember that ``out`` is ``x`` (a parameter, or a view of one) with axes reordered."""
        if self._name(x) is not None:
            self.views[id(out)] = (x, order)
        elif id(x) in self.views:
            base, inner = self.views[id(x)]
            self.views[id(out)] = (base, [inner[o] for o in order])

    def _matmul(self, args: tuple, kwargs: dict, out: Any) -> None:
        a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other")
        if self._op == "__rmatmul__":
            a, b = b, a
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            self._unknown(self._op, _tensors_in(args, kwargs), out)
            return
        self._store(out, self._matmul_labels(a, b))

    def _addmm(self, args: tuple, kwargs: dict, out: Any) -> None:
        bias, a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "mat1"), _arg(args, kwargs, 2, "mat2")
        lab = self._matmul_labels(a, b)
        if isinstance(bias, torch.Tensor) and bias.dim() >= 1 and bias.shape[-1] > 1:
            lb = self._role(bias, self.get(bias), -1, "out")
            lab[-1] = self.couple(lab[-1], lb)
        self._store(out, lab)

    def _einsum(self, args: tuple, kwargs: dict, out: Any) -> None:
        equation = args[0]
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        eq = equation.replace(" ", "")
        if "..." in eq or "->" not in eq:
            self._unknown("einsum (implicit or with ellipsis)", operands, out)
            return
        lhs, rhs = eq.split("->")
        terms = lhs.split(",")
        seen: dict[str, np.ndarray | None] = {}
        for term, t in zip(terms, operands):
            lab = self.get(t)
            for ax, letter in enumerate(term):
                nodes = self._role(t, lab, ax, "out" if letter in rhs else "in") if t.shape[ax] > 1 else lab[ax]
                if letter in seen:
                    if t.shape[ax] > 1:
                        seen[letter] = self.couple(seen[letter], nodes)
                else:
                    seen[letter] = nodes
        self._store(out, [seen.get(letter) for letter in rhs])

    # ------------------------------------------------------------------ shapes
    def _reshape_inplace(self, args: tuple, kwargs: dict, out: Any) -> None:
        """``x.squeeze_(d)`` / ``x.unsqueeze_(d)``: x already has its new rank; its labels do not."""
        x = args[0]
        old = self.labels.get(id(x))
        if old is None or len(old) == x.dim():  # untracked, or squeeze_ of an axis larger than one
            return
        dim = _arg(args, kwargs, 1, "dim")
        if self._op == "unsqueeze_":
            d = _norm_axis(dim, x.dim())
            self._store(x, old[:d] + [None] + old[d:])
        elif isinstance(dim, int):
            d = _norm_axis(dim, len(old))
            self.freeze(old[d], "reshape drops a channel axis")
            self._store(x, old[:d] + old[d + 1:])
        else:
            for nodes in old:
                self.freeze(nodes, "in-place squeeze of unknown axes")
            self._store(x, [None] * x.dim())

    def _reshape(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
            return
        lab = self.get(x)
        if out.shape == x.shape:
            self._store(out, list(lab))
            return
        if out.numel() != x.numel():  # view(dtype) and the like
            self._unknown(self._op, [x], out)
            return
        requested = _requested_shape(args[1:]) if self._op in ("view", "reshape") else None
        self._store(out, self._reshape_labels(list(x.shape), lab, list(out.shape), requested))

    def _reshape_labels(self, in_shape, lab, out_shape, requested) -> Labels:
        result: Labels = [None] * len(out_shape)
        for ins, outs in factorize(in_shape, out_shape):
            labelled = [a for a in ins if lab[a] is not None]
            if not labelled:
                continue
            big_in = [a for a in ins if in_shape[a] > 1]
            big_out = [o for o in outs if out_shape[o] > 1]
            if not big_out:
                for a in labelled:
                    self.freeze(lab[a], "reshape drops a channel axis")
            elif len(big_in) == 1 and len(big_out) == 1:
                result[big_out[0]] = lab[big_in[0]]
            elif len(big_out) == 1:  # merge: flatten (C, H, W) -> C*H*W, heads (h, d) -> h*d
                if len(labelled) > 1:
                    for a in labelled:
                        self.freeze(lab[a], "reshape merges two channel axes")
                    continue
                a = labelled[0]
                inner = int(np.prod([in_shape[i] for i in ins if i > a], dtype=np.int64))
                index = (np.arange(out_shape[big_out[0]]) // inner) % in_shape[a]
                result[big_out[0]] = lab[a][index]
                if int(lab[a][0]) in self.sets.head:  # heads merged back: (h, d) -> h*d
                    self._fix_literal_size(requested, big_out[0], result[big_out[0]])
            elif len(big_in) == 1:  # split: channels -> (heads, head_dim)
                result[big_out[0]] = self._split_heads(lab[big_in[0]], [out_shape[o] for o in big_out],
                                                       requested, big_out)
            else:
                for a in labelled:
                    self.freeze(lab[a], "reshape regroups channel axes")
        return result

    def _fix_literal_size(self, requested, axis: int, nodes: np.ndarray) -> None:
        """Heads merged back by a literal size: update the attribute it came from.

        ``x.reshape(b, -1, self.out_dim)`` (LeViT) must see the new ``out_dim``. Only head merges are
        handled: there the literal is nearly always an attribute, while plain channel axes are
        mostly sized from the tensor itself (``x.size(-1)``) and an attribute of equal value would
        be a coincidence. Verification after surgery catches a wrong guess.
        """
        if requested is None or len(requested) <= axis or requested[axis] == -1:
            return
        module = self.modules.get(self._module)
        if module is None:
            return
        for attr, value in vars(module).items():
            if isinstance(value, int) and not isinstance(value, bool) and value == requested[axis] and value == len(nodes):
                if not any(f.module == self._module and f.attr == attr for f in self.fixes):
                    self.fixes.append(AttrFix(self._module, attr, value, nodes))

    def _split_heads(self, nodes: np.ndarray, sizes: list[int], requested, out_axes: list[int]) -> np.ndarray:
        """Split a channel axis into (outer, inner...): the outer index becomes the unit (a head)."""
        outer = sizes[0]
        inner = len(nodes) // outer
        grid = nodes.reshape(outer, inner)
        for h in range(outer):
            self.sets.union_all(grid[h])
        self.sets.head.update(nodes.tolist())
        inferred = requested is not None and len(requested) > out_axes[0] and requested[out_axes[0]] == -1
        fixed = self._fix_head_attributes(outer, len(nodes), grid[:, 0], nodes)
        if not inferred and not fixed:
            self.freeze(nodes, f"reshape into {outer} x {inner} with a count the engine cannot update")
        return grid[:, 0]

    def _fix_head_attributes(self, outer: int, total: int, head_nodes: np.ndarray, all_nodes: np.ndarray) -> bool:
        found = False
        path = self._module
        for candidate in (path, path.rsplit(".", 1)[0] if "." in path else ""):
            module = self.modules.get(candidate)
            if module is None:
                continue
            for attr, value in vars(module).items():
                if not isinstance(value, int) or isinstance(value, bool) or "head" not in attr.lower():
                    continue
                per_head = any(word in attr.lower() for word in _PER_HEAD_WORDS)
                if value == outer and not per_head:  # head_dim may equal num_heads by chance
                    self.fixes.append(AttrFix(candidate, attr, outer, head_nodes))
                    found = True
                elif value == total and outer > 1:
                    self.fixes.append(AttrFix(candidate, attr, total, all_nodes))
            if found:
                return True
        return found

    def _permute(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0]
        lab = self.get(x)
        n = len(lab)
        if self._op == "permute":
            dims = _requested_shape(args[1:]) if len(args) > 1 else kwargs["dims"]
            order = [_norm_axis(d, n) for d in dims]
        elif self._op in ("transpose", "swapaxes", "swapdims", "transpose_"):
            d0, d1 = (_norm_axis(d, n) for d in (_arg(args, kwargs, 1, "dim0"), _arg(args, kwargs, 2, "dim1")))
            order = list(range(n))
            order[d0], order[d1] = order[d1], order[d0]
        elif self._op == "t":
            order = list(reversed(range(n)))
        else:  # movedim / moveaxis
            src, dst = _arg(args, kwargs, 1, "source"), _arg(args, kwargs, 2, "destination")
            src = [src] if isinstance(src, int) else list(src)
            dst = [dst] if isinstance(dst, int) else list(dst)
            src, dst = [_norm_axis(s, n) for s in src], [_norm_axis(d, n) for d in dst]
            rest = [i for i in range(n) if i not in src]
            order = [None] * n
            for s, d in zip(src, dst):
                order[d] = s
            it = iter(rest)
            order = [o if o is not None else next(it) for o in order]
        self._store(out, [lab[i] for i in order])
        self._note_view(x, out, order)

    def _expand(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0]
        lab = self.get(x)
        new = out.dim() - x.dim()
        result: Labels = [None] * new
        for ax, nodes in enumerate(lab):
            if x.shape[ax] == out.shape[new + ax]:
                result.append(nodes)
            else:
                self.freeze(nodes, "expanded along a channel axis")
                result.append(None)
        self._store(out, result)

    def _repeat(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0]
        lab = self.get(x)
        reps = _requested_shape(args[1:])
        new = len(reps) - x.dim()
        result: Labels = [None] * new
        for ax, nodes in enumerate(lab):
            if reps[new + ax] != 1:
                self.freeze(nodes, "tiled along a channel axis")
                result.append(None)
            else:
                result.append(nodes)
        self._store(out, result)

    def _repeat_interleave(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        repeats, dim = _arg(args, kwargs, 1, "repeats"), _arg(args, kwargs, 2, "dim")
        lab = list(self.get(x))
        if not isinstance(repeats, int) or dim is None:
            self._unknown("repeat_interleave (tensor repeats or flattened)", [x], out)
            return
        d = _norm_axis(dim, len(lab))
        if lab[d] is not None:
            lab[d] = np.repeat(lab[d], repeats)
        self._store(out, lab)

    def _cat(self, args: tuple, kwargs: dict, out: Any) -> None:
        tensors = [t for t in (_arg(args, kwargs, 0, "tensors") or []) if isinstance(t, torch.Tensor)]
        tensors = [t for t in tensors if t.dim() == out.dim()]  # legacy empty tensors are skipped
        dim = _norm_axis(_arg(args, kwargs, 1, "dim", 0), out.dim())
        labs = [self.get(t) for t in tensors]
        result: Labels = [None] * out.dim()
        for ax in range(out.dim()):
            if ax == dim:
                parts = [lab[ax] for lab in labs]
                if all(p is None for p in parts):
                    continue
                filled = []
                for t, p in zip(tensors, parts):
                    if p is None:
                        p = self.sets.new(t.shape[ax])
                        self.freeze(p, "concatenated with an untracked tensor")
                    filled.append(p)
                result[ax] = np.concatenate(filled)
            else:
                acc = labs[0][ax] if labs else None
                for lab in labs[1:]:
                    acc = self.couple(acc, lab[ax])
                result[ax] = acc
        self._store(out, result)

    def _stack(self, args: tuple, kwargs: dict, out: Any) -> None:
        tensors = [t for t in _arg(args, kwargs, 0, "tensors") if isinstance(t, torch.Tensor)]
        dim = _norm_axis(_arg(args, kwargs, 1, "dim", 0), out.dim())
        labs = [self.get(t) for t in tensors]
        merged: Labels = []
        for ax in range(tensors[0].dim()):
            acc = labs[0][ax]
            for lab in labs[1:]:
                acc = self.couple(acc, lab[ax])
            merged.append(acc)
        self._store(out, merged[:dim] + [None] + merged[dim:])

    def _split(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        lab = self.get(x)
        if self._op == "unbind":
            d = _norm_axis(_arg(args, kwargs, 1, "dim", 0), len(lab))
            self.freeze(lab[d], "unbind along a channel axis")
            for o in out:
                self._store(o, lab[:d] + lab[d + 1:])
            return
        if self._op == "chunk":
            d = _norm_axis(_arg(args, kwargs, 2, "dim", 0), len(lab))
            size_arg = None
        else:  # split / tensor_split
            d = _norm_axis(_arg(args, kwargs, 2, "dim", 0), len(lab))
            size_arg = _arg(args, kwargs, 1, "split_size_or_sections")
            if size_arg is None:
                size_arg = _arg(args, kwargs, 1, "split_size")
        nodes = lab[d]
        pieces = [o.shape[d] for o in out]
        if nodes is not None:
            equal = len(set(pieces)) == 1 and self._op != "tensor_split"
            if equal and len(pieces) > 1:
                base = nodes[: pieces[0]]
                for i in range(1, len(pieces)):
                    self.couple(base, nodes[i * pieces[0] : (i + 1) * pieces[0]])
                # chunk(n) keeps n pieces as widths shrink; split(size) must have its size updated
                if self._op == "split" and not (isinstance(size_arg, int) and self._fix_split_size(size_arg, base)):
                    self.freeze(nodes, "split by a size the engine cannot update (a literal or another tensor's width)")
            elif len(pieces) > 1:
                self.freeze(nodes, "split into unequal pieces along a channel axis")
        start = 0
        for o, size in zip(out, pieces):
            piece = list(lab)
            piece[d] = nodes[start : start + size] if nodes is not None else None
            self._store(o, piece)
            start += size

    def _fix_split_size(self, size: int, nodes: np.ndarray) -> bool:
        """A split size read from a module attribute (GPT-2's ``split_size``): it follows the cut."""
        module = self.modules.get(self._module)
        found = False
        for attr, value in (vars(module).items() if module is not None else ()):
            if isinstance(value, int) and not isinstance(value, bool) and value == size and "split" in attr.lower():
                self.fixes.append(AttrFix(self._module, attr, size, nodes))
                found = True
        return found

    def _getitem(self, args: tuple, kwargs: dict, out: Any) -> None:
        x, index = args[0], args[1]
        if not isinstance(out, torch.Tensor):
            return
        lab = self.get(x)
        index = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index) or any(
            isinstance(i, list) for i in index):
            self.freeze_all([x], "boolean or list indexing")
            return
        n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for i in index:
            if i is Ellipsis:
                expanded.extend([slice(None)] * (x.dim() - n_real))
            else:
                expanded.append(i)
        expanded.extend([slice(None)] * (x.dim() - sum(1 for i in expanded if i is not None)))
        result: Labels = []
        advanced_at: int | None = None
        ax = 0
        for i in expanded:
            if i is None:
                result.append(None)
                continue
            nodes = lab[ax]
            size = x.shape[ax]
            if isinstance(i, slice):
                if i == slice(None) or (i.start in (None, 0) and i.stop in (None,) and i.step in (None, 1)) or range(size)[i] == range(size):
                    result.append(nodes)
                else:
                    self.freeze(nodes, "partial slice of a channel axis")
                    result.append(None)
            elif isinstance(i, (int, torch.SymInt)) or (isinstance(i, torch.Tensor) and i.dim() == 0 and not i.is_floating_point()):
                self.freeze(nodes, "single position taken from a channel axis")
            elif isinstance(i, torch.Tensor):
                self.freeze(nodes, "gather along a channel axis")
                if advanced_at is None:
                    advanced_at = len(result)
                    result.extend([None] * i.dim())
            else:
                self.freeze(nodes, f"index {type(i).__name__} on a channel axis")
                result.append(None)
            ax += 1
        if len(result) != out.dim():
            self.freeze_all([x], "indexing the engine could not follow")
            return
        self._store(out, result)

    def _setitem(self, args: tuple, kwargs: dict, out: Any) -> None:
        self.freeze_all(_tensors_in(args, kwargs), "in-place assignment into a slice")


def _tensors_in(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    found = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(t for t in a if isinstance(t, torch.Tensor))
    return found


def _requested_shape(rest: tuple) -> list[int] | None:
    if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)):
        rest = tuple(rest[0])
    try:
        return [int(v) for v in rest]
    except (TypeError, ValueError):
        return None


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
