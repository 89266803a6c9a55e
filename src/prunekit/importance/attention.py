"""Attention-head importance (Michel et al., NeurIPS 2019): the gradient of a head mask.

For a head group the gate sites are the inputs of the output projection (the group's "in"
slots), so the unit gate *is* the paper's head mask ``xi_h`` and its per-sample gradient
``g_n = dL_n/dxi_h = sum over the head's positions and tokens of a * dL_n/da`` comes from
``collect(needs={"gates"})`` (:mod:`prunekit.importance.gates`).

* ``per_sample=True``: ``mean over samples of |g_n|``, the paper's ``E_x |dL(x)/dxi_h|``.
* ``per_sample=False``: ``|sum over samples of g_n|``, the mask gradient of the whole
  calibration set. On a trained model the per-sample gradients largely cancel in the sum (the
  flaw the issue found in the former ``taylor``): on the Brown transformer of
  ``benchmarks/criteria_oracle.py`` (seed 0) its Spearman with the single-unit oracle was +0.34
  against +0.60 per sample, below ``l2`` (+0.39).
* ``per_sample=None`` (default): per sample where the head-mask gate runs, else ``False``'s
  accumulated form below.

Where the consumer's forward never runs as a module (``nn.MultiheadAttention`` applies
``out_proj.weight`` functionally) no gate site fires; ``per_sample=False`` and the default then
use the exact identity for a linear or conv consumer ``sum_{rows, kernel} W * dL/dW =
sum a * dL/da`` from the accumulated weight gradient (``needs={"grads"}``), equal to
``|sum_n g_n|`` when the calibration batches have equal sizes; it has no per-sample form, so
``per_sample=True`` refuses such groups.
"""

from __future__ import annotations

from typing import Callable

import torch

from prunekit.dependency.groups import ChannelGroup
from prunekit.importance.base import CRITERIA, ScoreContext, UnscorableGroupError, is_bias, per_position
from prunekit.importance.reduce import get_reduction


class HeadImportance:
    """Head-mask gradient magnitude; see the module docstring."""

    name = "heads"
    requires = frozenset({"gates", "grads"})

    def __init__(self, *, per_sample: bool | None = None, reduction: str | Callable = "mean") -> None:
        self.per_sample = per_sample
        self.reduction = reduction

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        stats = ctx.gates.get(group.id)
        if stats is not None and any(s.startswith("consumer:") for s in stats.sites):
            if self.per_sample is not False:
                if stats.abs_sum is None:
                    raise UnscorableGroupError(f"criterion 'heads' cannot score group '{group.id}': "
                                               f"no per-sample |gate gradient| sums were collected")
                return (stats.abs_sum / max(stats.samples, 1)).float()
            return stats.g_sum.abs().float()  # (size,)
        per_slot, seen = [], set()
        for slot in group.slots_with_role("in"):
            if slot.module in seen or self.per_sample is True or slot.tensor not in ctx.grads or is_bias(slot.tensor):
                continue
            seen.add(slot.module)
            # mean over batches of the batch-mean gradient, times the samples: the sum over samples
            # of per-sample gradients when the batches have equal sizes
            products = ctx.tensor(slot.tensor) * ctx.grad(slot.tensor) * ctx.n_samples
            per_slot.append(slot.scatter(per_position(products, slot.axis), group.size).abs())  # (size,)
        if not per_slot:
            mode = "per-sample gate gradients" if self.per_sample is True else "gate gradients or weight gradients"
            raise UnscorableGroupError(
                f"criterion 'heads' cannot score group '{group.id}': no {mode} were collected for the "
                f"modules owning its 'in' slots"
            )
        return get_reduction(self.reduction, "HeadImportance")(torch.stack(per_slot))  # (size,)

    def __repr__(self) -> str:
        return f"HeadImportance(per_sample={self.per_sample}, reduction={self.reduction!r})"


CRITERIA.register("heads")(HeadImportance)
