"""Wanda: |W|·||X|| scores per output row, and its unstructured and N:M masks, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from prunekit.errors import InvalidParameterError
from prunekit.pruning.masking import check_nm
from prunekit.pruning.oneshot.stats import InputStats
from prunekit.pruning.oneshot.wanda import nm_keep_mask, row_keep_mask, wanda_keep_mask, wanda_scores

W = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, -0.5]])
X = torch.tensor([[1.0, 0.0, 2.0], [2.0, 0.0, 1.0], [2.0, 0.1, 0.0]])  # 3 tokens, 3 input features


def test_input_norms_and_scores_match_a_hand_computation() -> None:
    stats = InputStats(3, hessian=True)
    stats.add(X[:2].unsqueeze(0))  # batches may be (B, T, in); tokens are what count
    stats.add(X[2:])
    norms = stats.norms()
    assert stats.tokens == 3
    assert torch.allclose(norms, torch.tensor([3.0, 0.1, math.sqrt(5.0)], dtype=torch.float64))
    assert torch.allclose(stats.hessian(), 2 * (X.T @ X).double() / 3)
    expected = torch.tensor([[1 * 3.0, 2 * 0.1, 3 * math.sqrt(5)], [4 * 3.0, 5 * 0.1, 0.5 * math.sqrt(5)]],
                            dtype=torch.float64)
    assert torch.allclose(wanda_scores(W, norms), expected)


def test_wanda_keeps_small_weights_on_loud_inputs_where_magnitude_would_not() -> None:
    norms = torch.tensor([3.0, 0.1, math.sqrt(5.0)])
    keep = wanda_keep_mask(W, norms, sparsity=1 / 3)  # one weight per row
    # row 0 scores (3, 0.2, 6.7): drops w=-2; row 1 (12, 0.5, 1.1): drops w=5, the row's largest weight
    assert keep.tolist() == [[True, False, True], [True, False, True]]
    magnitude = row_keep_mask(W.abs(), 1 / 3)
    assert magnitude.tolist() == [[False, True, True], [True, True, False]]


def test_row_mask_prunes_exactly_per_row_with_stable_ties() -> None:
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    keep = row_keep_mask(scores, 0.5)
    assert keep.tolist() == [[False, False, True, True], [True, True, False, False]]
    assert (~keep).sum(1).tolist() == [2, 2]


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_masks_are_valid_and_keep_the_best_of_each_run(n: int, m: int) -> None:
    torch.manual_seed(0)
    scores = torch.rand(6, 16)
    keep = nm_keep_mask(scores, n, m)
    assert check_nm(keep.float(), n, m)
    assert (keep.view(-1, m).sum(1) == n).all()
    runs, kept = scores.view(-1, m), keep.view(-1, m)
    assert (runs[kept].view(-1, n).min(1).values >= runs[~kept].view(-1, m - n).max(1).values).all()


def test_bad_shapes_are_one_line_errors() -> None:
    with pytest.raises(InvalidParameterError, match=r"multiple of m=4\. Got 6"):
        nm_keep_mask(torch.rand(2, 6), 2, 4)
    with pytest.raises(InvalidParameterError, match=r"\(in,\) input norms\. Got \(2, 3\) and \(2,\)"):
        wanda_scores(W, torch.ones(2))
