from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
import torch.nn.utils.prune
from onnx import numpy_helper

from prunekit.errors import InvalidParameterError, QuantizationError
from prunekit.export import onnx_outputs
from prunekit.quantization import QuantSpec, calibrate_qat, convert_qat, export_qat_onnx, prepare_qat, set_observing


def _train(model, loader, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for i, (x, y) in enumerate(loader):
        if i >= steps:
            break
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_qat_keeps_pruned_weights_zero_and_matches_int8_onnx(trained_cnn, digits_data, calib_feeds, tmp_path):
    torch.manual_seed(0)
    model = copy.deepcopy(trained_cnn)
    with torch.no_grad():
        model.down[0].weight[:3] = 0.0  # three pruned output channels (no mask object)
    torch.nn.utils.prune.l1_unstructured(model.head[1], "weight", amount=0.5)  # a torch.nn.utils.prune mask
    mask = model.head[1].weight_mask.clone()
    qat = prepare_qat(model)
    calibrate_qat(qat, digits_data.calib, max_batches=2)
    qat.train()
    _train(qat, digits_data.train, steps=8)
    qat.eval()
    set_observing(qat, False)
    assert qat.down[0].weight[:3].abs().max().item() == 0.0
    assert bool((qat.head[1].weight[mask == 0] == 0).all())

    result = export_qat_onnx(qat, digits_data.example_input, tmp_path, calib_feeds[:1])
    onnx.checker.check_model(str(result.path))
    ints = [numpy_helper.to_array(i) for i in onnx.load(str(result.path)).graph.initializer
            if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
    down = [w for w in ints if w.ndim == 4 and w.shape[0] == 16]  # (2w, w, 3, 3)
    assert len(down) == 1 and not down[0][:3].any()

    x = torch.cat([x for x, _ in digits_data.val])
    with torch.no_grad():
        ref = qat(x).numpy()  # fake-quant PyTorch model
    got = onnx_outputs(result.path, x)[0]
    # stated tolerance: logits within 10% of their range (ORT also quantizes layer outputs), same class >= 95%
    assert np.abs(got - ref).max() <= 0.1 * (ref.max() - ref.min())
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_convert_bakes_weights_onto_the_int8_grid(trained_cnn):
    qat = prepare_qat(trained_cnn, spec=QuantSpec(reduce_range=False))
    plain, ranges = convert_qat(qat)
    assert ranges == {}  # no data seen yet: ORT calibration will supply activation ranges
    w = plain.stem[0].weight.detach()  # (w, 1, 3, 3)
    scale = w.reshape(w.shape[0], -1).abs().amax(1) / 127  # (w,)
    codes = w / scale.reshape(-1, 1, 1, 1)
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert type(plain.stem[0]) is torch.nn.Conv2d
    qat(torch.zeros(1, 1, 8, 8))  # the QAT model still works after conversion


def test_prepare_qat_errors():
    with pytest.raises(InvalidParameterError, match="'minmax' or 'percentile' for QAT"):
        prepare_qat(torch.nn.Linear(2, 2), spec=QuantSpec(method="entropy"))
    with pytest.raises(QuantizationError, match="no Conv/Linear"):
        prepare_qat(torch.nn.ReLU())
