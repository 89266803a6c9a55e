"""Post-training static int8 with ONNX Runtime: QDQ, per-channel weights, calibrated activations.

prunekit's part is the data flow (DataLoader -> feeds), the choices (QuantSpec), the MSE method
ONNX Runtime lacks (computed by prunekit's observer and passed as range overrides) and the checks.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from prunekit.errors import QuantizationError
from prunekit.quantization.calibration import FeedReader, collect_activations
from prunekit.quantization.observers import make_observer
from prunekit.quantization.spec import QuantSpec, resolved_reduce_range

_ORT_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy, "mse": CalibrationMethod.MinMax}
_QTYPE = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


@dataclass(frozen=True)
class StaticQuantization:
    """What a static quantization run produced."""

    path: Path
    quantized_nodes: tuple[str, ...]  # compute nodes that run in int8
    excluded_nodes: tuple[str, ...]  # nodes asked to stay float
    method: str


def supported_op_types(spec: QuantSpec) -> frozenset[str]:
    """Operator types ONNX Runtime's static quantizer handles in ``spec.format``."""
    return frozenset(QDQRegistry if spec.format == "qdq" else QLinearOpsRegistry)


def preprocess(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """ORT's recommended pre-processing (symbolic shapes, graph optimisation), then name every node.

    Node names are what fallback and reports refer to, so unnamed nodes get ``<op>_<index>``.
    ORT's symbolic shape inference gives up on some graphs with dynamic sequence axes (Hugging
    Face attention-mask code); the ONNX shape inference ORT also runs is then used alone.
    """
    source, target = Path(fp32_path).resolve(), Path(out_path).resolve()
    try:
        with _scratch_cwd(), _quiet_symbolic_shapes():  # on failure ORT saves sym_shape_infer_temp.onnx + <uuid>.data into the cwd
            quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
    except Exception as exc:  # noqa: BLE001 - ORT raises a bare Exception("Incomplete symbolic shape inference")
        if "symbolic shape" not in str(exc).lower():
            raise
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    model = onnx.load(str(out_path))
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    onnx.save(model, str(out_path))
    return Path(out_path)


@contextlib.contextmanager
def _quiet_symbolic_shapes() -> Iterator[None]:
    """Mute ORT's symbolic shape inference warnings ("unsupported broadcast between Min(512,
    sequence) sequence" on Hugging Face masks): its failure is handled above, the lines only
    reach the user's console."""
    logger = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _scratch_cwd() -> Iterator[None]:
    """Run in a temporary working directory (removed afterwards), then return to the caller's."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="prunekit-preprocess-") as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(previous)


def quantizable_nodes(model_path: str | os.PathLike[str], spec: QuantSpec,
                      op_types: Sequence[str] | None = None) -> list[str]:
    """Names of the nodes ONNX Runtime would quantize, in graph order.

    Raises
    ------
    QuantizationError
        If ``op_types`` names an operator ORT cannot quantize, or no node can be quantized.
    """
    supported = supported_op_types(spec)
    if op_types is not None:
        bad = sorted(set(op_types) - supported)
        if bad:
            raise QuantizationError(
                f"operator {', '.join(bad)} cannot be quantized by ONNX Runtime in {spec.format} format; "
                f"supported: {', '.join(sorted(supported))}"
            )
    wanted = set(op_types) if op_types is not None else supported
    model = onnx.load(str(model_path))
    nodes = [n.name for n in model.graph.node if n.op_type in wanted]
    if not nodes:
        present = sorted({n.op_type for n in model.graph.node})
        raise QuantizationError(
            f"model {Path(model_path).name} has no operator ONNX Runtime can quantize (ops: {', '.join(present)}); "
            "keep it in float or export it with Conv/Gemm/MatMul layers"
        )
    return nodes


def mse_overrides(model_path: str | os.PathLike[str], feeds: Sequence[dict[str, np.ndarray]],
                  spec: QuantSpec) -> dict[str, list[dict[str, float]]]:
    """Per-tensor ``rmin``/``rmax`` chosen by prunekit's MSE observer, as ORT TensorQuantOverrides."""
    activations = collect_activations(model_path, feeds)
    overrides: dict[str, list[dict[str, float]]] = {}
    for name, batches in activations.items():
        if not batches or batches[0].dtype != np.float32:
            continue
        observer = make_observer("mse", bits=8)
        for arr in batches:
            observer.update(torch.from_numpy(np.ascontiguousarray(arr)))
        lo, hi = observer.range()
        overrides[name] = [{"rmin": np.float32(min(float(lo), 0.0)), "rmax": np.float32(max(float(hi), 0.0))}]
    return overrides


def quantize_static_onnx(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    spec: QuantSpec,
    nodes_to_exclude: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
    overrides: dict[str, list[dict[str, float]]] | None = None,
) -> StaticQuantization:
    """Quantize a (pre-processed) float ONNX model to static int8 with ORT.

    ``overrides`` lets callers pass ranges computed once (MSE) to several runs (fallback).
    """
    if not feeds:
        raise QuantizationError(
            "static int8 needs calibration data: no calibration batches were given; pass calib_loader"
        )
    nodes = quantizable_nodes(model_path, spec, op_types)
    excluded = tuple(nodes_to_exclude)
    if spec.method == "mse" and overrides is None:
        overrides = mse_overrides(model_path, feeds, spec)
    extra: dict[str, object] = {
        "WeightSymmetric": spec.symmetric,
        "ActivationSymmetric": spec.activation_type == "int8",
        "CalibPercentile": float(spec.percentile),
    }
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    with contextlib.redirect_stdout(io.StringIO()):  # ORT's calibrators print() progress lines
        quantize_static(
            str(model_path), str(out_path), FeedReader(feeds),
            quant_format=QuantFormat.QDQ if spec.format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=list(op_types) if op_types is not None else None,
            per_channel=spec.per_channel, reduce_range=resolved_reduce_range(spec),
            activation_type=_QTYPE[spec.activation_type], weight_type=_QTYPE[spec.weight_type],
            nodes_to_exclude=list(excluded), calibrate_method=_ORT_METHODS[spec.method], extra_options=extra,
        )
    onnx.checker.check_model(str(out_path))
    quantized = tuple(n for n in nodes if n not in set(excluded))
    return StaticQuantization(Path(out_path), quantized, excluded, spec.method)
