from __future__ import annotations

import numpy as np
import pytest
import torch

from prunekit.errors import InvalidParameterError
from prunekit.evaluation.kfold import cross_validate, kfold_indices


def test_kfold_gives_k_distinct_folds_covering_every_sample_once() -> None:
    folds = kfold_indices(10, 3, seed=0)
    assert len(folds) == 3
    vals = [set(v.tolist()) for _, v in folds]
    assert sorted(len(v) for v in vals) == [3, 3, 4]
    assert set().union(*vals) == set(range(10)) and sum(len(v) for v in vals) == 10  # disjoint cover
    for train, val in folds:
        assert set(train.tolist()) == set(range(10)) - set(val.tolist())


def test_kfold_is_seeded() -> None:
    a, b, c = (kfold_indices(20, 4, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_stratified_folds_keep_class_proportions() -> None:
    y = np.array([0] * 6 + [1] * 4)
    for _, val in kfold_indices(10, 2, seed=0, y=y):
        assert np.bincount(y[val]).tolist() == [3, 2]


@pytest.mark.parametrize("k", [1, 11, 2.5])
def test_kfold_rejects_k_outside_2_to_n(k) -> None:
    with pytest.raises(InvalidParameterError, match="'k' parameter .* Got"):
        kfold_indices(10, k, seed=0)


def test_stratified_k_larger_than_smallest_class() -> None:
    with pytest.raises(InvalidParameterError, match="smallest class count"):
        kfold_indices(10, 5, seed=0, y=[0] * 7 + [1] * 3)


def test_cross_validate_trains_on_disjoint_folds_and_averages() -> None:
    x = torch.arange(10, dtype=torch.float32).view(10, 1)  # the feature is the sample id
    y = torch.tensor([0] * 6 + [1] * 4)
    seen = []

    def fit(train_loader, val_loader):
        train_ids = {int(v) for xb, _ in train_loader for v in xb.view(-1)}
        val_ids = {int(v) for xb, _ in val_loader for v in xb.view(-1)}
        seen.append((train_ids, val_ids))
        return lambda inputs: torch.tensor([[1.0, 0.0]]).expand(len(inputs), 2)  # always class 0

    result = cross_validate(x, y, k=2, seed=0, fit=fit, task="classification", num_classes=2, batch_size=3)
    assert result["k"] == 2 and len(result["folds"]) == 2 and len(seen) == 2
    for train_ids, val_ids in seen:
        assert train_ids.isdisjoint(val_ids) and train_ids | val_ids == set(range(10))
    assert seen[0][1].isdisjoint(seen[1][1])
    # stratified: every fold holds 3 zeros and 2 ones, so "always 0" scores exactly 0.6
    assert [f["accuracy"] for f in result["folds"]] == pytest.approx([0.6, 0.6])
    assert result["mean"]["accuracy"] == pytest.approx(0.6) and result["std"]["accuracy"] == pytest.approx(0.0)
    assert sum(f["n"] for f in result["folds"]) == 10


def test_cross_validate_regression_mean_and_std() -> None:
    x = torch.zeros(4, 1)
    y = torch.tensor([0.0, 0.0, 2.0, 2.0])
    result = cross_validate(x, y, k=4, seed=0, fit=lambda tr, va: (lambda inp: torch.ones(len(inp), 1)),
                            task="regression", batch_size=8)
    assert sorted(f["mae"] for f in result["folds"]) == pytest.approx([1.0] * 4)
    assert result["mean"]["mse"] == pytest.approx(1.0) and result["std"]["mse"] == pytest.approx(0.0)


def test_cross_validate_rejects_k_above_n() -> None:
    with pytest.raises(InvalidParameterError, match="'k' parameter"):
        cross_validate(torch.zeros(3, 1), torch.zeros(3), k=4, seed=0, fit=lambda a, b: None, task="regression")
