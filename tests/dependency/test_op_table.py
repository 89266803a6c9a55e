"""Every op the coupling rules name, and common ops they do not, through zeroed-vs-removed.

Each entry is ``Linear(8, 16) -> op -> Linear(n, 4)`` on a (2, 3, 8) input (batch, tokens,
features), so the 16 hidden channels pass through the op. The engine may call a group exact only
if removing its zeroed units leaves the outputs unchanged; anything else must be frozen or marked
inexact, with a reason. A misclassified op (softmin treated as elementwise) fails here, not in a
user's model. ``test_table_covers_every_rule`` makes a new rule without an entry fail too.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from models import check_prune, randomize_norms
from prunekit.dependency import build_graph
from prunekit.dependency.graph import DependencyGraph
from prunekit.dependency.coupling import _RULES, ELEMENTWISE
from prunekit.tracing import trace_ops

torch.set_num_threads(1)
B, T, C = 2, 3, 16


class Fn(nn.Module):
    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fn(h)


class WithWeight(nn.Module):
    """An op that needs a parameter: ``fn(h, w)`` with w of shape ``shape``."""

    def __init__(self, fn: Callable, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape) / math.sqrt(shape[0]))
        self.fn = fn

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fn(h, self.w)


class Channels(nn.Module):
    """Apply a layer that wants (B, C, L...) inputs: move the hidden channels to axis 1 and back."""

    def __init__(self, layer: nn.Module, spatial: int = 1) -> None:
        super().__init__()
        self.layer, self.spatial = layer, spatial

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = h.transpose(1, 2).reshape(*h.transpose(1, 2).shape, *([1] * (self.spatial - 1)))
        return self.layer(y)


class OpNet(nn.Module):
    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.a, self.op = nn.Linear(8, C), op
        with torch.no_grad():
            n = _flat(op(self.a(torch.zeros(B, T, 8)))).shape[1]
        self.b = nn.Linear(n, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(_flat(self.op(self.a(x))))


def _flat(y) -> torch.Tensor:
    if isinstance(y, (tuple, list)):  # (values, indices) and friends: the first tensor
        y = y[0]
    return y.float().reshape(1, -1)


def _values(y):
    return y[0] if isinstance(y, (tuple, list)) else y


# ------------------------------------------------------------------------------- the table
# name (as the tracer sees it) -> list of modules running it on h: (B, T, C)
def _entries() -> dict[str, list[Callable[[], nn.Module]]]:
    f = lambda fn: (lambda: Fn(fn))  # noqa: E731
    w = lambda fn, shape: (lambda: WithWeight(fn, shape))  # noqa: E731
    ch = lambda make, spatial=1: (lambda: Channels(make(), spatial))  # noqa: E731
    heads = lambda h: h.view(B, T, -1, 8).transpose(1, 2)  # noqa: E731 (B, heads, T, 8), heads inferred
    e: dict[str, list] = {
        "linear": [w(lambda h, p: F.linear(h, p), (C, C))],
        "conv1d": [ch(lambda: nn.Conv1d(C, 8, 1))],
        "conv2d": [ch(lambda: nn.Conv2d(C, 8, 1), 2), ch(lambda: nn.Conv2d(C, C, 1, groups=C), 2)],
        "conv3d": [ch(lambda: nn.Conv3d(C, 8, 1), 3), ch(lambda: nn.Conv3d(C, C, 1, groups=4), 3)],
        "conv_transpose1d": [ch(lambda: nn.ConvTranspose1d(C, 8, 2))],
        "conv_transpose2d": [ch(lambda: nn.ConvTranspose2d(C, 8, 1), 2)],
        "conv_transpose3d": [ch(lambda: nn.ConvTranspose3d(C, 8, 1), 3)],
        "embedding": [f(lambda h: F.embedding(torch.tensor([[0, 2, 1]]), h[0]))],
        "batch_norm": [ch(lambda: nn.BatchNorm1d(C))],
        "instance_norm": [ch(lambda: nn.InstanceNorm1d(C, affine=True))],
        "layer_norm": [lambda: nn.LayerNorm(C)],
        "rms_norm": [lambda: nn.RMSNorm(C)],
        "group_norm": [ch(lambda: nn.GroupNorm(4, C))],
        "prelu": [ch(lambda: nn.PReLU(C))],
        "glu": [f(lambda h: F.glu(h, -1)), f(lambda h: F.glu(h[:, :2], 1))],
        "multi_head_attention_forward": [lambda: _MHA()],
        "scaled_dot_product_attention": [f(lambda h: F.scaled_dot_product_attention(heads(h), heads(h), heads(h)))],
        "matmul": [w(lambda h, p: torch.matmul(h, p), (C, C))],
        "__matmul__": [w(lambda h, p: h @ p, (C, C)), f(lambda h: h @ h.transpose(1, 2))],
        "__rmatmul__": [w(lambda h, p: p.__rmatmul__(h), (C, C))],
        "mm": [w(lambda h, p: h.flatten(0, 1).mm(p), (C, C))],
        "bmm": [w(lambda h, p: h.bmm(p.expand(h.shape[0], -1, -1)), (C, C))],
        "addmm": [w(lambda h, p: torch.addmm(p[0], h.flatten(0, 1), p), (C, C))],
        "baddbmm": [w(lambda h, p: torch.baddbmm(p[0], h, p.expand(h.shape[0], -1, -1)), (C, C))],
        "addbmm": [w(lambda h, p: torch.addbmm(p[0], h, p.expand(h.shape[0], -1, -1)), (C, C))],
        "einsum": [w(lambda h, p: torch.einsum("btc,cd->btd", h, p), (C, C)),
                   f(lambda h: torch.einsum("btc,bsc->bts", h, h))],
        "view": [f(lambda h: h.view(B, -1)), f(lambda h: h.view(B, T, 4, 4))],
        "reshape": [f(lambda h: h.flatten(0, 1))],
        "flatten": [f(lambda h: h.flatten(1))],
        "unflatten": [f(lambda h: h.unflatten(1, (h.shape[1], 1)))],
        "view_as": [f(lambda h: h.view_as(h))],
        "reshape_as": [f(lambda h: h.flatten(0, 1).reshape_as(h))],
        "squeeze": [f(lambda h: h.unsqueeze(2).squeeze(2))],
        "unsqueeze": [f(lambda h: h.unsqueeze(0))],
        "squeeze_": [f(lambda h: h.unsqueeze(2).squeeze_(2))],
        "unsqueeze_": [f(lambda h: h.clone().unsqueeze_(1))],
        "ravel": [f(lambda h: h.ravel())],
        "permute": [f(lambda h: h.permute(2, 0, 1))],
        "transpose": [f(lambda h: h.transpose(-1, 0))],
        "transpose_": [f(lambda h: h.clone().transpose_(1, 2))],
        "swapaxes": [f(lambda h: h.swapaxes(1, 2))],
        "swapdims": [f(lambda h: h.swapdims(0, 2))],
        "t": [f(lambda h: h.flatten(0, 1).t())],
        "movedim": [f(lambda h: h.movedim(2, 0))],
        "moveaxis": [f(lambda h: h.moveaxis(-1, 1))],
        "expand": [f(lambda h: h.unsqueeze(1).expand(-1, 2, -1, -1)), f(lambda h: h[..., :1].expand(-1, -1, 4))],
        "expand_as": [f(lambda h: h[:, :1].expand_as(h))],
        "broadcast_to": [f(lambda h: h.broadcast_to(2, *h.shape))],
        "repeat": [f(lambda h: h.repeat(1, 2, 1)), f(lambda h: h.repeat(1, 1, 2))],
        "tile": [f(lambda h: h.tile(2, 1, 1))],
        "repeat_interleave": [f(lambda h: h.repeat_interleave(2, dim=-1)), f(lambda h: h.repeat_interleave(2, dim=1))],
        "cat": [f(lambda h: torch.cat([h, h], -1)), f(lambda h: torch.cat([h, torch.ones(h.shape[0], h.shape[1], 2)], -1)),
                f(lambda h: torch.cat([h, h], 1))],
        "concat": [f(lambda h: torch.concat([h, 2 * h], -1))],
        "concatenate": [f(lambda h: torch.concatenate([h, h], 0))],
        "stack": [f(lambda h: torch.stack([h, h], 1))],
        "split": [f(lambda h: torch.stack(h.split(8, -1), 0).sum(0)), f(lambda h: torch.cat(h.split([4, 12], -1), -1))],
        "chunk": [f(lambda h: h.chunk(2, -1)[0] * h.chunk(2, -1)[1])],
        "tensor_split": [f(lambda h: h.tensor_split(2, -1)[1])],
        "unbind": [f(lambda h: h.unbind(-1)[3]), f(lambda h: h.unbind(1)[0])],
        "__getitem__": [f(lambda h: h[:, 1:]), f(lambda h: h[..., 2:10]), f(lambda h: h[:, [0, 2]]),
                        f(lambda h: h[:, :, None])],
        "__setitem__": [f(lambda h: _setitem(h))],
        "softmax": [f(lambda h: h.softmax(-1)), f(lambda h: h.softmax(1)), f(lambda h: F.softmax(h[0]))],
        "log_softmax": [f(lambda h: F.log_softmax(h, -1))],
        "_softmax": [f(lambda h: torch._softmax(h, -1, False))],
        "softmin": [f(lambda h: F.softmin(h, -1)), f(lambda h: F.softmin(h, 1))],
        "normalize": [f(lambda h: F.normalize(h, dim=-1)), f(lambda h: F.normalize(h, dim=1))],
        "interpolate": [ch(lambda: Fn(lambda y: F.interpolate(y, size=6)))],
        "upsample": [ch(lambda: Fn(lambda y: F.upsample(y, size=6)))],
        "upsample_nearest": [ch(lambda: Fn(lambda y: F.upsample_nearest(y, size=6)))],
        "upsample_bilinear": [ch(lambda: Fn(lambda y: F.upsample_bilinear(y, size=(6, 2))), 2)],
        "pad": [f(lambda h: F.pad(h, (1, 1))), f(lambda h: F.pad(h, (0, 0, 1, 1)))],
        "avg_pool1d": [ch(lambda: nn.AvgPool1d(2)), f(lambda h: F.avg_pool1d(h, 2))],
        "max_pool2d": [ch(lambda: nn.MaxPool2d((2, 1)), 2)],
        "adaptive_avg_pool1d": [ch(lambda: nn.AdaptiveAvgPool1d(1))],
        "__get__": [f(lambda h: h.data), f(lambda h: h.real), f(lambda h: h.mT), f(lambda h: h.mH),
                    f(lambda h: h.flatten(0, 1).T), f(lambda h: h.flatten(0, 1).H)],
    }
    for name in ("sum", "mean", "amax", "amin", "var", "std", "logsumexp", "prod", "nansum", "nanmean",
                 "count_nonzero", "any", "all"):
        e[name] = [f(lambda h, n=name: getattr(torch, n)(h, -1)), f(lambda h, n=name: getattr(torch, n)(h, 1))]
    for name in ("max", "min", "median", "mode", "var_mean", "std_mean", "cumsum", "cumprod", "argsort", "sort",
                 "argmax", "argmin", "cummax", "cummin"):
        e[name] = [f(lambda h, n=name: _values(getattr(torch, n)(h, -1))),
                   f(lambda h, n=name: _values(getattr(torch, n)(h, 1)))]
    e["max"].append(f(lambda h: torch.max(h, torch.sigmoid(h))))  # two tensors: elementwise
    e["norm"] = [f(lambda h: torch.norm(h, 2, -1)), f(lambda h: torch.norm(h, 2, 1))]
    e["linalg_vector_norm"] = [f(lambda h: torch.linalg.vector_norm(h, 2, -1))]
    e["vector_norm"] = e["linalg_vector_norm"]
    e["topk"] = [f(lambda h: h.topk(4, -1).values), f(lambda h: h.topk(2, 1).values)]
    e["kthvalue"] = [f(lambda h: h.kthvalue(2, -1).values), f(lambda h: h.kthvalue(2, 1).values)]
    for name in ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"):
        e[name] = [f(lambda h, n=name: getattr(F, n)(h, 0.5, False))]  # eval: the same in both models
    e["dropout_"] = [f(lambda h: torch.dropout_(h.clone(), 0.5, False))]
    e["rrelu"] = [f(lambda h: F.rrelu(h, training=False))]
    for name in sorted(ELEMENTWISE - e.keys() - set(UNREACHABLE)):
        e[name] = [f(_elementwise_call(name))]
    return e


# Names in the rules that the TorchFunctionMode never reports from Python code, with why.
UNREACHABLE = {
    "_to_copy": "aten-level op; torch functions reach the mode as 'to'",
    "_unsafe_view": "aten-level op; Python code calls view/reshape",
    "cuda": "needs a GPU",
}

# Names torch reports under another name (Tensor.__add__ is Tensor.add; F.upsample calls interpolate).
ALIASES = {"upsample": "interpolate", "upsample_nearest": "interpolate", "upsample_bilinear": "interpolate",
           "logsigmoid": "log_sigmoid", **{n: n.strip("_").removeprefix("i").removeprefix("r")
                                            for n in ELEMENTWISE if n.startswith("__")}}
ALIASES.update({"__invert__": "bitwise_not", "__mod__": "remainder", "__floordiv__": "floor_divide",
                "__rfloordiv__": "floor_divide", "__rtruediv__": "__rdiv__", "__truediv__": "div", "__rdiv__": "div", "__itruediv__": "div",
                "__abs__": "abs", "__neg__": "neg", "__and__": "bitwise_and", "__or__": "bitwise_or",
                "__xor__": "bitwise_xor", "__pow__": "pow", "__rpow__": "pow", "__rsub__": "sub", "__rmul__": "mul",
                "__radd__": "add", "__iadd__": "add_", "__imul__": "mul_", "__isub__": "sub_", "__itruediv__": "div_",
                "__matmul__": "matmul"})

# Common ops the rules do not name: each must come out frozen (unknown op) or prove exact.
UNNAMED: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "flip": lambda h: h.flip(-1),
    "roll": lambda h: h.roll(1, -1),
    "logcumsumexp": lambda h: h.logcumsumexp(-1),
    "diff": lambda h: h.diff(dim=-1),
    "narrow": lambda h: h.narrow(-1, 0, 8),
    "index_select": lambda h: h.index_select(-1, torch.tensor([0, 3, 5])),
    "gather": lambda h: h.gather(-1, torch.zeros(h.shape[0], h.shape[1], 4, dtype=torch.long)),
    "take_along_dim": lambda h: torch.take_along_dim(h, torch.ones(h.shape[0], h.shape[1], 2, dtype=torch.long), -1),
    "fft": lambda h: torch.fft.fft(h, dim=-1).real,
    "cross": lambda h: torch.cross(h, h.flip(0), dim=1),
    "cdist": lambda h: torch.cdist(h, h),
    "cosine_similarity": lambda h: F.cosine_similarity(h, h.flip(0), dim=-1),
    "pairwise_distance": lambda h: F.pairwise_distance(h, h.flip(0)),
    "local_response_norm": lambda h: F.local_response_norm(h.transpose(1, 2), 3),
    "channel_shuffle": lambda h: F.channel_shuffle(h.transpose(1, 2).unsqueeze(-1), 4),
    "pixel_shuffle": lambda h: F.pixel_shuffle(h.transpose(1, 2).unsqueeze(-1), 2),
    "unfold": lambda h: F.unfold(h.transpose(1, 2).unsqueeze(-1), (2, 1)),
    "triu": lambda h: h.triu(),
    "tril": lambda h: h.tril(1),
    "rot90": lambda h: h.rot90(1, (1, 2)),
    "quantile": lambda h: torch.quantile(h, 0.5, dim=-1),
    "renorm": lambda h: h.renorm(2, 1, 1.0),
    "cov": lambda h: torch.cov(h[0]),
    "diag_embed": lambda h: torch.diag_embed(h[0, 0]),
    "tensordot": lambda h: torch.tensordot(h, h, dims=([2], [2])),
    "kron": lambda h: torch.kron(h[0, 0], torch.ones(2)),
    "masked_select": lambda h: h.masked_select(h > 0)[:4],
    "nonzero": lambda h: torch.nonzero(h > 0)[:4],
    "trapezoid": lambda h: torch.trapezoid(h, dim=-1),
    "bucketize": lambda h: torch.bucketize(h, torch.tensor([-0.5, 0.0, 0.5])),
    "embedding_bag": lambda h: F.embedding_bag(torch.tensor([[0, 1]]), h[0]),
    "bilinear": lambda h: F.bilinear(h, h, torch.ones(2, h.shape[-1], h.shape[-1])),
    "resize_": lambda h: _resized(h),  # rank changed in place by an op no rule follows
    "as_strided": lambda h: h.as_strided((2, 8), (1, 2)),
    "masked_scatter": lambda h: h.masked_scatter(h > 0, torch.sigmoid(h)),  # source read in order: not elementwise
    "dropout (train only)": lambda h: F.dropout(h, 0.5, training=True) * 0 + h,
    "alpha_dropout": lambda h: F.alpha_dropout(h, 0.5),
    "std over all": lambda h: h - h.std(),
}


def _resized(h: torch.Tensor) -> torch.Tensor:
    y = h.clone()
    return y.resize_(y.shape[0], y.numel() // y.shape[0])


def _setitem(h: torch.Tensor) -> torch.Tensor:
    y = h.clone()
    y[:, 0] = 0.0
    return y


class _MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(C, 2, batch_first=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mha(h, h, h, need_weights=False)[0]


def _elementwise_call(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A call of the elementwise op ``name`` on h: the first of a few common forms that runs."""
    probe = torch.randn(B, T, C)
    owners = [torch.Tensor, torch, F, torch.special, torch._C._nn]
    forms = [lambda h: (h,), lambda h: (h, 0.5), lambda h: (h, torch.sigmoid(h)), lambda h: (h > 0,),
             lambda h: (h > 0, h > 0.1), lambda h: (h, torch.sigmoid(h), torch.tanh(h)), lambda h: (h > 0, h, 0.5 * h),
             lambda h: (h, h > 0.5, 1.0), lambda h: (h, h), lambda h: (h, h > 0.5, torch.sigmoid(h)),
             lambda h: (h, torch.zeros(())), lambda h: (h, 0.1, 2.0), lambda h: (h, 0.5, False),
             lambda h: (h, "torch.FloatTensor")]
    for owner in owners:
        fn = getattr(owner, name, None)
        if fn is None:
            continue
        for form in forms:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = fn(*form(probe.clone()))
            except Exception:  # noqa: BLE001 - this form does not fit the op: try the next
                continue
            if isinstance(out, torch.Tensor) and out.shape == probe.shape:
                # log, sqrt, acos, reciprocal...: keep inputs in (0.05, 0.95), where they are finite;
                # a removed channel then reads 0.5 in the zeroed model, and its consumer column is zero
                safe = bool(torch.isfinite(fn(*form(torch.zeros_like(probe)))).all() and torch.isfinite(out).all())
                domain = (lambda h: h) if safe else (lambda h: torch.sigmoid(h) * 0.9 + 0.05)
                return lambda h, fn=fn, form=form, domain=domain: fn(*form(domain(h).clone()))
    raise AssertionError(f"no call form found for elementwise op {name!r}; add an entry to the table")


