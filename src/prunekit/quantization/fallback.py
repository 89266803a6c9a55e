"""Accuracy-aware fallback: keep the most quantization-sensitive layers in float until the drop fits.

A layer's sensitivity is its *own* quantization error, not the error accumulated from the layers
before it: the signal-to-quantization-noise ratio of its weights and of its activations measured
just before and just after their own QuantizeLinear/DequantizeLinear pair (ORT's qdq_loss_debug).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from prunekit.errors import InvalidParameterError, QuantizationError
from prunekit.quantization.calibration import collect_activations
from prunekit.quantization.spec import QuantSpec
from prunekit.quantization.static import StaticQuantization, quantizable_nodes, quantize_static_onnx

EvalFn = Callable[[str], float]  # ONNX path -> score, higher is better (e.g. accuracy)


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantizable node and its own quantization error."""

    node: str
    op_type: str
    sqnr_db: float  # combined weight + activation signal-to-quantization-noise ratio; lower = more sensitive


@dataclass(frozen=True)
class FallbackStep:
    excluded: tuple[str, ...]
    score: float
    drop: float


@dataclass(frozen=True)
class FallbackResult:
    """The accepted int8 model, the float-kept layers with reasons, and every step tried."""

    quantization: StaticQuantization
    float_score: float
    int8_score: float
    kept_float: dict[str, str]  # node -> why it stayed float
    steps: tuple[FallbackStep, ...]
    ranking: tuple[LayerSensitivity, ...]


def _sqnr_db(signal: Sequence[np.ndarray], noisy: Sequence[np.ndarray]) -> float:
    s = np.concatenate([a.ravel() for a in signal]).astype(np.float64)
    n = np.concatenate([a.ravel() for a in noisy]).astype(np.float64)
    noise = float(np.sum((s - n) ** 2))
    power = float(np.sum(s**2))
    return math.inf if noise == 0.0 else 10.0 * math.log10(max(power, 1e-30) / noise)


def rank_sensitivity(fp32_path: str | os.PathLike[str], qdq_path: str | os.PathLike[str],
                     feeds: Sequence[dict[str, np.ndarray]], *, spec: QuantSpec,
                     op_types: Sequence[str] | None = None, max_batches: int = 4) -> list[LayerSensitivity]:
    """Quantizable nodes of ``fp32_path`` sorted most sensitive first (lowest own SQNR).

    ``qdq_path`` must be the QDQ-format quantization of ``fp32_path``.
    """
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching, create_weight_matching

    feeds = list(feeds)[:max_batches]
    matches = create_activation_matching(collect_activations(qdq_path, feeds))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)  # ORT logs every int32 bias it cannot match; biases are not ranked
    try:
        weights = create_weight_matching(str(fp32_path), str(qdq_path))
    finally:
        root.setLevel(level)
    model = onnx.load(str(fp32_path))
    names = set(quantizable_nodes(fp32_path, spec, op_types))
    ranking = []
    for node in model.graph.node:
        if node.name not in names:
            continue
        noise_ratio = 0.0  # noise power / signal power, summed over the node's own QDQ pairs
        for tensor in [*node.input, *node.output]:
            if tensor in weights:
                db = _sqnr_db([weights[tensor]["float"]], [weights[tensor]["dequantized"]])
            elif tensor in matches and "pre_qdq" in matches[tensor]:
                db = _sqnr_db(matches[tensor]["pre_qdq"], matches[tensor]["post_qdq"])
            else:
                continue
            noise_ratio += 0.0 if math.isinf(db) else 10.0 ** (-db / 10.0)
        sqnr = math.inf if noise_ratio == 0.0 else -10.0 * math.log10(noise_ratio)
        ranking.append(LayerSensitivity(node.name, node.op_type, sqnr))
    return sorted(ranking, key=lambda s: s.sqnr_db)


def accuracy_aware_fallback(
    fp32_path: str | os.PathLike[str],
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    spec: QuantSpec,
    eval_fn: EvalFn,
    tolerance: float,
    workdir: str | os.PathLike[str],
    op_types: Sequence[str] | None = None,
    overrides: dict[str, list[dict[str, float]]] | None = None,
) -> FallbackResult:
    """Quantize, evaluate, and keep the next most sensitive layer in float while the drop exceeds ``tolerance``.

    Raises
    ------
    QuantizationError
        If the drop still exceeds ``tolerance`` with every quantizable layer kept in float.
    """
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise InvalidParameterError(
            f"The 'tolerance' parameter of accuracy_aware_fallback must be a float >= 0. Got {tolerance!r} instead."
        )
    workdir = Path(workdir)
    float_score = float(eval_fn(str(fp32_path)))
    out = workdir / "int8_fallback.onnx"
    qdq_spec = spec if spec.format == "qdq" else _with_format(spec, "qdq")
    first = quantize_static_onnx(fp32_path, out, feeds, spec=spec, op_types=op_types, overrides=overrides)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        qdq_path = first.path
        if spec.format != "qdq":
            qdq_path = quantize_static_onnx(fp32_path, Path(tmp) / "qdq.onnx", feeds, spec=qdq_spec,
                                            op_types=op_types, overrides=overrides).path
        ranking = rank_sensitivity(fp32_path, qdq_path, feeds, spec=qdq_spec, op_types=op_types)
    steps: list[FallbackStep] = []
    excluded: list[str] = []
    result = first
    for k in range(len(ranking) + 1):
        if k > 0:
            excluded.append(ranking[k - 1].node)
            result = quantize_static_onnx(fp32_path, out, feeds, spec=spec, op_types=op_types,
                                          overrides=overrides, nodes_to_exclude=excluded)
        score = float(eval_fn(str(result.path)))
        steps.append(FallbackStep(tuple(excluded), score, float_score - score))
        if float_score - score <= tolerance:
            kept = {
                s.node: (f"own quantization SQNR {s.sqnr_db:.1f} dB, rank {i + 1} of {len(ranking)}; "
                         f"kept float because the drop was {steps[i].drop:.4g} > tolerance {tolerance:g}")
                for i, s in enumerate(ranking[:k])
            }
            return FallbackResult(result, float_score, score, kept, tuple(steps), tuple(ranking))
    raise QuantizationError(
        f"accuracy tolerance {tolerance:g} cannot be met: the drop is still {steps[-1].drop:.4g} with all "
        f"{len(ranking)} quantizable layers in float; raise the tolerance or keep the model in float"
    )


def _with_format(spec: QuantSpec, fmt: str) -> QuantSpec:
    from dataclasses import replace

    return replace(spec, format=fmt)  # type: ignore[arg-type]


def onnx_accuracy(loader: torch.utils.data.DataLoader, *, input_name: str | None = None) -> EvalFn:
    """An ``eval_fn`` giving top-1 accuracy of an ONNX classifier on ``loader`` (computed in ORT)."""
    from prunekit.quantization.speed import make_session

    batches = [(x.numpy(), y.numpy()) for x, y in loader]

    def evaluate(path: str) -> float:
        session = make_session(path)
        name = input_name or session.get_inputs()[0].name
        correct = sum(int((session.run(None, {name: x})[0].argmax(1) == y).sum()) for x, y in batches)
        return correct / max(1, sum(len(y) for _, y in batches))

    return evaluate
