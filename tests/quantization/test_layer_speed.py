"""Per-layer speed fallback: the greedy keeps a layer float exactly when the timing says so."""

from __future__ import annotations

import onnx

from prunekit.export.onnx import export_onnx
from prunekit.quantization import QuantSpec, preprocess, quantize_static_onnx
from prunekit.quantization.layer_speed import compute_nodes, keep_slow_layers_float


def _int8_ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_layers_stay_float_only_when_measured_faster(tmp_path, trained_cnn, digits_data, calib_feeds):
    spec = QuantSpec()
    fp32 = preprocess(export_onnx(trained_cnn, digits_data.example_input, tmp_path / "raw.onnx"), tmp_path / "fp32.onnx")
    layers = compute_nodes(fp32, spec)
    assert len(layers) == 6  # 4 convs + 2 linears of DigitsCNN
    timing = {1: {"input": digits_data.example_input.numpy()}}

    never = tmp_path / "never.onnx"
    quantize_static_onnx(fp32, never, calib_feeds, spec=spec)
    before = _int8_ops(never)
    # An impossible margin: no trial is ever faster by 1e9x, so nothing changes.
    assert keep_slow_layers_float(fp32, never, calib_feeds, spec=spec, timing_feeds=timing, workdir=tmp_path,
                                  repeats=3, margin=1e9) == {}
    assert _int8_ops(never) == before

    # A margin of 0: every trial counts as faster, so every compute layer ends in float, with a reason.
    always = tmp_path / "always.onnx"
    quantize_static_onnx(fp32, always, calib_feeds, spec=spec)
    reasons = keep_slow_layers_float(fp32, always, calib_feeds, spec=spec, timing_feeds=timing, workdir=tmp_path,
                                     repeats=3, margin=0.0)
    assert sorted(reasons) == sorted(layers)
    assert all("faster at batch 1" in why for why in reasons.values())
    # Each compute layer kept float loses at least its weight's DequantizeLinear.
    assert before.count("DequantizeLinear") - _int8_ops(always).count("DequantizeLinear") >= len(layers)
