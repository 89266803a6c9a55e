"""Seeded random scores: the honest baseline every other criterion must beat."""

from __future__ import annotations

import zlib

import torch

from prunekit.dependency.groups import ChannelGroup
from prunekit.importance.base import CRITERIA, ScoreContext


class RandomCriterion:
    """Uniform [0, 1) scores, a pure function of ``seed`` and the group id (or tensor name)."""

    name = "random"
    requires = frozenset({"weights"})

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _generator(self, key: str) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + zlib.crc32(key.encode()))

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return torch.rand(group.size, generator=self._generator(group.id))  # (size,)

    def weight_scores(self, name: str, ctx: ScoreContext) -> torch.Tensor:
        shape = ctx.tensors[name].shape
        return torch.rand(shape, generator=self._generator(name))

    def __repr__(self) -> str:
        return f"RandomCriterion(seed={self.seed})"


CRITERIA.register("random")(RandomCriterion)
