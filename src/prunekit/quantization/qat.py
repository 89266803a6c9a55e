"""Quantization-aware training: fake-quantized weights and activations with a straight-through estimator.

``prepare_qat`` wraps every Conv/Linear: its weight becomes ``fake_quant(weight * mask)`` through a
``torch.nn.utils.parametrize`` parametrization (so it stacks on prunekit's pruning masks), and its
input passes an activation fake-quantizer. Zero weights present at prepare time (pruned without a
mask) get a mask, so they stay exactly zero through training and export. ``export_qat_onnx``
bakes the fake-quantized weights (they already lie on the int8 grid, so ONNX Runtime's per-channel
min-max re-derives the same scales) and hands ORT the activation ranges learned in training.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from prunekit.errors import InvalidParameterError, QuantizationError
from prunekit.quantization.affine import compute_qparams, fake_quantize, qrange
from prunekit.quantization.spec import QuantSpec, resolved_reduce_range

_QAT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class FakeQuantWeight(nn.Module):
    """Parametrization ``w -> fake_quant(w * mask)``; per-channel along axis 0 or per-tensor."""

    def __init__(self, mask: torch.Tensor | None, *, qmin: int, qmax: int, symmetric: bool, per_channel: bool) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.qmin, self.qmax, self.symmetric, self.per_channel = qmin, qmax, symmetric, per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # w: (out, in, *k)
        if self.mask is not None:
            w = w * self.mask
        flat = w.detach().reshape(w.shape[0], -1) if self.per_channel else w.detach().reshape(1, -1)
        scale, zp = compute_qparams(flat.min(dim=1).values, flat.max(dim=1).values, qmin=self.qmin,
                                    qmax=self.qmax, symmetric=self.symmetric)  # each (C,) or (1,)
        if not self.per_channel:
            return fake_quantize(w, scale[0], zp[0], qmin=self.qmin, qmax=self.qmax)
        return fake_quantize(w, scale, zp, qmin=self.qmin, qmax=self.qmax, axis=0)


class ActivationFakeQuant(nn.Module):
    """Asymmetric uint8 (or ``bits``) fake quantization of a layer input, with an EMA-observed range.

    The range follows the batch min/max (``minmax``) or percentiles (``percentile``) with an
    exponential moving average while ``observing`` is True; ``freeze_observers`` fixes it.
    """

    def __init__(self, *, bits: int = 8, method: str = "minmax", percentile: float = 99.99,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.bits, self.method, self.percentile, self.momentum = bits, method, percentile, momentum
        self.qmin, self.qmax = qrange(bits, signed=False)
        self.observing = True
        self.register_buffer("rmin", torch.tensor(0.0))
        self.register_buffer("rmax", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    def _batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.detach().reshape(-1).float()
        if self.method == "percentile":
            if flat.numel() > 1 << 20:
                flat = flat[:: flat.numel() // (1 << 20) + 1]
            q = torch.tensor([1 - self.percentile / 100, self.percentile / 100], dtype=flat.dtype)
            lo, hi = torch.quantile(flat, q)
            return lo, hi
        return flat.min(), flat.max()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            lo, hi = self._batch_range(x)
            if not bool(self.initialized):
                self.rmin.copy_(lo)
                self.rmax.copy_(hi)
                self.initialized.fill_(True)
            else:
                self.rmin.lerp_(lo, self.momentum)
                self.rmax.lerp_(hi, self.momentum)
        if not bool(self.initialized):
            return x
        scale, zp = compute_qparams(self.rmin, self.rmax, qmin=self.qmin, qmax=self.qmax, symmetric=False)
        return fake_quantize(x, scale, zp, qmin=self.qmin, qmax=self.qmax)


def _input_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (module.input_quant(args[0]), *args[1:])


def _existing_mask(module: nn.Module) -> torch.Tensor | None:
    """The mask that keeps pruned weights at zero: torch.nn.utils.prune's, else the zeros present now."""
    if hasattr(module, "weight_mask"):  # torch.nn.utils.prune reparametrization: bake it, keep its mask
        mask = module.weight_mask.detach().clone()
        prune.remove(module, "weight")
        return mask
    weight = module.weight.detach()
    return (weight != 0).to(weight.dtype) if bool((weight == 0).any()) else None


