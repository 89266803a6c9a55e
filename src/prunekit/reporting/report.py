"""The measured outcome of one run, as data: numbers in, JSON out; rendering lives elsewhere.

Only measurements are stored. Every ratio (compression, speed-up, accuracy change) is computed
from the two :class:`ModelMetrics` on demand, so a report can never claim a ratio its numbers do
not support.

Examples
--------
>>> dense = ModelMetrics(accuracy=0.98, params=1000, macs=4000, file_size_bytes=4096, latency_ms={1: 2.0})
>>> small = ModelMetrics(accuracy=0.97, params=250, macs=1000, file_size_bytes=1024, latency_ms={1: 0.5})
>>> Report(recipe_name="demo", dense=dense, compressed=small).ratios()["macs"]
4.0
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunekit.fileio import write_text_atomic


@dataclass(frozen=True)
class ModelMetrics:
    """What was measured on one model (dense or compressed), all on the held-out test split.

    ``latency_ms`` maps batch size to the median (p50) ONNX Runtime latency of one batch in
    milliseconds. ``energy_mj`` is millijoules per sample where it could be measured.
    ``task_metrics`` holds anything else the task reports (MSE and R² for regression...).
    """

    params: int
    macs: int
    accuracy: float | None = None
    f1_macro: float | None = None
    file_size_bytes: int | None = None
    latency_ms: dict[int, float] = field(default_factory=dict)
    energy_mj: float | None = None
    task_metrics: dict[str, float] = field(default_factory=dict)
    latency_spread_ms: dict[int, tuple[float, float]] = field(default_factory=dict)  # batch -> (p25, p75)
    energy_mj_by_batch: dict[int, float] = field(default_factory=dict)  # batch -> mJ per sample
    energy_estimated: bool | None = None  # True: CPU time x assumed watts, not a hardware counter

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetrics:
        data = dict(data)
        data["latency_ms"] = {int(k): float(v) for k, v in data.get("latency_ms", {}).items()}
        data["latency_spread_ms"] = {int(k): (float(v[0]), float(v[1]))
                                     for k, v in data.get("latency_spread_ms", {}).items()}
        data["energy_mj_by_batch"] = {int(k): float(v) for k, v in data.get("energy_mj_by_batch", {}).items()}
        return cls(**data)


@dataclass(frozen=True)
class RecoveryAccuracy:
    """Accuracy of the pruned model right after the cut, after BN recalibration, after fine-tuning."""

    after_pruning: float | None = None
    after_bn_recalibration: float | None = None
    after_finetune: float | None = None


@dataclass(frozen=True)
class QuantizationInfo:
    """How int8 went: which method, which layers stayed float and why, which artifact won and why."""

    mode: str
    method: str
    float_layers: dict[str, str] = field(default_factory=dict)  # layer name -> reason kept in float
    chosen_artifact: str = ""  # e.g. "model.int8.onnx" or "model.onnx"
    reason: str = ""
    float_accuracy: float | None = None
    int8_accuracy: float | None = None


@dataclass(frozen=True)
class Report:
    """Everything a run measured. Build it once at the end of a run; see ``ratios()``.

    Parameters
    ----------
    trajectory : list of dict
        One entry per pruning step, e.g. ``{"step": 1, "macs": 1.2e6, "sparsity": 0.25,
        "loss": 0.31, "accuracy": 0.97}``.
    sensitivity : dict
        Layer or group name -> list of ``(removed ratio, metric value)`` points, metric named by
        ``sensitivity_metric``.
    groups : list of dict
        Per-group table, e.g. ``{"group": "stem.0:out", "units": 64, "kept": 32, "score": ...}``.
    layers : list of dict
        Per-layer channel counts ``{"name": ..., "before": 64, "after": 32}`` (more keys allowed).
    """

    recipe_name: str
    dense: ModelMetrics
    compressed: ModelMetrics
    task: str = "classification"
    recovery: RecoveryAccuracy = field(default_factory=RecoveryAccuracy)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    sensitivity_metric: str = "accuracy"
    quantization: QuantizationInfo | None = None
    groups: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    max_accuracy_drop: float | None = None  # the recipe's promise, to judge ``accuracy_ok``
    artifacts: dict[str, str] = field(default_factory=dict)  # label -> path relative to the run folder
    deployment: list[dict[str, Any]] = field(default_factory=list)  # rows: model, runtime, batch, p50/p95, ...
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)  # the normalized recipe that produced it
    target: dict[str, Any] = field(default_factory=dict)  # {"metric", "asked", "reached", "round_to"}: removed fractions
    measurement: dict[str, Any] = field(default_factory=dict)  # ORT threads, rounds... shared by decisions and tables
    splits: dict[str, Any] = field(default_factory=dict)  # figure -> split it was computed on; split sizes

    def ratios(self) -> dict[str, Any]:
        """Dense / compressed for params, MACs, size and latency (> 1 means smaller or faster).

        ``accuracy_delta`` and ``f1_delta`` are compressed minus dense (negative is a loss).
        A ratio is None when either side is missing or the compressed value is zero.
        """
        d, c = self.dense, self.compressed
        out: dict[str, Any] = {
            "params": _ratio(d.params, c.params),
            "macs": _ratio(d.macs, c.macs),
            "file_size": _ratio(d.file_size_bytes, c.file_size_bytes),
            "latency": {bs: _ratio(d.latency_ms[bs], c.latency_ms.get(bs)) for bs in sorted(d.latency_ms)
                        if bs in c.latency_ms},
            "energy": _ratio(d.energy_mj, c.energy_mj),
            "accuracy_delta": _delta(c.accuracy, d.accuracy),
            "f1_delta": _delta(c.f1_macro, d.f1_macro),
        }
        return out

    @property
    def accuracy_ok(self) -> bool | None:
        """Whether the compressed model kept the recipe's ``max_accuracy_drop`` (None if unknown)."""
        delta = _delta(self.compressed.accuracy, self.dense.accuracy)
        if delta is None or self.max_accuracy_drop is None:
            return None
        return -delta <= self.max_accuracy_drop + 1e-12

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``derived`` holds the ratios for readers and is ignored on load."""
        data = dataclasses.asdict(self)
        data["sensitivity"] = {k: [list(p) for p in v] for k, v in self.sensitivity.items()}
        data["derived"] = {"ratios": self.ratios(), "accuracy_ok": self.accuracy_ok}
        return data

    def to_json(self, *, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        data = {k: v for k, v in data.items() if k != "derived"}
        data["dense"] = ModelMetrics.from_dict(data["dense"])
        data["compressed"] = ModelMetrics.from_dict(data["compressed"])
        data["recovery"] = RecoveryAccuracy(**data.get("recovery", {}))
        if data.get("quantization") is not None:
            data["quantization"] = QuantizationInfo(**data["quantization"])
        data["sensitivity"] = {k: [(float(r), float(v)) for r, v in pts] for k, pts in data.get("sensitivity", {}).items()}
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    def write(self, outdir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.json`` and a standalone ``report.html`` into ``outdir`` (created if needed).

        Each file is written under a temporary name and renamed, so a half-written report never
        looks complete. Returns the two paths.
        """
        from prunekit.reporting.html import render_html

        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        paths = {"json": outdir / "report.json", "html": outdir / "report.html"}
        write_text_atomic(paths["json"], self.to_json())
        write_text_atomic(paths["html"], render_html(self))
        return paths


def _ratio(dense: float | None, compressed: float | None) -> float | None:
    if dense is None or compressed is None or compressed == 0:
        return None
    return float(dense) / float(compressed)


def _delta(compressed: float | None, dense: float | None) -> float | None:
    if compressed is None or dense is None:
        return None
    return float(compressed) - float(dense)


