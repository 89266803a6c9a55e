"""Measurement: task metrics, K-fold, params/MACs, size, latency, peak memory, energy.

Everything here measures; nothing here changes a model (training flags are restored).
"""

from __future__ import annotations

from prunekit.evaluation.complexity import MacReport, count_macs, count_params, layer_table
from prunekit.evaluation.energy import EnergyMeter, EnergyReading, joules_per_1000_inferences, measure_energy
from prunekit.evaluation.kfold import cross_validate, kfold_indices
from prunekit.evaluation.latency import (
    alternating_timings,
    onnx_latency,
    physical_cores,
    speedup,
    speedups,
    summarize,
    torch_latency,
)
from prunekit.evaluation.memory import MemoryReading, onnx_peak_memory
from prunekit.evaluation.metrics import (
    classification_metrics,
    evaluate,
    onnx_predictor,
    regression_metrics,
    torch_predictor,
)
from prunekit.evaluation.size import file_bytes, state_dict_bytes

__all__ = [
    "EnergyMeter", "EnergyReading", "MacReport", "MemoryReading",
    "alternating_timings", "classification_metrics", "count_macs", "count_params", "cross_validate",
    "evaluate", "file_bytes", "joules_per_1000_inferences", "kfold_indices", "layer_table",
    "measure_energy", "onnx_latency", "onnx_peak_memory", "onnx_predictor", "physical_cores",
    "regression_metrics", "speedup", "speedups", "state_dict_bytes", "summarize", "torch_latency",
    "torch_predictor",
]
