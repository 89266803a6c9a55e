"""Attention-head importance (Michel et al., NeurIPS 2019): the gradient of a head mask.

For a head ``h`` with mask ``xi_h`` multiplying its slice of the output projection's input
``a``, ``dL/dxi_h = sum over the head's positions and tokens of a * dL/da``. ``collect`` keeps,
per consumer module (the owner of the group's "in" slot), one row per sample of
``sum over tokens/space of a * dL/da`` (batch on axis 0).

* ``per_sample=False`` (default): ``|sum over samples, tokens, positions|``, the mask gradient of
  the whole calibration set.
* ``per_sample=True``: ``mean over samples of |...|``, the paper's ``E_x |dL(x)/dxi_h|`` (each
  sample's gradient is that of the batch-mean loss, so it is scaled by 1/batch size).

Where the consumer's forward never runs as a module (``nn.MultiheadAttention`` applies
``out_proj.weight`` functionally), the score uses the exact identity for a linear or conv
consumer ``sum_{rows, kernel} W * dL/dW = sum a * dL/da`` at each input position, from the
accumulated weight gradient; it equals the default mode and has no per-sample form.
Any group with an "in" slot can be scored this way (for channels it is the channel-gate
gradient); it is meant for ``unit == "head"`` groups.
"""

from __future__ import annotations

from typing import Callable

import torch

from prunekit.dependency.groups import ChannelGroup, Slot
from prunekit.importance.base import CRITERIA, ScoreContext, UnscorableGroupError, is_bias, per_position
from prunekit.importance.reduce import get_reduction


class HeadImportance:
    """Head-mask gradient magnitude; see the module docstring."""

    name = "heads"
    requires = frozenset({"grads", "activations"})

    def __init__(self, *, per_sample: bool = False, reduction: str | Callable = "mean") -> None:
        self.per_sample = per_sample
        self.reduction = reduction

    def _slot_score(self, slot: Slot, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor | None:
        rows = ctx.input_products.get(slot.module)
        if rows is not None and rows.shape[-1] == len(slot.unit_of_position):
            units = torch.as_tensor(slot.unit_of_position, dtype=torch.long)
            keep = units >= 0
            onehot = torch.zeros(len(units), group.size, dtype=rows.dtype)
            onehot[keep.nonzero().squeeze(1), units[keep]] = 1.0  # (features, size)
            per_head = rows @ onehot  # (n_samples, size)
            if self.per_sample:
                return per_head.abs().mean(0).float()
            return per_head.sum(0).abs().float()
        if self.per_sample or slot.tensor not in ctx.grads or is_bias(slot.tensor):
            return None
        w = ctx.tensor(slot.tensor)
        products = w * ctx.grad(slot.tensor) * ctx.n_batches  # summed, not mean, over batches
        return slot.scatter(per_position(products, slot.axis), group.size).abs()  # (size,)

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        per_slot, seen = [], set()
        for slot in group.slots_with_role("in"):
            if slot.module in seen:
                continue
            score = self._slot_score(slot, group, ctx)
            if score is not None:
                seen.add(slot.module)
                per_slot.append(score)
        if not per_slot:
            mode = "per-sample input products" if self.per_sample else "input products or weight gradients"
            raise UnscorableGroupError(
                f"criterion 'heads' cannot score group '{group.id}': no {mode} were collected for the "
                f"modules owning its 'in' slots"
            )
        return get_reduction(self.reduction, "HeadImportance")(torch.stack(per_slot))  # (size,)

    def __repr__(self) -> str:
        return f"HeadImportance(per_sample={self.per_sample}, reduction={self.reduction!r})"


CRITERIA.register("heads")(HeadImportance)
