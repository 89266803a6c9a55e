from __future__ import annotations

import pytest
import torch
from safetensors.torch import save
from torch import nn

from prunekit.errors import SourceError
from prunekit.evaluation.size import file_bytes, state_dict_bytes


def test_state_dict_bytes_equals_safetensors_serialization() -> None:
    model = nn.Linear(10, 10)
    expected = len(save({k: v.contiguous() for k, v in model.state_dict().items()}))  # in-memory, no file
    assert state_dict_bytes(model) == expected
    assert 110 * 4 < expected < 110 * 4 + 300  # float32 data plus a short JSON header


def test_size_tracks_element_count_and_dtype() -> None:
    small, large = state_dict_bytes(nn.Linear(10, 10)), state_dict_bytes(nn.Linear(10, 20))
    assert 440 <= large - small < 440 + 16  # 110 more float32 values; header digits may grow a little
    half = state_dict_bytes(nn.Linear(10, 20).half())
    assert large - half == 220 * 2  # 220 values at 2 bytes instead of 4; header length unchanged


def test_tied_weights_are_stored_once_and_non_contiguous_tensors_work() -> None:
    shared = nn.Linear(50, 50)
    tied = nn.Sequential(shared, nn.ReLU(), shared)
    untied = nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 50))
    assert state_dict_bytes(untied) - state_dict_bytes(tied) >= 2550 * 4
    transposed = nn.Linear(8, 4)
    transposed.weight = nn.Parameter(torch.randn(8, 4).t())  # non-contiguous
    assert state_dict_bytes(transposed) > 36 * 4


def test_file_bytes(tmp_path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"x" * 123)
    assert file_bytes(path) == 123
    with pytest.raises(SourceError, match="does not exist"):
        file_bytes(tmp_path / "missing.onnx")
