"""Shared fixtures: tiny ONNX models exported once per session."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn


def export_mlp(path: Path, *, in_features: int, hidden: int, out_features: int, dynamic_batch: bool = True,
               seed: int = 0) -> nn.Module:
    """Export a Linear-ReLU-Linear MLP to ``path`` and return the torch model."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features)).eval()
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, in_features),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes=axes)
    return model


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return path, export_mlp(path, in_features=6, hidden=16, out_features=3)
