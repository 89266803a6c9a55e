"""Random architectures for the fuzz test and ``benchmarks/fuzz.py``: draw, prune, classify.

A drawn model is a stack of blocks on a (B, C, H, W) tensor: dense, grouped and depthwise convs,
BatchNorm/GroupNorm, residual adds, gates, concatenated branches, chunk/split, channels-last
LayerNorm through permutes, multi-head attention over flattened tokens, a branch taken only in
train mode, dropout, and a flatten/view head. Each case ends in one of four outcomes:

- ``checked``: an exact plan was cut and zeroed == removed within 1e-4 of the output's scale,
  the all-groups plan runs, and the pruned model trains (forward + backward in train mode);
- ``refused``: nothing exact could be cut, with the engine's reason (frozen, or verification);
- ``silent``: a group called exact changed the outputs: a silent corruption (must never happen);
- ``crash``: anything else raised: a bug.

Draws come from ``random.Random(seed)``: the same seed gives the same case on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models import HeadAttention, outputs, randomize_norms, ratio_plan, train_step, verified_plan
from prunekit.dependency import build_graph
from prunekit.pruning.surgery import apply_plan, zero_plan

KINDS = ["conv", "grouped", "depthwise", "bn", "gn", "residual", "gate", "concat", "chunk", "split",
         "channels_last", "attention", "train_branch", "dropout"]
TOLERANCE = 1e-4  # of the output's own scale: float32 rounding, not pruning


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
        elif kind in ("residual", "gate", "train_branch"):
            self.f, self.g = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 1)
        elif kind == "concat":
            self.f, self.g = nn.Conv2d(c, 4, 1), nn.Conv2d(c, 2, 3, padding=1)
        elif kind in ("chunk", "split"):
            self.f = nn.Conv2d(c, 2 * c, 1)
        elif kind == "channels_last":
            self.norm, self.f = nn.LayerNorm(c), nn.Linear(c, c)
        elif kind == "attention":
            self.f = HeadAttention(c, 2)
        elif kind == "dropout":
            self.f = nn.Conv2d(c, c, 1)
        self.out_channels = {"conv": c + 2, "depthwise": 2 * c, "concat": 6}.get(kind, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, c, H, W)
        k = self.kind
        if k in ("conv", "grouped", "depthwise", "bn", "gn"):
            return F.relu(self.f(x))
        if k == "residual":
            return x + self.g(F.relu(self.f(x)))
        if k == "gate":
            return self.f(x) * torch.sigmoid(self.g(x))
        if k == "train_branch":  # g runs only in train mode (an auxiliary path)
            y = F.relu(self.f(x))
            return y + self.g(x) if self.training else y
        if k == "dropout":
            return F.dropout2d(F.relu(self.f(x)), 0.2, self.training)
        if k == "concat":
            return torch.cat([self.f(x), F.relu(self.g(x))], 1)  # (B, 6, H, W)
        if k == "chunk":
            a, b = self.f(x).chunk(2, dim=1)
            return a * b
        if k == "split":  # split size read from another tensor's width: verification's job
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


@dataclass(frozen=True)
class Case:
    seed: int
    kinds: tuple[str, ...]
    width: int
    flatten_head: bool
    ratio: float


@dataclass
class Outcome:
    case: Case
    status: str  # "checked" | "refused" | "silent" | "crash"
    reason: str = ""
    relative_diff: float = 0.0


def draw(seed: int) -> Case:
    r = random.Random(seed)
    kinds = tuple(r.choice(KINDS) for _ in range(r.randint(1, 5)))
    return Case(seed, kinds, r.choice([4, 6, 8]), r.random() < 0.5, r.choice([0.25, 0.5]))


def run_case(case: Case) -> Outcome:
    try:
        return _run(case)
    except Exception as exc:  # noqa: BLE001 - any other error is a bug, recorded as data
        return Outcome(case, "crash", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _run(case: Case) -> Outcome:
    torch.manual_seed(case.seed)
    model = randomize_norms(Net(list(case.kinds), case.width, case.flatten_head), case.seed).eval()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(case.seed))
    graph = build_graph(model, x)
    unexplained = [g.id for g in graph.groups if not (g.prunable or g.reason) or not (g.exact or g.inexact_reason)]
    if unexplained:
        return Outcome(case, "crash", f"groups without a reason: {unexplained}")
    plan, dropped = verified_plan(model, graph, ratio_plan(graph, case.ratio, seed=case.seed, exact_only=True))
    if not plan.removed:
        why = next(iter(dropped.values()), "") or _why_nothing_cut(graph, case.ratio)
        return Outcome(case, "refused", why)
    pruned, _ = apply_plan(model, graph, plan)
    zeroed = zero_plan(model, graph, plan)
    a, b = outputs(zeroed, x), outputs(pruned, x)
    scale = max(float(t.abs().max()) for t in a)
    diff = max(float((s - t).abs().max()) for s, t in zip(a, b))
    if not scale > 1e-6:
        return Outcome(case, "refused", f"output scale {scale:.1e}: nothing to compare")
    if diff / scale > TOLERANCE:
        return Outcome(case, "silent", f"zeroed vs removed differ by {diff / scale:.1e} of the output scale",
                       diff / scale)
    if sum(p.numel() for p in pruned.parameters()) >= sum(p.numel() for p in model.parameters()):
        return Outcome(case, "crash", "an exact plan removed no parameter")
    every, _ = verified_plan(model, graph, ratio_plan(graph, case.ratio, seed=case.seed))  # inexact groups too
    for m in (pruned, apply_plan(model, graph, every)[0]):  # the pruned models can be fine-tuned
        train_step(m, x)
    return Outcome(case, "checked", "", diff / scale)


def _why_nothing_cut(graph, ratio: float) -> str:
    """Why no exact group could be cut: too small for the ratio, inexact, else the first frozen one."""
    exact = [g for g in graph.prunable_groups() if g.exact]
    if exact:
        return f"ratio {ratio} of the exact groups ({max(g.size for g in exact)} units at most) rounds to no unit"
    inexact = [g for g in graph.prunable_groups() if not g.exact]
    if inexact:
        return f"every prunable group is inexact: {inexact[0].inexact_reason}"
    frozen = [g for g in graph.groups if not g.prunable and "model output" not in g.reason]
    return frozen[0].reason if frozen else "no prunable group"
