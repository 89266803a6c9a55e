"""SparseGPT: the OBS update by hand, lower reconstruction error than magnitude, exact patterns."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import InvalidParameterError
from prunekit.pruning.masking import check_nm
from prunekit.pruning.oneshot.sparsegpt import sparsegpt_prune


def _layer(rows: int = 6, cols: int = 16, tokens: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    x = torch.randn(tokens, cols, generator=g, dtype=torch.float64) @ torch.randn(cols, cols, generator=g,
                                                                                  dtype=torch.float64)
    return w, x, 2 * x.T @ x / tokens  # correlated inputs: compensation has something to do


def _error(w: torch.Tensor, new: torch.Tensor, x: torch.Tensor) -> float:
    return float(torch.linalg.norm(x @ w.T - x @ new.T))


@pytest.mark.parametrize("q", [0, 5])
def test_one_pruned_weight_gets_the_obs_update(q: int) -> None:
    w, _, h = _layer(rows=1, cols=8)
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[0, q] = False
    new, mask = sparsegpt_prune(w, h, keep=keep, damp=0.0, blocksize=4)
    # columns left of q are already fixed, so OBS acts on the trailing columns F = [q, cols)
    h_inv = torch.linalg.inv(h[q:, q:])
    expected = w.clone()
    expected[0, q:] -= w[0, q] / h_inv[0, 0] * h_inv[:, 0]
    assert torch.allclose(new, expected, atol=1e-10)
    assert new[0, q] == 0 and torch.equal(mask, keep)


def test_compensation_beats_plain_zeroing_with_the_same_mask() -> None:
    w, x, h = _layer()
    keep = w.abs() >= w.abs().median(dim=1, keepdim=True).values  # magnitude's mask
    new, mask = sparsegpt_prune(w, h, keep=keep, damp=0.0, blocksize=8)
    assert torch.equal(mask, keep) and torch.equal(new == 0, ~keep)
    # between plain zeroing and the least-squares optimum of each row over its kept weights
    best = torch.zeros_like(w)
    for r in range(w.shape[0]):
        kept = keep[r]
        best[r, kept] = torch.linalg.lstsq(x[:, kept], x @ w[r], driver="gelsd").solution
    assert _error(w, best, x) <= _error(w, new, x) < _error(w, w * keep, x)


@pytest.mark.parametrize("sparsity", [0.5, 0.3, 0.7])
def test_unstructured_sparsity_is_exact_and_beats_magnitude(sparsity: float) -> None:
    w, x, h = _layer(rows=7, cols=24)
    new, keep = sparsegpt_prune(w, h, sparsity=sparsity, blocksize=8)
    assert int((~keep).sum()) == round(sparsity * w.numel())  # whole-layer count, exact across blocks
    assert int((new == 0).sum()) == round(sparsity * w.numel())
    flat = w.abs().flatten()
    magnitude = (flat >= flat.sort().values[round(sparsity * flat.numel())]).view_as(w)
    assert _error(w, new, x) < _error(w, w * magnitude, x)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_pattern_is_valid(n: int, m: int) -> None:
    w, x, h = _layer(rows=5, cols=32)
    new, keep = sparsegpt_prune(w, h, n=n, m=m, blocksize=16)
    assert check_nm(new, n, m) and (keep.view(-1, m).sum(1) == n).all()
    assert torch.equal(new == 0, ~keep)


def test_float32_weights_come_back_float32() -> None:
    w, _, h = _layer()
    new, _ = sparsegpt_prune(w.float(), h.float(), sparsity=0.5)
    assert new.dtype == torch.float32 and int((new == 0).sum()) == w.numel() // 2


def test_bad_arguments_are_one_line_errors() -> None:
    w, _, h = _layer()
    with pytest.raises(InvalidParameterError, match="exactly one of"):
        sparsegpt_prune(w, h, sparsity=0.5, n=2, m=4)
    with pytest.raises(InvalidParameterError, match=r"\(16, 16\) Hessian.*Got \(8, 8\)"):
        sparsegpt_prune(w, h[:8, :8], sparsity=0.5)
    with pytest.raises(InvalidParameterError, match="multiples of m=8"):
        sparsegpt_prune(w, h, n=2, m=8, blocksize=12)
    with pytest.raises(InvalidParameterError, match="not positive definite"):
        sparsegpt_prune(w, -torch.eye(16, dtype=torch.float64), sparsity=0.5, damp=0.0)
