"""What every coupling rule shares: the label type, records of what a cut must update, the op
vocabularies, and argument helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

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