ENTRIES = _entries()
CASES = [(name, i) for name, makers in ENTRIES.items() for i in range(len(makers))]


def _check(op: nn.Module, traced_name: str | None) -> DependencyGraph:
    torch.manual_seed(0)
    model = randomize_norms(OpNet(op)).eval()
    x = torch.randn(B, T, 8)
    if traced_name is not None:  # the entry really runs the op it stands for
        seen: set[str] = set()
        trace_ops(model, x, lambda name, *rest: seen.add(name))
        assert {traced_name, ALIASES.get(traced_name, "")} & seen, f"entry for {traced_name!r} ran {sorted(seen)}"
    graph = build_graph(model, x)
    for g in graph.groups:
        assert g.prunable or g.reason, g.describe()
        assert g.exact or g.inexact_reason, g.describe()
    check = check_prune(model, x, 0.5, exact_only=True, graph=graph)
    assert check.max_diff <= 1e-5 * max(check.scale, 1e-3), (
        f"groups called exact, yet zeroed vs removed differ by {check.max_diff:.2e}: "
        + "; ".join(graph.group(gid).describe() for gid in check.plan.removed))
    check_prune(model, x, 0.5, graph=graph)  # inexact groups too: must run with the same shapes
    return graph


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_named_op_is_exact_or_refused(name: str, index: int) -> None:
    graph = _check(ENTRIES[name][index](), None if name in ("vector_norm", "__get__") else name)
    if name in ELEMENTWISE:  # not vacuous: an elementwise op keeps its channels prunable and exact
        hidden = graph.group("a.weight:0")
        assert hidden.prunable and hidden.exact, hidden.describe()


@pytest.mark.parametrize("name", list(UNNAMED))
def test_unnamed_op_is_exact_or_refused(name: str) -> None:
    _check(Fn(UNNAMED[name]), None)


def test_table_covers_every_rule() -> None:
    named = set(_RULES) | ELEMENTWISE | {"__get__", "avg_pool1d", "max_pool2d", "adaptive_avg_pool1d"}
    missing = named - set(ENTRIES) - set(UNREACHABLE)
    assert not missing, f"ops with a rule but no entry in the table: {sorted(missing)}"


def test_softmin_is_inexact_over_its_axis() -> None:
    model = OpNet(Fn(lambda h: F.softmin(h, -1))).eval()
    graph = build_graph(model, torch.randn(B, T, 8))
    hidden = next(g for g in graph.groups if g.id == "a.weight:0")
    assert hidden.prunable and not hidden.exact and "softmin over the axis" in hidden.inexact_reason
