"""SparseGPT (Frantar & Alistarh 2023): prune a layer and update the rest of each row to make up.

For a row ``w`` of a linear layer and the Hessian ``H = 2 X X^T`` of the squared reconstruction
error, Optimal Brain Surgeon says: removing weight ``q`` costs ``w_q^2 / [H^-1]_qq``, and the other
weights of the row best compensate with ``delta = -w_q / [H^-1]_qq * H^-1[:, q]``. SparseGPT makes
this affordable for every row at once by fixing the column order: columns are pruned left to
right and only the columns to the right are updated, so the inverse Hessians needed are those of
trailing sub-matrices, all read off one upper Cholesky factor ``U`` of ``H^-1`` (``U^T U = H^-1``;
row ``i`` of ``U`` divided by ``U_ii`` is the OBS update direction once columns ``< i`` are fixed).
The mask is chosen adaptively, per block of columns, by the same cost ``w^2 / [H^-1]_jj^2``
(``U_jj^2`` is that column's ``[H^-1]_jj`` given the earlier ones).
"""

from __future__ import annotations

import torch

from prunekit.errors import InvalidParameterError


def inverse_hessian_factor(hessian: torch.Tensor, *, damp: float = 0.01) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``(H + damp * mean(diag H) * I)^-1`` (float64).

    Damping keeps ``H`` invertible when calibration inputs span fewer directions than the layer has
    inputs; features that were always zero get ``H_jj = 1`` (their weights are dropped anyway).
    """
    h = hessian.detach().to(torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info):
        raise InvalidParameterError(
            f"The Hessian of a layer is not positive definite even with damp={damp}. Raise 'damp' "
            "(e.g. 0.1) or give more calibration tokens.")
    inverse = torch.cholesky_inverse(lower)
    return torch.linalg.cholesky(inverse, upper=True)


def _block_quota(sparsity: float, rows: int, start: int, stop: int) -> int:
    """Weights to prune in columns ``[start, stop)`` so the layer total is exactly ``round(s*rows*cols)``."""
    return round(sparsity * rows * stop) - round(sparsity * rows * start)


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, *, sparsity: float | None = None,
                    n: int | None = None, m: int | None = None, keep: torch.Tensor | None = None,
                    blocksize: int = 128, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune an (out, in) ``weight`` given its input Hessian; returns ``(new_weight, keep_mask)``.

    Exactly one of: ``sparsity`` (unstructured; exactly ``round(sparsity * numel)`` weights chosen,
    compared across the rows of each column block as in the paper), ``n`` and ``m`` (N:M along the
    input axis), or a fixed ``keep`` mask (only the compensation is computed). Pruned weights are
    exactly zero; the others are updated to reduce ``||W X - W' X||``.
    """
    given = sum(x is not None for x in (sparsity, n, keep))
    if given != 1 or (n is None) != (m is None):
        raise InvalidParameterError("sparsegpt_prune takes exactly one of 'sparsity', 'n' with 'm', or 'keep'.")
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise InvalidParameterError(f"sparsegpt_prune needs a ({cols}, {cols}) Hessian for a weight with {cols} "
                                    f"inputs. Got {tuple(hessian.shape)} instead.")
    if n is not None and (cols % m or blocksize % m):
        raise InvalidParameterError(f"SparseGPT {n}:{m} needs the input dim ({cols}) and blocksize ({blocksize}) "
                                    f"to be multiples of m={m}.")
    if keep is not None and keep.shape != weight.shape:
        raise InvalidParameterError(f"The 'keep' mask must have the weight's shape {tuple(weight.shape)}. "
                                    f"Got {tuple(keep.shape)} instead.")
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(dtype).clone()
    w[:, torch.diag(hessian).to(w.device) == 0] = 0.0
    u = inverse_hessian_factor(hessian.to(w.device), damp=damp).to(dtype)  # (cols, cols) upper
    pruned = torch.zeros(rows, cols, dtype=torch.bool, device=w.device)
    for start in range(0, cols, blocksize):
        stop = min(start + blocksize, cols)
        block = w[:, start:stop].clone()  # (rows, b)
        u_block = u[start:stop, start:stop]
        errors = torch.zeros_like(block)
        d = torch.diag(u_block)  # (b,)
        if keep is not None:
            drop = (~keep[:, start:stop]).to(w.device)
        elif sparsity is not None:
            cost = (block * block / (d * d).unsqueeze(0)).flatten()
            drop = torch.zeros(cost.numel(), dtype=torch.bool, device=w.device)
            drop[torch.sort(cost, stable=True).indices[:_block_quota(sparsity, rows, start, stop)]] = True
            drop = drop.view_as(block)
        else:
            drop = torch.zeros_like(block, dtype=torch.bool)
        for i in range(stop - start):
            if n is not None and i % m == 0:  # choose this run of m with the weights as updated so far
                run = block[:, i:i + m]
                cost = run * run / (d[i:i + m] * d[i:i + m]).unsqueeze(0)
                lowest = torch.argsort(cost, dim=1, stable=True)[:, : m - n]
                drop[:, i:i + m].scatter_(1, lowest, True)
            col = block[:, i]
            target = torch.where(drop[:, i], torch.zeros_like(col), col)
            err = (col - target) / d[i]  # (rows,)
            block[:, i:] -= err.unsqueeze(1) * u_block[i, i:].unsqueeze(0)
            block[:, i] = target
            errors[:, i] = err
        w[:, start:stop] = block
        w[:, stop:] -= errors @ u[start:stop, stop:]
        pruned[:, start:stop] = drop
    w[pruned] = 0.0
    return w.to(weight.dtype), ~pruned
