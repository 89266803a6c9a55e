"""The one entry the pipeline calls: export, quantize, verify accuracy, measure speed, pick the artifact.

Int8 is not always faster: the int8 model is timed against float in the same process and the
deployable artifact is the faster of the two, with the reason recorded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.export.onnx import Example, default_input_names, export_onnx, onnx_size_bytes
from prunekit.quantization.calibration import feeds_from_loader
from prunekit.quantization.dynamic import quantize_dynamic_onnx
from prunekit.quantization.fallback import EvalFn, accuracy_aware_fallback
from prunekit.quantization.spec import QuantSpec
from prunekit.quantization.speed import choose_faster, measure_latency
from prunekit.quantization.static import mse_overrides, preprocess, quantize_static_onnx


@dataclass(frozen=True)
class QuantResult:
    """Everything a report says about one quantization."""

    fp32_path: Path
    int8_path: Path
    chosen: Literal["fp32", "int8"]
    chosen_path: Path
    reason: str
    mode: Literal["static", "dynamic"]
    method: str
    fp32_bytes: int
    int8_bytes: int
    latency_s: dict[str, dict[int, float]]  # "fp32"/"int8" -> batch -> median seconds
    float_score: float | None = None
    int8_score: float | None = None
    kept_float: dict[str, str] = field(default_factory=dict)  # node -> why it stayed float

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.fp32_bytes

    def speedup(self, batch: int) -> float:
        return self.latency_s["fp32"][batch] / self.latency_s["int8"][batch]


def _batch_feed(example: Example, input_names: Sequence[str], batch: int) -> dict[str, np.ndarray]:
    """Repeat the batch-1 example to ``batch`` rows for timing."""
    if isinstance(example, torch.Tensor):
        tensors = [example]
    elif isinstance(example, dict):
        tensors = [example[k] for k in input_names]
    else:
        tensors = list(example)
    return {n: t[:1].repeat(batch, *([1] * (t.dim() - 1))).numpy() for n, t in zip(input_names, tensors)}


def token_axes(model: nn.Module, example_input: Example) -> dict[str, dict[int, str]] | None:
    """The export's dynamic axes for token ids (batch and sequence), else None; see
    :func:`prunekit.export.hf.token_dynamic_axes` (the output is named ``output``)."""
    from prunekit.export.hf import token_dynamic_axes

    return token_dynamic_axes(model, example_input, ("output",))


def quantize_for_deployment(
    model: nn.Module,
    example_input: Example,
    calib_loader: Iterable[Any] | None,
    *,
    workdir: str | os.PathLike[str],
    spec: QuantSpec | None = None,
    mode: Literal["static", "dynamic"] = "static",
    eval_fn: EvalFn | None = None,
    tolerance: float | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 50,
    threads: int = 1,
    per_layer_speed: bool = False,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> QuantResult:
    """Export ``model`` to ONNX, quantize it to int8, check accuracy, time both and choose.

    Parameters
    ----------
    calib_loader
        Batches of ``(inputs, targets)`` (or inputs) for static calibration; ignored for dynamic.
    eval_fn
        ``onnx_path -> score`` (higher is better); with ``tolerance`` it drives the accuracy fallback.
    tolerance
        Largest accepted ``float_score - int8_score`` (e.g. 0.01 for one accuracy point).
    per_layer_speed
        Also keep in float each Conv/Gemm/MatMul whose int8 version makes the model slower
        (:func:`prunekit.quantization.layer_speed.keep_slow_layers_float`).
    dynamic_axes
        Symbolic axes of the export (see :func:`prunekit.export.onnx.export_onnx`). Default: token
        inputs (a dict of 2-D integer tensors, e.g. ``input_ids``/``attention_mask``) get dynamic
        ``batch`` and ``sequence`` axes (:func:`token_axes`), anything else a dynamic batch axis.
        The model must accept the dict keys as keywords and return a tensor (wrap HF models in
        :class:`prunekit.export.hf.TokenModel`).

    Raises
    ------
    QuantizationError
        No calibration data, nothing quantizable, or a tolerance no layer choice can meet.
    """
    spec = spec if spec is not None else QuantSpec()
    if mode not in ("static", "dynamic"):
        raise InvalidParameterError(f"The 'mode' parameter of quantize_for_deployment must be 'static' or 'dynamic'. Got {mode!r} instead.")
    if tolerance is not None and eval_fn is None:
        raise InvalidParameterError("quantize_for_deployment got a tolerance without eval_fn: pass eval_fn to measure the drop")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    names = default_input_names(example_input)
    axes = dynamic_axes if dynamic_axes is not None else token_axes(model, example_input)
    raw = export_onnx(model, example_input, workdir / "model_fp32_raw.onnx", input_names=names, dynamic_axes=axes)
    fp32 = preprocess(raw, workdir / "model_fp32.onnx")
    int8 = workdir / "model_int8.onnx"
    kept: dict[str, str] = {}
    float_score = int8_score = None
    if mode == "dynamic":
        quantize_dynamic_onnx(fp32, int8, spec=spec)
    else:
        feeds = feeds_from_loader(calib_loader, names, max_batches=spec.calib_batches)
        overrides = mse_overrides(fp32, feeds, spec) if spec.method == "mse" else None
        if tolerance is not None and eval_fn is not None:
            fb = accuracy_aware_fallback(fp32, feeds, spec=spec, eval_fn=eval_fn, tolerance=tolerance,
                                         workdir=workdir, overrides=overrides)
            os.replace(fb.quantization.path, int8)
            kept, float_score, int8_score = fb.kept_float, fb.float_score, fb.int8_score
        else:
            quantize_static_onnx(fp32, int8, feeds, spec=spec, overrides=overrides)
    if eval_fn is not None and float_score is None:
        float_score, int8_score = float(eval_fn(str(fp32))), float(eval_fn(str(int8)))
    feeds_by_batch = {b: _batch_feed(example_input, names, b) for b in batch_sizes}
    if per_layer_speed and mode == "static":
        from prunekit.quantization.layer_speed import keep_slow_layers_float

        kept.update(keep_slow_layers_float(fp32, int8, feeds, spec=spec, timing_feeds=feeds_by_batch,
                                           workdir=workdir, excluded=list(kept), overrides=overrides,
                                           threads=threads))
        if eval_fn is not None:
            int8_score = float(eval_fn(str(int8)))
    latency = measure_latency({"fp32": fp32, "int8": int8}, feeds_by_batch, repeats=repeats, threads=threads)
    chosen, reason = choose_faster(latency, candidate="int8", baseline="fp32", batches=batch_sizes)
    return QuantResult(
        fp32_path=fp32, int8_path=int8, chosen=chosen,  # type: ignore[arg-type]
        chosen_path=int8 if chosen == "int8" else fp32, reason=reason, mode=mode,
        method=spec.method if mode == "static" else "dynamic", fp32_bytes=onnx_size_bytes(fp32),
        int8_bytes=onnx_size_bytes(int8), latency_s={k: dict(v) for k, v in latency.median_s.items()},
        float_score=float_score, int8_score=int8_score, kept_float=kept,
    )
