"""Group reductions (across a group's slots) and normalizers (within a group), as objects.

Reductions turn the ``(n_slots, size)`` per-slot unit scores of one group into ``(size,)``.
Normalizers rescale one group's scores so that a single global threshold means the same thing
in every layer; all of them are monotone non-decreasing, so they never change the order of
units inside a group, only how groups compare.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from prunekit.registry import Registry

_EPS = 1e-12


class Reduction(Protocol):
    def __call__(self, per_slot: torch.Tensor) -> torch.Tensor: ...  # (n_slots, size) -> (size,)


class Normalizer(Protocol):
    def __call__(self, scores: torch.Tensor) -> torch.Tensor: ...  # (size,) -> (size,)


REDUCTIONS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("group reduction")
NORMALIZERS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("normalizer")

REDUCTIONS.register("sum")(lambda s: s.sum(0))
REDUCTIONS.register("mean")(lambda s: s.mean(0))
REDUCTIONS.register("max")(lambda s: s.max(0).values)
REDUCTIONS.register("first")(lambda s: s[0])


def get_reduction(name: str | Callable, owner: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return REDUCTIONS.resolve(name, param="reduction", owner=owner)


class Lamp:
    """Layer-adaptive magnitude-based pruning score (Lee et al., ICLR 2021).

    With the scores sorted ascending (ties by index), unit ``u`` gets
    ``s_u**power / sum_{v >= u} s_v**power``: its share of what would survive if every smaller
    unit were pruned. ``power=2`` on magnitudes is the paper's formula (squared weights).
    The largest unit of every group scores 1, so no group is ever emptied by a global cut.
    """

    def __init__(self, power: float = 2.0) -> None:
        self.power = power

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        s = scores.double().clamp_min(0) ** self.power  # (size,)
        order = torch.argsort(s, stable=True)
        tail = torch.flip(torch.cumsum(torch.flip(s[order], (0,)), 0), (0,))  # sum of sorted[i:]
        out = torch.empty_like(s)
        out[order] = s[order] / tail.clamp_min(_EPS)
        return out.to(scores.dtype)

    def __repr__(self) -> str:
        return f"Lamp(power={self.power})"


NORMALIZERS.register("none")(lambda s: s)
NORMALIZERS.register("mean")(lambda s: s / s.mean().abs().clamp_min(_EPS))
NORMALIZERS.register("max")(lambda s: s / s.max().abs().clamp_min(_EPS))
NORMALIZERS.register("sum")(lambda s: s / s.sum().abs().clamp_min(_EPS))
NORMALIZERS.register("gaussian")(lambda s: (s - s.mean()) / (s.std(unbiased=False) + 1e-8))
NORMALIZERS.register("lamp")(Lamp())


def get_normalizer(name: str | Callable | None, owner: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name is None:
        return NORMALIZERS.get("none")
    return NORMALIZERS.resolve(name, param="normalizer", owner=owner)


class Normalized:
    """A criterion whose group scores pass through a normalizer: ``Normalized(Magnitude(), Lamp())``."""

    def __init__(self, criterion: Callable, normalizer: str | Callable = "lamp") -> None:
        self.criterion = criterion
        self.normalizer = normalizer

    @property
    def requires(self) -> frozenset[str]:
        return self.criterion.requires

    def __call__(self, group, ctx) -> torch.Tensor:  # noqa: ANN001 - same as Criterion
        return get_normalizer(self.normalizer, "Normalized")(self.criterion(group, ctx))

    def __repr__(self) -> str:
        return f"Normalized({self.criterion!r}, {self.normalizer!r})"
