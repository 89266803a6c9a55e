"""Data is checked against the model before any training."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.data import DataBundle
from prunekit.errors import SourceError
from prunekit.recipes.validate_data import check_data_fits_model


def _bundle(x, y, *, test=None, task="classification"):
    load = lambda a, b: DataLoader(TensorDataset(a, b), batch_size=8)  # noqa: E731
    tx, ty = test if test is not None else (x, y)
    return DataBundle(train=load(x, y), val=load(x, y), test=load(tx, ty), calib=load(x[:8], y[:8]),
                      num_classes=10, task=task, example_input=x[:1], name="toy")


def _model(inputs=4, outputs=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inputs, 8), nn.ReLU(), nn.Linear(8, outputs))


def test_good_data_passes_and_leaves_training_mode():
    model = _model().train()
    check_data_fits_model(_bundle(torch.randn(16, 4), torch.arange(16) % 3), model, model_label="m")
    assert model.training


def test_label_out_of_range_in_the_test_split_only():
    x, y = torch.randn(16, 4), torch.arange(16) % 3
    bundle = _bundle(x, y, test=(x, torch.full((16,), 5)))
    with pytest.raises(SourceError, match=r"data 'toy' test split: label 5 is outside \[0, 3\) — model 'm' outputs 3"):
        check_data_fits_model(bundle, _model(), model_label="m")


def test_negative_label():
    with pytest.raises(SourceError, match=r"train split: label -1 is outside"):
        check_data_fits_model(_bundle(torch.randn(16, 4), torch.full((16,), -1)), _model(), model_label="m")


def test_shape_mismatch_names_data_and_model():
    with pytest.raises(SourceError, match=r"data 'toy' \(a training batch of shape \[2, 5\]\) does not fit model 'm': "
                                          r"RuntimeError: mat1 and mat2"):
        check_data_fits_model(_bundle(torch.randn(16, 5), torch.arange(16) % 3), _model(), model_label="m")


def test_example_shape_checked_against_the_data():
    bundle = _bundle(torch.randn(16, 4), torch.arange(16) % 3)
    with pytest.raises(SourceError, match=r"model.example_input_shape \[1, 5\] does not fit model 'm'"):
        check_data_fits_model(bundle, _model(), model_label="m", example=torch.zeros(1, 5), example_from_recipe=True)


def test_nan_inputs_and_regression_targets():
    x = torch.randn(16, 4)
    x[3, 1] = float("inf")
    with pytest.raises(SourceError, match=r"inputs hold 1 NaN/Inf value"):
        check_data_fits_model(_bundle(x, torch.arange(16) % 3), _model(), model_label="m")
    y = torch.randn(16, 1)
    y[0, 0] = float("nan")
    with pytest.raises(SourceError, match=r"targets hold NaN/Inf"):
        check_data_fits_model(_bundle(torch.randn(16, 4), y, task="regression"), _model(outputs=1), model_label="m")


def test_regression_target_width_must_match_the_output():
    with pytest.raises(SourceError, match=r"each target has 2 value\(s\) but model 'm' outputs 1"):
        check_data_fits_model(_bundle(torch.randn(16, 4), torch.randn(16, 2), task="regression"), _model(outputs=1),
                              model_label="m")
