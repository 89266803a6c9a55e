"""Affine quantization math: scale/zero point from a range, quantize, dequantize, fake-quant (STE).

Conventions follow ONNX QuantizeLinear so the PyTorch and ONNX paths agree:
``q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)``, ``x' = (q - zero_point) * scale``.
"""

from __future__ import annotations

import torch

from prunekit.errors import InvalidParameterError

_EPS = 1e-12  # floor on scale so an all-zero (pruned) channel gets a finite scale


def qrange(bits: int, *, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a ``bits``-wide type; ``narrow`` drops -2^(b-1) so symmetric ranges balance."""
    if not 2 <= bits <= 16:
        raise InvalidParameterError(f"The 'bits' parameter of qrange must be in [2, 16]. Got {bits!r} instead.")
    if signed:
        return (-(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1)
    return 0, 2**bits - 1


def _shape_for(param: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Broadcast a per-channel parameter of shape (C,) along ``axis`` of ``x``."""
    if axis is None or param.dim() == 0:
        return param
    shape = [1] * x.dim()
    shape[axis] = -1
    return param.reshape(shape)


def compute_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, *, qmin: int, qmax: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point mapping ``[min_val, max_val]`` (widened to contain 0) onto ``[qmin, qmax]``.

    Symmetric: ``scale = max|x| / ((qmax - qmin) / 2)`` and the zero point is the middle of the
    integer range (0 for signed types). Asymmetric: ``scale = (max - min) / (qmax - qmin)`` and the
    zero point makes real 0 exactly representable (needed for zero padding and pruned weights).
    """
    min_val = torch.minimum(torch.as_tensor(min_val, dtype=torch.float32), torch.zeros(()))
    max_val = torch.maximum(torch.as_tensor(max_val, dtype=torch.float32), torch.zeros(()))
    if symmetric:
        absmax = torch.maximum(-min_val, max_val)
        scale = (absmax / ((qmax - qmin) / 2.0)).clamp_min(_EPS)
        zero_point = torch.full_like(scale, float((qmin + qmax + 1) // 2)).round()
    else:
        scale = ((max_val - min_val) / float(qmax - qmin)).clamp_min(_EPS)
        zero_point = (qmin - torch.round(min_val / scale)).clamp(qmin, qmax)
    return scale, zero_point.to(torch.int32)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, qmin: int, qmax: int,
             axis: int | None = None) -> torch.Tensor:
    """Integer codes (as int32) of ``x``; round half to even like ONNX QuantizeLinear."""
    s = _shape_for(scale, x, axis)
    z = _shape_for(zero_point, x, axis)
    return torch.clamp(torch.round(x / s) + z, qmin, qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, axis: int | None = None) -> torch.Tensor:
    """Real values of integer codes ``q``."""
    s = _shape_for(scale, q, axis)
    z = _shape_for(zero_point, q, axis)
    return (q.to(torch.float32) - z) * s


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, qmin: int, qmax: int,
                  axis: int | None = None) -> torch.Tensor:
    """Quantize-dequantize in float with a clipped straight-through estimator.

    Forward is exactly ``dequantize(quantize(x))``; backward passes the gradient unchanged where
    ``x`` fell inside the representable range and zeroes it where it was clipped.
    """
    s = _shape_for(scale, x, axis).detach()
    z = _shape_for(zero_point, x, axis).detach()
    codes = torch.round(x.detach() / s) + z
    inside = ((codes >= qmin) & (codes <= qmax)).to(x.dtype)
    x_dq = (torch.clamp(codes, qmin, qmax) - z) * s
    return x_dq + (x - x.detach()) * inside  # value of x_dq, gradient of x masked to the range