def prepare_qat(model: nn.Module, *, spec: QuantSpec | None = None, inplace: bool = False) -> nn.Module:
    """Return ``model`` with fake-quantized Conv/Linear weights and inputs, ready to fine-tune.

    Weights use min-max per channel (what ONNX Runtime uses at export); activations use
    ``spec.method`` which must be ``minmax`` or ``percentile``.
    """
    spec = spec if spec is not None else QuantSpec()
    if spec.method not in ("minmax", "percentile"):
        raise InvalidParameterError(
            f"The 'method' parameter of QuantSpec must be 'minmax' or 'percentile' for QAT. Got {spec.method!r} instead."
        )
    # the integer grid ORT will use at export, so baked weights re-quantize exactly
    # (ORT's reduce_range symmetric int8 is [-64, 64])
    if spec.bits == 8 and spec.symmetric and resolved_reduce_range(spec):
        qmin, qmax = -64, 64
    else:
        qmin, qmax = qrange(spec.bits, signed=True, narrow=spec.symmetric)
    for module in model.modules():
        if hasattr(module, "weight_orig"):  # torch prune's computed weight is not a leaf and blocks deepcopy;
            module.weight = module.weight.detach()  # its pre-hook recomputes it on the next forward anyway
    model = model if inplace else copy.deepcopy(model)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, _QAT_TYPES)]
    if not layers:
        raise QuantizationError(
            f"prepare_qat found no Conv/Linear layer in {type(model).__name__}: nothing to quantize"
        )
    for _, module in layers:
        mask = _existing_mask(module)
        parametrize.register_parametrization(
            module, "weight",
            FakeQuantWeight(mask, qmin=qmin, qmax=qmax, symmetric=spec.symmetric, per_channel=spec.per_channel),
        )
        module.input_quant = ActivationFakeQuant(bits=spec.bits, method=spec.method, percentile=spec.percentile)
        module._prunekit_qat_hook = module.register_forward_pre_hook(_input_hook)
    return model


def qat_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "_prunekit_qat_hook")]


def set_observing(model: nn.Module, observing: bool) -> None:
    """Turn activation range tracking on (calibration, early training) or off (frozen ranges)."""
    for _, module in qat_layers(model):
        module.input_quant.observing = observing


def calibrate_qat(model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None) -> None:
    """Initialise activation ranges from data before training (no gradients, eval mode)."""
    was = model.training
    model.eval()
    set_observing(model, True)
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x)
    model.train(was)


def convert_qat(model: nn.Module) -> tuple[nn.Module, dict[str, tuple[float, float]]]:
    """A plain float copy with the fake-quantized (masked) weights baked in, plus input ranges per layer.

    ``parametrize.remove_parametrizations`` is not used on the copy: deep copies share the injected
    ``Parametrized*`` class, and removing the property from it would break ``model`` itself.
    """
    with torch.no_grad():
        baked = {name: module.weight.detach().clone() for name, module in qat_layers(model)}
    model = copy.deepcopy(model)
    ranges: dict[str, tuple[float, float]] = {}
    for name, module in qat_layers(model):
        quant = module.input_quant
        if bool(quant.initialized):
            ranges[name] = (min(float(quant.rmin), 0.0), max(float(quant.rmax), 0.0))
        module._prunekit_qat_hook.remove()
        del module._prunekit_qat_hook, module.input_quant
        del module._modules["parametrizations"]
        module.__class__ = module.__class__.__bases__[0]  # ParametrizedConv2d -> Conv2d
        module.weight = nn.Parameter(baked[name])
    return model, ranges


def _module_of(node_name: str) -> str | None:
    """TorchScript-exported node names look like ``/block/block.0/Conv``: the module path is the last scope."""
    parts = node_name.strip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def range_overrides(onnx_path: str | os.PathLike[str], ranges: dict[str, tuple[float, float]],
                    ) -> dict[str, list[dict[str, np.float32]]]:
    """Map learned input ranges onto the ONNX input tensor of each Conv/Gemm/MatMul node."""
    overrides: dict[str, list[dict[str, np.float32]]] = {}
    for node in onnx.load(str(onnx_path)).graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and _module_of(node.name) in ranges:
            lo, hi = ranges[_module_of(node.name)]
            overrides[node.input[0]] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
    return overrides


def export_qat_onnx(model: nn.Module, example_input: torch.Tensor, workdir: str | os.PathLike[str],
                    feeds: Sequence[dict[str, np.ndarray]], *, spec: QuantSpec | None = None):
    """Export a QAT model to the same static int8 ONNX form as post-training quantization.

    Returns the :class:`~prunekit.quantization.static.StaticQuantization` of the int8 file;
    ``feeds`` calibrate any tensor whose range training did not learn (outputs, residual adds).
    """
    from prunekit.export.onnx import export_onnx
    from prunekit.quantization.static import preprocess, quantize_static_onnx

    spec = spec if spec is not None else QuantSpec()
    workdir = Path(workdir)
    float_model, ranges = convert_qat(model)
    fp32 = export_onnx(float_model, example_input, workdir / "qat_fp32.onnx")
    prepared = preprocess(fp32, workdir / "qat_fp32_prepared.onnx")
    overrides = range_overrides(prepared, ranges)
    base = spec if spec.method in ("minmax", "percentile") else QuantSpec(method="minmax")
    return quantize_static_onnx(prepared, workdir / "qat_int8.onnx", feeds, spec=base, overrides=overrides)
