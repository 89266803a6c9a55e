"""Dynamic int8 (weights int8 at rest, activations quantized per batch at run time).

Meant for linear-heavy (transformer) models whose activation ranges vary per input; no
calibration data is needed. Convolutions are left in float by default: ORT's ConvInteger path is
slower than its float Conv on x86.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from prunekit.errors import QuantizationError
from prunekit.quantization.spec import QuantSpec, resolved_reduce_range

DYNAMIC_OP_TYPES: tuple[str, ...] = ("MatMul", "Attention", "LSTM", "Gather")


def quantize_dynamic_onnx(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    spec: QuantSpec | None = None,
    op_types: Sequence[str] = DYNAMIC_OP_TYPES,
    nodes_to_exclude: Sequence[str] = (),
) -> Path:
    """Write a dynamically quantized copy of ``model_path``; raises if nothing would be quantized."""
    spec = spec if spec is not None else QuantSpec()
    model = onnx.load(str(model_path))
    check_dynamic_quantizable(model, op_types, name=Path(model_path).name)
    quantize_dynamic(
        str(model_path), str(out_path), op_types_to_quantize=list(op_types), per_channel=spec.per_channel,
        reduce_range=resolved_reduce_range(spec), weight_type=QuantType.QInt8 if spec.weight_type == "int8" else QuantType.QUInt8,
        nodes_to_exclude=list(nodes_to_exclude),
    )
    onnx.checker.check_model(str(out_path))
    return Path(out_path)


def check_dynamic_quantizable(model: onnx.ModelProto, op_types: Sequence[str] = DYNAMIC_OP_TYPES, *,
                              name: str = "the model") -> None:
    """Raise a QuantizationError saying why, when dynamic int8 would find nothing to quantize."""
    present = sorted({n.op_type for n in model.graph.node})
    if any(op in set(op_types) for op in present):
        return
    if "Gemm" in present:
        hint = ("its Linear layers export as Gemm, which ONNX Runtime's dynamic int8 does not quantize; "
                "use quantization.mode: static (calibrated int8 covers Gemm)")
    elif "Conv" in present:
        hint = "use quantization.mode: static for convolutional models"
    else:
        hint = "it has no layer dynamic int8 can quantize; use quantization.mode: static or turn quantization off"
    raise QuantizationError(
        f"dynamic int8 found no {'/'.join(op_types)} node in {name} (ops: {', '.join(present) or 'none'}): {hint}"
    )
