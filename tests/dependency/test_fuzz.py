"""Random architectures: each either prunes with zeroed == pruned, or is refused clearly.

A drawn model is a stack of blocks on a (B, C, H, W) tensor: dense, grouped and depthwise convs,
BatchNorm/GroupNorm, residual adds, gates, concatenated branches, chunk/split, channels-last
LayerNorm through permutes, multi-head attention over flattened tokens, and a flatten/view head.
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from models import HeadAttention, check_prune, randomize_norms
from prunekit.dependency import build_graph
from prunekit.errors import UnsupportedLayerError

torch.set_num_threads(1)
KINDS = ["conv", "grouped", "depthwise", "bn", "gn", "residual", "gate", "concat", "chunk", "split",
         "channels_last", "attention"]


class Block(nn.Module):
    def __init__(self, kind: str, c: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.f = nn.Conv2d(c, c + 2, 3, padding=1)
        elif kind == "grouped":
            self.f = nn.Conv2d(c, c, 1, groups=2)
        elif kind == "depthwise":
            self.f = nn.Conv2d(c, 2 * c, 3, padding=1, groups=c)
        elif kind == "bn":
            self.f = nn.BatchNorm2d(c)
        elif kind == "gn":
            self.f = nn.GroupNorm(2, c)
        elif kind in ("residual", "gate"):
            self.f, self.g = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 1)
        elif kind == "concat":
            self.f, self.g = nn.Conv2d(c, 4, 1), nn.Conv2d(c, 2, 3, padding=1)
        elif kind in ("chunk", "split"):
            self.f = nn.Conv2d(c, 2 * c, 1)
        elif kind == "channels_last":
            self.norm, self.f = nn.LayerNorm(c), nn.Linear(c, c)
        elif kind == "attention":
            self.f = HeadAttention(c, 2)
        self.out_channels = {"conv": c + 2, "depthwise": 2 * c, "concat": 6}.get(kind, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, c, H, W)
        k = self.kind
        if k in ("conv", "grouped", "depthwise", "bn", "gn"):
            return F.relu(self.f(x))
        if k == "residual":
            return x + self.g(F.relu(self.f(x)))
        if k == "gate":
            return self.f(x) * torch.sigmoid(self.g(x))
        if k == "concat":
            return torch.cat([self.f(x), F.relu(self.g(x))], 1)  # (B, 6, H, W)
        if k == "chunk":
            a, b = self.f(x).chunk(2, dim=1)
            return a * b
        if k == "split":
            a, b = torch.split(self.f(x), x.shape[1], dim=1)
            return a + b
        if k == "channels_last":
            y = x.permute(0, 2, 3, 1)  # (B, H, W, c)
            return x + self.f(self.norm(y)).permute(0, 3, 1, 2)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, HW, c)
        return x + self.f(t).transpose(1, 2).reshape(b, c, h, w)


class Net(nn.Module):
    def __init__(self, kinds: list[str], width: int, flatten_head: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        blocks, c = [], width
        for kind in kinds:
            if kind == "gn" and c % 2:
                kind = "bn"
            if kind == "attention" and c % 2:
                kind = "conv"
            if kind == "grouped" and c % 2:
                kind = "depthwise"
            blocks.append(Block(kind, c))
            c = blocks[-1].out_channels
        self.blocks = nn.Sequential(*blocks)
        self.flatten_head = flatten_head
        self.head = nn.Linear(c * 16 if flatten_head else c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 4, 4)
        y = self.blocks(F.relu(self.stem(x)))
        y = y.view(y.shape[0], -1) if self.flatten_head else y.mean((2, 3))
        return self.head(y)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=5), width=st.sampled_from([4, 6, 8]),
       flatten_head=st.booleans(), ratio=st.sampled_from([0.25, 0.5]), seed=st.integers(0, 1000))
def test_random_architecture_prunes_exactly_or_is_refused(kinds, width, flatten_head, ratio, seed) -> None:
    torch.manual_seed(seed)
    model = randomize_norms(Net(kinds, width, flatten_head), seed).eval()
    x = torch.randn(2, 3, 4, 4)
    graph = build_graph(model, x)
    for g in graph.groups:  # every refusal carries a reason
        assert g.prunable or g.reason
        assert g.exact or g.inexact_reason
    try:
        check = check_prune(model, x, ratio, seed=seed, exact_only=True, graph=graph)
    except UnsupportedLayerError as exc:  # includes PruningVerificationError
        assert "'ignore'" in str(exc) or "not prunable" in str(exc)
        return
    assert check.max_diff <= 1e-4, (kinds, check.max_diff)
    if check.plan.removed:
        assert check.params_after < check.params_before
    # the inexact groups too: the model must run with the same output shape
    check_all = check_prune(model, x, ratio, seed=seed, graph=graph)
    assert math.isfinite(check_all.max_diff)
