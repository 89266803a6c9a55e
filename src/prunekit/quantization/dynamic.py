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
    if not any(n.op_type in set(op_types) for n in model.graph.node):
        present = sorted({n.op_type for n in model.graph.node})
        raise QuantizationError(
            f"dynamic int8 found no {'/'.join(op_types)} node in {Path(model_path).name} (ops: {', '.join(present)}); "
            "use static int8 for convolutional models"
        )
    quantize_dynamic(
        str(model_path), str(out_path), op_types_to_quantize=list(op_types), per_channel=spec.per_channel,
        reduce_range=resolved_reduce_range(spec), weight_type=QuantType.QInt8 if spec.weight_type == "int8" else QuantType.QUInt8,
        nodes_to_exclude=list(nodes_to_exclude),
    )
    onnx.checker.check_model(str(out_path))
    return Path(out_path)
