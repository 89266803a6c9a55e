from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from prunekit.errors import QuantizationError
from prunekit.export import export_onnx, onnx_outputs
from prunekit.quantization import (
    QuantSpec,
    accuracy_aware_fallback,
    feeds_from_loader,
    onnx_accuracy,
    preprocess,
    quantize_dynamic_onnx,
    quantize_static_onnx,
)


@pytest.fixture(scope="module")
def prepared(trained_cnn, digits_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("static")
    raw = export_onnx(trained_cnn, digits_data.example_input, d / "raw.onnx")
    return preprocess(raw, d / "fp32.onnx")


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_static_int8_runs_int8_and_stays_accurate(method, prepared, calib_feeds, digits_data, tmp_path):
    out = quantize_static_onnx(prepared, tmp_path / "int8.onnx", calib_feeds[:1], spec=QuantSpec(method=method))
    model = onnx.load(str(out.path))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 4  # every conv/gemm weight stored as int8
    x = torch.cat([x for x, _ in digits_data.val])
    ref, got = onnx_outputs(prepared, x)[0], onnx_outputs(out.path, x)[0]
    assert (ref.argmax(1) == got.argmax(1)).mean() > 0.9


def test_pruned_zero_channels_stay_zero(trained_cnn, digits_data, calib_feeds, tmp_path):
    import copy

    model = copy.deepcopy(trained_cnn)
    with torch.no_grad():
        model.head[1].weight[:5] = 0.0  # five pruned output rows of the first Linear
    raw = export_onnx(model, digits_data.example_input, tmp_path / "raw.onnx")
    fp32 = preprocess(raw, tmp_path / "fp32.onnx")
    out = quantize_static_onnx(fp32, tmp_path / "int8.onnx", calib_feeds[:1], spec=QuantSpec())
    int8 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out.path)).graph.initializer}
    gemm = [v for k, v in int8.items() if v.dtype == np.int8 and v.shape == (128, 256)]  # (out, 16 * 2w)
    assert len(gemm) == 1
    assert not gemm[0][:5].any() and gemm[0][5:].any()


def test_no_calibration_data_is_a_clear_error(prepared, tmp_path):
    with pytest.raises(QuantizationError, match="calibration data"):
        feeds_from_loader(None, ["input"])
    with pytest.raises(QuantizationError, match="yielded no batches"):
        feeds_from_loader([], ["input"])
    with pytest.raises(QuantizationError, match="calibration data"):
        quantize_static_onnx(prepared, tmp_path / "x.onnx", [], spec=QuantSpec())


def test_unsupported_operator_is_a_clear_error(prepared, calib_feeds, tmp_path):
    with pytest.raises(QuantizationError, match="operator LayerNormalizationX cannot be quantized"):
        quantize_static_onnx(prepared, tmp_path / "x.onnx", calib_feeds, spec=QuantSpec(),
                             op_types=["Conv", "LayerNormalizationX"])
    softmax_only = export_onnx(torch.nn.Softmax(dim=1), torch.randn(1, 4), tmp_path / "sm.onnx")
    with pytest.raises(QuantizationError, match="no operator ONNX Runtime can quantize"):
        quantize_static_onnx(softmax_only, tmp_path / "y.onnx", [{"input": np.ones((1, 4), np.float32)}],
                             spec=QuantSpec())
    with pytest.raises(QuantizationError, match="dynamic int8 found no MatMul"):
        quantize_dynamic_onnx(softmax_only, tmp_path / "z.onnx")


