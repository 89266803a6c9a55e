"""A fully populated Report shared by the reporting tests."""

from __future__ import annotations

from typing import Callable

import pytest

from prunekit.reporting import ModelMetrics, QuantizationInfo, RecoveryAccuracy, Report

DENSE = ModelMetrics(params=412_234, macs=6_198_528, accuracy=0.98, f1_macro=0.979, file_size_bytes=1_650_000,
                     latency_ms={1: 0.80, 32: 6.4}, energy_mj=0.5)
SMALL = ModelMetrics(params=103_058, macs=1_549_632, accuracy=0.9725, f1_macro=0.97, file_size_bytes=110_000,
                     latency_ms={1: 0.32, 32: 1.6}, energy_mj=0.2)


def build_report(**kw: object) -> Report:
    base = dict(recipe_name="demo", dense=DENSE, compressed=SMALL, max_accuracy_drop=0.01,
                recovery=RecoveryAccuracy(after_pruning=0.41, after_bn_recalibration=0.90, after_finetune=0.9725),
                trajectory=[{"step": 0, "macs": 6_198_528, "accuracy": 0.98}, {"step": 1, "macs": 1_549_632, "accuracy": 0.97}],
                sensitivity={"block.0": [(0.25, 0.97), (0.5, 0.93)]},
                quantization=QuantizationInfo(mode="static", method="minmax", float_layers={"head.3": "int8 lost 2 pts"},
                                              chosen_artifact="model.int8.onnx", reason="within tolerance",
                                              float_accuracy=0.974, int8_accuracy=0.9725),
                groups=[{"group": "stem.0:out", "units": 64, "kept": 32}],
                layers=[{"name": "stem.0", "before": 64, "after": 32}], notes=["a"], warnings=["b"])
    base.update(kw)
    return Report(**base)  # type: ignore[arg-type]


@pytest.fixture
def make_report() -> Callable[..., Report]:
    """Build the sample report, with any field replaced by keyword."""
    return build_report
