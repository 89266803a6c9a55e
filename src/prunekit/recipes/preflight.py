"""Checks that would otherwise fail only after paying for training, run on the untrained model first,
and the honesty checks after the cut (did pruning remove anything; what was asked vs applied).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.errors import PrunekitError


class NothingPrunedError(PrunekitError):
    """Pruning removed nothing, and the recipe did not say that is fine."""


def check_export_and_quantization(model: nn.Module, example: Any, recipe: Any, workdir: Path) -> None:
    """Export the dense model to ONNX in a throwaway file (and check dynamic int8 can use it)."""
    from prunekit.errors import ExportError, QuantizationError
    from prunekit.export.onnx import export_onnx

    with tempfile.TemporaryDirectory(dir=workdir, prefix=".preflight-") as tmp:
        try:
            path = export_onnx(model, example, Path(tmp) / "dense.onnx", opset=recipe.export.opset)
        except ExportError as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ExportError(f"checked before training: {first}; prunekit measures and quantizes the ONNX export, "
                              f"so replace the unsupported op or change export.opset") from None
        q = recipe.quantization
        if q is not None and q.enabled and q.mode == "dynamic":
            import onnx

            from prunekit.quantization.dynamic import check_dynamic_quantizable

            check_dynamic_quantizable(onnx.load(str(path)), name="the dense model")
        elif q is not None and q.enabled and q.mode == "static":
            from prunekit.quantization import QuantSpec
            from prunekit.quantization.static import quantizable_nodes

            try:
                quantizable_nodes(path, QuantSpec())  # raises when no layer is one ORT can quantize
            except QuantizationError as exc:
                raise QuantizationError(f"checked before training: {exc} (quantization.enabled: false keeps "
                                        f"it in float)") from None


def _widths(model: nn.Module) -> list[int]:
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            out.append(m.out_channels)
        elif isinstance(m, nn.Linear):
            out.append(m.out_features)
    return out


def round_to_warning(model: nn.Module, spec: Any) -> str | None:
    """A warning when ``pruning.round_to`` exceeds every layer width (it then rounds nothing)."""
    widths = _widths(model)
    if spec.granularity != "structured" or spec.round_to <= 1 or not widths or spec.round_to <= max(widths):
        return None
    return (f"pruning.round_to {spec.round_to} is larger than every layer width (the widest has {max(widths)} "
            f"channels), so widths are not rounded; use a value such as 8 or 1 (off)")


def check_something_removed(dense: nn.Module, pruned: nn.Module, masks: Any, spec: Any, model_label: str) -> str | None:
    """Raise NothingPrunedError (or return a warning with ``pruning.allow_no_op``) when nothing was cut."""
    from prunekit.evaluation.complexity import count_params

    if masks is not None:
        zeros = sum(int((m == 0).sum()) for m in masks.values()) if isinstance(masks, dict) else 1
        removed = zeros > 0
    else:
        removed = count_params(pruned) < count_params(dense)
    if removed:
        return None
    text = (f"pruning removed nothing from model {model_label!r}: no channel group could be cut "
            f"(check pruning.ignore, min_keep, per_layer, or whether the model has prunable layers)")
    if getattr(spec, "allow_no_op", False):
        return text + "; continuing because pruning.allow_no_op is true"
    raise NothingPrunedError(text + "; set pruning.allow_no_op: true to continue without pruning")


def asked_vs_applied(dense_cost: float | None, pruned_cost: float | None, spec: Any) -> str | None:
    """A warning when the cut removed clearly less of the target metric than the recipe asked."""
    if not dense_cost or pruned_cost is None or spec.target.metric not in ("macs", "params"):
        return None
    applied = 1.0 - pruned_cost / dense_cost
    asked = spec.target.ratio
    if applied >= asked - 0.02:
        return None
    return (f"pruning asked to remove {asked:.1%} of {spec.target.metric} but removed {applied:.1%} "
            f"(min_keep, round_to, ignored layers or groups that cannot be cut limited it)")
