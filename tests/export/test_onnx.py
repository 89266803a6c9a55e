from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from prunekit.errors import ExportError
from prunekit.export import export_onnx, onnx_outputs, onnx_size_bytes, verify_onnx
from prunekit.models import DigitsCNN


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + bias


def test_export_verifies_with_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = DigitsCNN(width=4).eval()
    path = export_onnx(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")
    onnx.checker.check_model(str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # temp file renamed, nothing left behind
    diff = verify_onnx(model, path, torch.randn(32, 1, 8, 8), atol=1e-4)  # batch 32 through a batch-1 export
    assert 0.0 <= diff <= 1e-4
    assert onnx_size_bytes(path) == path.stat().st_size > 4 * sum(p.numel() for p in model.parameters()) * 0.9


def test_dict_example_becomes_named_inputs(tmp_path):
    torch.manual_seed(0)
    model = TwoInputs().eval()
    example = {"x": torch.randn(1, 4), "bias": torch.randn(1, 3)}
    path = export_onnx(model, example, tmp_path / "kw.onnx")
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["x", "bias"]
    inputs = {"x": torch.randn(5, 4), "bias": torch.randn(5, 3)}
    assert verify_onnx(model, path, inputs) <= 1e-5
    got = onnx_outputs(path, inputs)[0]
    assert got.shape == (5, 3)


def test_verify_rejects_a_different_model(tmp_path):
    torch.manual_seed(0)
    model = DigitsCNN(width=4).eval()
    path = export_onnx(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")
    with torch.no_grad():
        model.head[3].bias += 1.0  # the torch model drifts from the file
    with pytest.raises(ExportError, match="differs from PyTorch by 1"):
        verify_onnx(model, path, torch.randn(2, 1, 8, 8))


def test_bad_example_and_names(tmp_path):
    with pytest.raises(ExportError, match="example_input must be"):
        export_onnx(nn.Linear(2, 2), "not a tensor", tmp_path / "x.onnx")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="2 input_names for 1 inputs"):
        export_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "x.onnx", input_names=("a", "b"))
