"""Facts a report states about its own figures: the pruning target asked vs reached, and the data
split each figure was computed on."""

from __future__ import annotations

from typing import Any

from prunekit.data import DataBundle
from prunekit.recipes.schema import PruningSpec
from prunekit.reporting.report import ModelMetrics


def asked_vs_reached(spec: PruningSpec | None, dense: ModelMetrics, compressed: ModelMetrics,
                     layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The structured-pruning target as asked and as reached, both as removed fractions of the dense model.

    ``layers`` are the per-layer ``{"before", "after"}`` output widths (for the channels metric).
    Empty when no structured pruning ran.
    """
    if spec is None or not spec.enabled or spec.granularity != "structured":
        return {}
    metric = spec.target.metric
    reached, basis = None, ""
    if metric in ("macs", "params"):
        before, after = (dense.macs, compressed.macs) if metric == "macs" else (dense.params, compressed.params)
        reached, basis = 1 - after / before if before else None, f"{metric} of the float models, counted"
    elif metric == "channels":
        before = sum(row["before"] for row in layers)
        reached = 1 - sum(row["after"] for row in layers) / before if before else None
        basis = "output channels of every conv/linear layer"
    elif 1 in dense.latency_ms and 1 in compressed.latency_ms:
        reached = 1 - compressed.latency_ms[1] / dense.latency_ms[1]
        basis = "ONNX Runtime p50 at batch 1 of the deployed models (includes int8, if chosen)"
    return {"metric": metric, "asked": spec.target.ratio, "reached": reached, "round_to": spec.round_to,
            "basis": basis}


def split_sources(bundle: DataBundle) -> dict[str, Any]:
    """Which split each kind of figure comes from, where validation came from, and every split's size."""
    def size(loader: Any) -> int | None:
        try:
            return len(loader.dataset)
        except (AttributeError, TypeError):
            return None

    return {
        "accuracy, F1, recovery curve (final figures)": "test",
        "int8 accuracy check, adaptive schedule, early stopping, sensitivity (guards and decisions)": "val",
        "int8 calibration": "calib (a slice of train)",
        "validation source": bundle.val_source or "given by the data source",
        **{f"{name} samples": size(getattr(bundle, name)) for name in ("train", "val", "test", "calib")},
    }
