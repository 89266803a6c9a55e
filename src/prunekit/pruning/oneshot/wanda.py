"""Wanda (Sun et al. 2023): prune by ``|W_ij| * ||X_j||_2``, compared within each output row.

A weight matters as much as the activation it multiplies: a small weight on a large-norm input
feature can carry more of the output than a large weight on a quiet one. Wanda needs no weight
update and no second-order information, only the input feature norms over calibration tokens.
"""

from __future__ import annotations

import torch

from prunekit.errors import InvalidParameterError


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """``|W| * ||X||`` for an (out, in) weight and the (in,) input feature norms."""
    if weight.dim() != 2 or input_norms.shape != (weight.shape[1],):
        raise InvalidParameterError(
            f"wanda_scores needs an (out, in) weight and (in,) input norms. Got {tuple(weight.shape)} and "
            f"{tuple(input_norms.shape)} instead.")
    return weight.abs().to(torch.float64) * input_norms.to(torch.float64).unsqueeze(0)


def row_keep_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask dropping the ``round(sparsity * in)`` lowest scores of every row (ties: earlier first)."""
    k = round(sparsity * scores.shape[1])
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        order = torch.sort(scores, dim=1, stable=True).indices  # (out, in)
        keep.scatter_(1, order[:, :k], False)
    return keep


def layer_keep_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask dropping the ``round(sparsity * numel)`` lowest scores of the whole layer."""
    flat = scores.flatten()
    k = round(sparsity * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:k]] = False
    return keep.view_as(scores)


def nm_keep_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the ``n`` highest of every ``m`` consecutive scores along the input (last) axis."""
    if scores.shape[-1] % m:
        raise InvalidParameterError(f"N:M sparsity needs an input dim that is a multiple of m={m}. "
                                    f"Got {scores.shape[-1]} instead.")
    groups = scores.reshape(-1, m)  # (G, m)
    order = torch.argsort(groups, dim=1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    return keep.view_as(scores)


def wanda_keep_mask(weight: torch.Tensor, input_norms: torch.Tensor, *, sparsity: float | None = None,
                    n: int | None = None, m: int | None = None) -> torch.Tensor:
    """Wanda's mask: per-row ``sparsity`` (unstructured) or ``n:m`` along the input axis."""
    scores = wanda_scores(weight, input_norms)
    if n is not None:
        return nm_keep_mask(scores, n, m)
    return row_keep_mask(scores, sparsity)
