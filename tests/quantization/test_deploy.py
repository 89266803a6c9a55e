from __future__ import annotations

import pytest

from prunekit.errors import InvalidParameterError, QuantizationError
from prunekit.quantization import QuantSpec, choose_faster, onnx_accuracy, quantize_for_deployment
from prunekit.quantization.speed import Latency


def test_deployment_picks_the_measured_faster_artifact(trained_cnn, digits_data, tmp_path):
    result = quantize_for_deployment(trained_cnn, digits_data.example_input, digits_data.calib, workdir=tmp_path,
                                     spec=QuantSpec(calib_batches=1), eval_fn=onnx_accuracy(digits_data.val),
                                     tolerance=0.02, repeats=5)
    faster = all(result.ratios[b].low > 1.0 for b in (1, 32))  # the whole 95% interval above 1
    assert result.chosen == ("int8" if faster else "fp32")
    assert result.chosen_path == (result.int8_path if faster else result.fp32_path)
    assert f"batch 1: {result.ratios[1].p50:.2f}x" in result.reason
    assert f"{result.threads} thread" in result.reason
    assert result.size_ratio < 0.5  # int8 weights: about a quarter of the float file
    assert result.float_score - result.int8_score <= 0.02


def test_choose_faster_by_hand():
    lat = Latency({"fp32": {1: 2.0, 32: 10.0}, "int8": {1: 1.0, 32: 12.0}})
    chosen, why = choose_faster(lat, candidate="int8", baseline="fp32", batches=(1, 32))
    assert chosen == "fp32" and "not faster than fp32 at batch 32" in why and "batch 1: 2.00x" in why
    chosen, _ = choose_faster(lat, candidate="int8", baseline="fp32", batches=(1,))
    assert chosen == "int8"


def test_deployment_argument_errors(trained_cnn, digits_data, tmp_path):
    with pytest.raises(InvalidParameterError, match="tolerance without eval_fn"):
        quantize_for_deployment(trained_cnn, digits_data.example_input, digits_data.calib, workdir=tmp_path,
                                tolerance=0.01)
    with pytest.raises(QuantizationError, match="needs calibration data"):
        quantize_for_deployment(trained_cnn, digits_data.example_input, None, workdir=tmp_path)
    with pytest.raises(InvalidParameterError, match="'method' parameter of QuantSpec"):
        QuantSpec(method="kl")
