"""Validation data the model never trained on: explicit x_val/y_val, val_fraction 0, factory triples."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from prunekit.errors import PrunekitWarning, SourceError
from prunekit.recipes.schema import DataSpec
from prunekit.recipes.sources import load_data


def _save(path: Path, **extra) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((40, 4)), y=np.arange(40) % 2, **extra)
    return path


def test_explicit_validation_arrays_are_used_as_is_and_nothing_is_carved(tmp_path):
    x_val = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = _save(tmp_path / "d.npz", x_val=x_val, y_val=np.array([0, 1, 3]))
    bundle = load_data(DataSpec(npz=str(path), test_fraction=0.25), seed=0)
    assert (len(bundle.train.dataset), len(bundle.val.dataset), len(bundle.test.dataset)) == (30, 3, 10)
    xv, yv = next(iter(bundle.val))
    assert torch.equal(xv, torch.from_numpy(x_val)) and yv.tolist() == [0, 1, 3]
    assert "given explicitly" in bundle.val_source


def test_explicit_val_and_test_leave_all_of_x_for_training(tmp_path):
    path = _save(tmp_path / "d.npz", x_val=np.zeros((3, 4)), y_val=np.array([0, 1, 3]),
                 x_test=np.zeros((5, 4)), y_test=np.zeros(5, dtype=np.int64))
    bundle = load_data(DataSpec(npz=str(path), val_fraction=0), seed=0)
    assert len(bundle.train.dataset) == 40 and bundle.num_classes == 4  # a class seen only in val counts


def test_val_fraction_zero_without_validation_arrays_is_refused(tmp_path):
    path = _save(tmp_path / "d.npz")
    with pytest.raises(SourceError, match=r"no x_val/y_val and data.val_fraction is 0: add validation arrays"):
        load_data(DataSpec(npz=str(path), val_fraction=0), seed=0)


def test_half_a_validation_pair_is_refused(tmp_path):
    path = _save(tmp_path / "d.npz", x_val=np.zeros((3, 4)))
    with pytest.raises(SourceError, match="only one of x_val, y_val; give both or neither"):
        load_data(DataSpec(npz=str(path)), seed=0)


def test_pretrained_weights_with_carved_validation_warn(tmp_path):
    path = _save(tmp_path / "d.npz")
    with pytest.warns(PrunekitWarning, match="validation is carved from x.*add held-out x_val/y_val"):
        bundle = load_data(DataSpec(npz=str(path)), seed=0, pretrained=True)
    assert "carved from the training data" in bundle.val_source
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_data(DataSpec(npz=str(_save(tmp_path / "v.npz", x_val=np.zeros((2, 4)), y_val=np.zeros(2)))),
                  seed=0, pretrained=True)


def triple_factory(*, batch_size: int = 8) -> tuple:
    """(train, val, test) loaders: three disjoint sets."""
    g = torch.Generator().manual_seed(0)

    def loader(n: int) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % 3), batch_size=batch_size)

    return loader(30), loader(9), loader(6)


def test_factory_triple_keeps_test_apart_from_validation():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "val doubles as test" warning
        bundle = load_data(DataSpec(factory="tests.recipes.test_sources_val:triple_factory"), seed=0)
    assert (len(bundle.val.dataset), len(bundle.test.dataset)) == (9, 6)
    assert bundle.test is not bundle.val
