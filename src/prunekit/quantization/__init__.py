"""int8 for deployment: ORT static/dynamic quantization, calibration observers, QAT, fallback, speed checks."""

from prunekit.quantization.affine import compute_qparams, dequantize, fake_quantize, qrange, quantize
from prunekit.quantization.calibration import FeedReader, feeds_from_loader
from prunekit.quantization.deploy import QuantResult, quantize_for_deployment
from prunekit.quantization.dynamic import quantize_dynamic_onnx
from prunekit.quantization.fallback import (
    FallbackResult,
    LayerSensitivity,
    accuracy_aware_fallback,
    onnx_accuracy,
    rank_sensitivity,
)
from prunekit.quantization.observers import (
    OBSERVERS,
    EntropyObserver,
    MinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    make_observer,
)
from prunekit.quantization.qat import calibrate_qat, convert_qat, export_qat_onnx, prepare_qat, set_observing
from prunekit.quantization.spec import QuantSpec
from prunekit.quantization.speed import Latency, choose_faster, measure_latency
from prunekit.quantization.static import StaticQuantization, preprocess, quantize_static_onnx
from prunekit.quantization.weight_only import WeightOnlyResult, compress_linear_weights, load_weight_only

__all__ = [
    "OBSERVERS", "EntropyObserver", "FallbackResult", "FeedReader", "Latency", "LayerSensitivity",
    "MSEObserver", "MinMaxObserver", "Observer", "PercentileObserver", "QuantResult", "QuantSpec",
    "StaticQuantization", "WeightOnlyResult", "accuracy_aware_fallback", "calibrate_qat", "choose_faster",
    "compress_linear_weights", "compute_qparams", "convert_qat", "dequantize", "export_qat_onnx",
    "fake_quantize", "feeds_from_loader", "load_weight_only", "make_observer", "measure_latency",
    "onnx_accuracy", "prepare_qat", "preprocess", "qrange", "quantize", "quantize_dynamic_onnx",
    "quantize_for_deployment", "quantize_static_onnx", "rank_sensitivity", "set_observing",
]