def test_dynamic_int8_on_linear_model(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    x = torch.randn(2, 5, 16)  # 3-D input: Linear exports as MatMul, as in transformers
    fp32 = export_onnx(model, x, tmp_path / "fp32.onnx")
    out = quantize_dynamic_onnx(fp32, tmp_path / "dyn.onnx")
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    ref = model(x).detach().numpy()
    got = onnx_outputs(out, x)[0]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_fallback_keeps_sensitive_layers_float_until_tolerance(prepared, calib_feeds, digits_data, tmp_path):
    evaluate = onnx_accuracy(digits_data.val)
    # the small CNN quantizes almost losslessly, so a penalty per quantized tensor makes the full int8
    # model miss the tolerance and forces the loop to keep layers in float
    int8_nodes = lambda path: sum(n.op_type == "QuantizeLinear" for n in onnx.load(path).graph.node)
    base = int8_nodes(str(prepared))
    full = int8_nodes(str(quantize_static_onnx(prepared, tmp_path / "full.onnx", calib_feeds[:1],
                                                spec=QuantSpec()).path))

    def penalised(path: str) -> float:  # accuracy minus a penalty per quantized tensor beyond 'full - 2'
        return evaluate(path) - 0.1 * max(0, int8_nodes(path) - (full - 2))

    result = accuracy_aware_fallback(prepared, calib_feeds[:1], spec=QuantSpec(), eval_fn=penalised,
                                     tolerance=0.02, workdir=tmp_path)
    assert base == 0 and len(result.kept_float) >= 1
    assert result.float_score - result.int8_score <= 0.02
    first = result.ranking[0]
    assert first.node in result.kept_float and "SQNR" in result.kept_float[first.node]
    assert [s.sqnr_db for s in result.ranking] == sorted(s.sqnr_db for s in result.ranking)
    assert result.steps[0].drop > 0.02 and result.steps[-1].drop <= 0.02


def test_unmeetable_tolerance_is_a_clear_error(prepared, calib_feeds, tmp_path):
    scores = iter([1.0] + [0.0] * 100)  # float scores 1, every int8 variant 0

    with pytest.raises(QuantizationError, match="tolerance 0.01 cannot be met"):
        accuracy_aware_fallback(prepared, calib_feeds[:1], spec=QuantSpec(), eval_fn=lambda p: next(scores),
                                tolerance=0.01, workdir=tmp_path, op_types=["Gemm"])


def test_dynamic_int8_refusal_says_why_for_the_model_at_hand(tmp_path):
    """An MLP exports its Linear layers as Gemm: the advice is static int8, not a word about convolutions."""
    import onnx

    from prunekit.quantization.dynamic import check_dynamic_quantizable

    mlp = export_onnx(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)),
                      torch.randn(1, 4), tmp_path / "mlp.onnx")
    with pytest.raises(QuantizationError, match=r"ops: Gemm, Relu\): its Linear layers export as Gemm.*mode: static"):
        check_dynamic_quantizable(onnx.load(str(mlp)), name="mlp")
    conv = export_onnx(torch.nn.Conv2d(1, 2, 3), torch.randn(1, 1, 5, 5), tmp_path / "conv.onnx")
    with pytest.raises(QuantizationError, match=r"\(ops: Conv\): use quantization.mode: static for convolutional"):
        check_dynamic_quantizable(onnx.load(str(conv)), name="conv")


def test_ort_calibration_prints_stay_out_of_prunekit_output(prepared, calib_feeds, tmp_path, capfd):
    quantize_static_onnx(prepared, tmp_path / "p.onnx", calib_feeds, spec=QuantSpec(method="percentile"))
    out, err = capfd.readouterr()
    assert "histogram" not in out + err and "Number of tensors" not in out + err


def test_symbolic_shape_warnings_are_muted_only_inside_preprocess(caplog: pytest.LogCaptureFixture) -> None:
    """ORT's symbolic shape inference logs "unsupported broadcast ..." on Hugging Face masks, a
    failure preprocess handles; the line must not reach the user's console, and nothing else is muted."""
    from onnxruntime.tools import symbolic_shape_infer

    from prunekit.quantization.static import _quiet_symbolic_shapes

    ort_logger = symbolic_shape_infer.logger  # the very logger ORT writes to
    with caplog.at_level(logging.WARNING):
        with _quiet_symbolic_shapes():
            ort_logger.warning("unsupported broadcast between Min(512, sequence) sequence")
            logging.getLogger("prunekit").warning("kept")
        ort_logger.warning("after")
    assert [r.getMessage() for r in caplog.records] == ["kept", "after"]
