"""Pure data describing what a structural cut touches: slots, groups and plans.

A *unit* is the smallest thing one can remove from a group: one channel, one attention head,
one conv group. Every slot maps each position of its tensor axis to the unit it belongs to, so
scores from any member can be scattered onto the group's units and a removal can be mapped
back onto every member (Torch-Pruning's root indices, done as plain arrays).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

SlotRole = Literal["out", "in", "norm", "param"]
UnitKind = Literal["channel", "head", "group"]


@dataclass(frozen=True, eq=False)
class Slot:
    """One axis of one parameter or buffer that a group cuts.

    ``unit_of_position[p]`` is the unit (0..group.size-1) that position ``p`` of ``tensor`` along
    ``axis`` belongs to, or -1 where the position belongs to another group (a concat consumer).
    ``role``: "out" produces the channels (conv/linear weight rows, embedding columns),
    "in" consumes them, "norm" is a per-channel affine or running statistic, "param" a bare
    parameter used directly in the forward (class token, positional embedding, layer scale).
    """

    tensor: str  # name in model.state_dict(), e.g. "layer1.0.conv1.weight"
    axis: int
    unit_of_position: np.ndarray  # (tensor.shape[axis],) int64
    role: SlotRole
    module: str  # qualified name of the module owning the tensor ("" for the root)

    def positions(self, units: np.ndarray | list[int]) -> np.ndarray:
        """Positions along ``axis`` that belong to the given units (sorted)."""
        return np.flatnonzero(np.isin(self.unit_of_position, np.asarray(units, dtype=np.int64)))

    def scatter(self, per_position: torch.Tensor, size: int, reduce: str = "sum") -> torch.Tensor:
        """Fold a per-position score vector onto this slot's units (positions of -1 dropped)."""
        units = torch.as_tensor(self.unit_of_position, dtype=torch.long, device=per_position.device)
        mine = units >= 0
        out = torch.zeros(size, dtype=per_position.dtype, device=per_position.device)
        if reduce == "sum":
            return out.index_add_(0, units[mine], per_position[mine])
        if reduce == "max":
            return out.scatter_reduce_(0, units[mine], per_position[mine], "amax", include_self=False)
        raise ValueError(f"reduce must be 'sum' or 'max', got {reduce!r}")


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """Coupled slots that must be cut together; the unit of pruning.

    ``exact`` is False when a normalisation or reduction mixes the units (LayerNorm, RMSNorm
    over the pruned axis): removing zeroed units then changes the statistics slightly.
    """

    id: str
    size: int  # number of units
    slots: tuple[Slot, ...]
    unit: UnitKind = "channel"
    prunable: bool = True
    reason: str = ""  # why not prunable
    exact: bool = True
    min_units: int = 1  # never cut below this many units
    inexact_reason: str = ""  # the op that mixes the units, when not exact

    def slots_with_role(self, *roles: str) -> tuple[Slot, ...]:
        return tuple(s for s in self.slots if s.role in roles)

    def describe(self) -> str:
        members = ", ".join(f"{s.tensor}[{s.axis}]" for s in self.slots[:6])
        more = f" (+{len(self.slots) - 6} more)" if len(self.slots) > 6 else ""
        state = "prunable" if self.prunable else f"frozen: {self.reason}"
        if not self.exact:
            state += f", inexact: {self.inexact_reason}"
        return f"{self.id}: {self.size} {self.unit}s, {state}; {members}{more}"


@dataclass(frozen=True)
class PruningPlan:
    """Decided removals, as data: group id -> removed unit indices. Applied by ``apply_plan``."""

    removed: dict[str, tuple[int, ...]]
    meta: dict = field(default_factory=dict)  # criterion, ratio, step... (JSON-safe values)

    def to_json(self) -> str:
        return json.dumps({"removed": {k: list(v) for k, v in self.removed.items()}, "meta": self.meta})

    @classmethod
    def from_json(cls, text: str) -> "PruningPlan":
        data = json.loads(text)
        return cls({k: tuple(int(i) for i in v) for k, v in data["removed"].items()}, data.get("meta", {}))

    @property
    def n_removed(self) -> int:
        return sum(len(v) for v in self.removed.values())
