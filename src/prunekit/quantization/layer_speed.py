"""Per-layer "never slower": keep in float each compute layer whose int8 version slows the model.

Whole-model int8 can be faster while one of its layers is not (a narrow conv whose quantize and
dequantize cost more than its int8 arithmetic saves). Greedily, in graph order, each quantized
Conv/Gemm/MatMul is tried in float; the change is kept only when the whole model then runs
faster at every measured batch size, timed against the current model in the same process,
alternating, with the 95% interval of the paired speed ratio above ``margin``
(:func:`prunekit.evaluation.measure.compare`, the same rule and ORT settings as the int8 choice).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from prunekit.quantization.spec import QuantSpec
from prunekit.evaluation.measure import MeasureSettings, compare_onnx
from prunekit.quantization.static import quantizable_nodes, quantize_static_onnx

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def compute_nodes(model_path: str | os.PathLike[str], spec: QuantSpec) -> list[str]:
    """The quantizable Conv/Gemm/MatMul nodes, in graph order."""
    kinds = {n.name: n.op_type for n in onnx.load(str(model_path)).graph.node}
    return [n for n in quantizable_nodes(model_path, spec) if kinds.get(n) in COMPUTE_OPS]


def keep_slow_layers_float(fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str],
                           feeds: Sequence[dict[str, np.ndarray]], *, spec: QuantSpec,
                           timing_feeds: Mapping[int, Mapping[str, np.ndarray]], workdir: str | os.PathLike[str],
                           excluded: Sequence[str] = (), overrides: dict | None = None, repeats: int = 30,
                           threads: int | None = None, margin: float = 1.0, max_layers: int = 24,
                           settings: MeasureSettings | None = None) -> dict[str, str]:
    """Rewrite ``int8_path`` with slow layers kept float; returns ``{layer: why it stayed float}``.

    ``excluded`` are layers already kept float (e.g. by the accuracy fallback); they stay so.
    """
    base = (settings or MeasureSettings(threads=threads)).resolved()
    # the same ORT settings and rule as every decision; fewer rounds, since each layer is one trial
    settings = MeasureSettings(threads=base.threads, optimization=base.optimization, warmup=base.warmup,
                               runs=repeats, max_runs=2 * repeats)
    workdir = Path(workdir)
    kept_float = list(excluded)
    reasons: dict[str, str] = {}
    candidates = [n for n in compute_nodes(fp32_path, spec) if n not in kept_float][:max_layers]
    trial = workdir / "layer_speed_trial.onnx"
    for node in candidates:
        quantize_static_onnx(fp32_path, trial, feeds, spec=spec, nodes_to_exclude=kept_float + [node],
                             overrides=overrides)
        verdict = compare_onnx({"current": int8_path, "trial": trial}, timing_feeds, candidate="trial",
                               baseline="current", settings=settings, margin=margin)
        if verdict.chosen == "trial":
            kept_float.append(node)
            shutil.copyfile(trial, int8_path)
            reasons[node] = f"int8 slower here ({settings.threads} threads): float made the model " + ", ".join(
                f"{r.p50:.2f}x faster at batch {b} (95% CI {r.low:.2f}-{r.high:.2f})" for b, r in verdict.ratios.items())
    trial.unlink(missing_ok=True)
    return reasons
