from __future__ import annotations

import pytest
import torch

from prunekit.errors import InvalidParameterError, QuantizationError
from prunekit.models import MLP
from prunekit.quantization import compress_linear_weights, load_weight_only


def test_int8_and_int4_sizes_and_error_bounds():
    torch.manual_seed(0)
    model = MLP(in_features=64, hidden=(96,), num_classes=10)
    for bits, group in ((8, 32), (4, 32)):
        result = compress_linear_weights(model, bits=bits, group_size=group)
        w = model.net[1].weight  # (96, 64)
        packed = result.packed["net.1"]
        # int8: 1 byte per weight + 4 bytes per row; int4: half a byte per weight + 4 bytes per group
        expected = 96 * 64 + 96 * 4 if bits == 8 else 96 * 32 + 96 * 2 * 4
        assert packed.nbytes() == expected
        restored = load_weight_only(model, result).net[1].weight
        if bits == 8:
            step = w.abs().amax(1, keepdim=True) / 127  # (96, 1)
        else:
            step = w.reshape(96, 2, 32).abs().amax(2).repeat_interleave(32, 1) / 7  # (96, 64)
        assert bool(((restored - w).abs() <= step / 2 + 1e-6).all())
        assert result.float_weight_bytes == (64 * 96 + 96 * 10) * 4
    assert torch.equal(model.net[1].weight, w)  # the original is untouched


def test_int4_handles_ragged_groups_and_keeps_zeros():
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(10, 3))
    with torch.no_grad():
        lin[0].weight[1] = 0.0
    restored = load_weight_only(lin, compress_linear_weights(lin, bits=4, group_size=4))[0].weight
    assert restored.shape == (3, 10) and not restored[1].any()


def test_weight_only_errors():
    with pytest.raises(InvalidParameterError, match="'bits'.*4 or 8"):
        compress_linear_weights(MLP(), bits=3)
    with pytest.raises(InvalidParameterError, match="group_size"):
        compress_linear_weights(MLP(), bits=4, group_size=5)
    with pytest.raises(QuantizationError, match="no nn.Linear"):
        compress_linear_weights(torch.nn.Conv2d(1, 1, 3))
