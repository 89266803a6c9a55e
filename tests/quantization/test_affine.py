from __future__ import annotations

import pytest
import torch

from prunekit.errors import InvalidParameterError
from prunekit.quantization import compute_qparams, dequantize, fake_quantize, qrange, quantize


def test_qrange_values():
    assert qrange(8, signed=True) == (-128, 127)
    assert qrange(8, signed=True, narrow=True) == (-127, 127)
    assert qrange(8, signed=False) == (0, 255)
    assert qrange(4, signed=True, narrow=True) == (-7, 7)
    with pytest.raises(InvalidParameterError, match="bits"):
        qrange(1, signed=True)


def test_qparams_by_hand():
    scale, zp = compute_qparams(torch.tensor(-1.0), torch.tensor(3.0), qmin=0, qmax=255, symmetric=False)
    assert scale.item() == pytest.approx(4.0 / 255)
    assert zp.item() == round(1.0 / (4.0 / 255))  # 64: real 0 maps to an integer
    scale, zp = compute_qparams(torch.tensor(-2.0), torch.tensor(1.0), qmin=-127, qmax=127, symmetric=True)
    assert scale.item() == pytest.approx(2.0 / 127)
    assert zp.item() == 0
    # a range not containing 0 is widened to contain it
    scale, zp = compute_qparams(torch.tensor(2.0), torch.tensor(4.0), qmin=0, qmax=255, symmetric=False)
    assert scale.item() == pytest.approx(4.0 / 255) and zp.item() == 0


@pytest.mark.parametrize("symmetric,signed", [(True, True), (False, False), (False, True)])
def test_round_trip_error_within_half_step(symmetric, signed):
    torch.manual_seed(0)
    x = torch.randn(4, 1000) * torch.tensor([[0.1], [1.0], [3.0], [10.0]])  # (C, N)
    qmin, qmax = qrange(8, signed=signed, narrow=symmetric and signed)
    scale, zp = compute_qparams(x.min(1).values, x.max(1).values, qmin=qmin, qmax=qmax, symmetric=symmetric)
    x_dq = dequantize(quantize(x, scale, zp, qmin=qmin, qmax=qmax, axis=0), scale, zp, axis=0)
    err = (x_dq - x).abs()  # (C, N)
    assert bool((err <= scale.unsqueeze(1) / 2 + 1e-6).all())
    assert float(err.max()) > 0  # the check is not vacuous


def test_zero_is_exact_and_clipping():
    scale, zp = compute_qparams(torch.tensor(-0.3), torch.tensor(1.7), qmin=0, qmax=255, symmetric=False)
    x = torch.tensor([0.0, 5.0, -5.0])
    x_dq = dequantize(quantize(x, scale, zp, qmin=0, qmax=255), scale, zp)
    assert x_dq[0].item() == 0.0
    assert x_dq[1].item() == pytest.approx((255 - zp.item()) * scale.item())
    assert x_dq[2].item() == pytest.approx(-zp.item() * scale.item())


def test_fake_quant_forward_and_straight_through_gradient():
    scale, zp = torch.tensor(0.1), torch.tensor(0, dtype=torch.int32)
    x = torch.tensor([0.04, 0.06, 0.5, 20.0, -20.0], requires_grad=True)
    y = fake_quantize(x, scale, zp, qmin=-127, qmax=127)
    assert torch.allclose(y, torch.tensor([0.0, 0.1, 0.5, 12.7, -12.7]))
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]  # pass-through inside the range, zero where clipped


def test_rounding_matches_onnx_quantize_linear():
    import numpy as np
    import onnxruntime as ort
    from onnx import helper, TensorProto

    x = np.array([0.25, 0.75, -0.25, 1.25, 2.5, 300.0], dtype=np.float32)  # ties at half steps
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [6])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.5]),
                               helper.make_tensor("z", TensorProto.UINT8, [], [10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": x})[0]
    got = quantize(torch.from_numpy(x), torch.tensor(0.5), torch.tensor(10), qmin=0, qmax=255)
    assert got.tolist() == expected.astype(int).tolist()
