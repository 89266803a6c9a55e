"""Weight-only int8 and grouped int4 for Linear layers: a size option, dequantized on load.

Activations stay float, so accuracy is only touched through the weights; the saving is storage
and memory bandwidth, not integer kernels. int4 codes are packed two per byte with one float32
scale per group of ``group_size`` input features (per output row).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.errors import InvalidParameterError, QuantizationError
from prunekit.quantization.affine import compute_qparams, dequantize, qrange, quantize


@dataclass(frozen=True)
class PackedLinear:
    """One Linear weight in compressed form."""

    codes: torch.Tensor  # int8 (out, in) for 8 bits; uint8 (out, ceil(in_padded / 2)) for 4 bits
    scales: torch.Tensor  # float32 (out,) for 8 bits; (out, groups) for 4 bits
    shape: tuple[int, int]
    bits: int
    group_size: int | None

    def nbytes(self) -> int:
        return self.codes.numel() * self.codes.element_size() + self.scales.numel() * self.scales.element_size()


@dataclass(frozen=True)
class WeightOnlyResult:
    """Compressed weights plus the size figures a report needs."""

    packed: dict[str, PackedLinear]  # module name -> packed weight
    float_weight_bytes: int  # the same Linear weights in float32
    packed_weight_bytes: int
    model_float_bytes: int  # all parameters and buffers in float32
    model_packed_bytes: int  # the model with Linear weights packed

    @property
    def weight_ratio(self) -> float:
        return self.packed_weight_bytes / self.float_weight_bytes

    @property
    def model_ratio(self) -> float:
        return self.model_packed_bytes / self.model_float_bytes


def _pack(weight: torch.Tensor, bits: int, group_size: int) -> PackedLinear:
    out_features, in_features = weight.shape
    w = weight.detach().float()
    qmin, qmax = qrange(bits, signed=True, narrow=True)
    if bits == 8:
        scale, zp = compute_qparams(w.min(dim=1).values, w.max(dim=1).values, qmin=qmin, qmax=qmax, symmetric=True)
        codes = quantize(w, scale, zp, qmin=qmin, qmax=qmax, axis=0).to(torch.int8)  # (out, in)
        return PackedLinear(codes, scale, (out_features, in_features), 8, None)
    pad = (-in_features) % group_size
    grouped = nn.functional.pad(w, (0, pad)).reshape(out_features, -1, group_size)  # (out, groups, g)
    absmax = grouped.abs().amax(dim=2)  # (out, groups)
    scale, zp = compute_qparams(-absmax, absmax, qmin=qmin, qmax=qmax, symmetric=True)
    codes = torch.clamp(torch.round(grouped / scale.unsqueeze(-1)), qmin, qmax).to(torch.int16)  # (out, groups, g)
    nibbles = (codes.reshape(out_features, -1) & 0xF).to(torch.uint8)  # (out, in_padded), two's complement
    packed = nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)  # (out, in_padded / 2)
    return PackedLinear(packed, scale, (out_features, in_features), 4, group_size)


def unpack(p: PackedLinear) -> torch.Tensor:
    """Dequantize a packed weight back to float32 of its original shape."""
    out_features, in_features = p.shape
    if p.bits == 8:
        return dequantize(p.codes.to(torch.int32), p.scales, torch.zeros_like(p.scales, dtype=torch.int32), axis=0)
    low = (p.codes & 0xF).to(torch.int16)
    high = (p.codes >> 4).to(torch.int16)
    nibbles = torch.stack([low, high], dim=2).reshape(out_features, -1)  # (out, in_padded)
    codes = torch.where(nibbles > 7, nibbles - 16, nibbles).float()  # back to signed
    grouped = codes.reshape(out_features, -1, p.group_size or in_features) * p.scales.unsqueeze(-1)  # (out, groups, g)
    return grouped.reshape(out_features, -1)[:, :in_features]


def _model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * 4 for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())


def compress_linear_weights(model: nn.Module, *, bits: int = 8, group_size: int = 128) -> WeightOnlyResult:
    """Pack every ``nn.Linear`` weight of ``model`` to int8 (per row) or int4 (per row and group).

    Raises
    ------
    InvalidParameterError
        For ``bits`` other than 4 or 8, or a ``group_size`` that is not a positive even int.
    QuantizationError
        If ``model`` has no Linear layer.
    """
    if bits not in (4, 8):
        raise InvalidParameterError(f"The 'bits' parameter of compress_linear_weights must be 4 or 8. Got {bits!r} instead.")
    if not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise InvalidParameterError(
            f"The 'group_size' parameter of compress_linear_weights must be a positive even int. Got {group_size!r} instead."
        )
    packed = {name: _pack(m.weight, bits, group_size) for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not packed:
        raise QuantizationError(
            f"weight-only quantization found no nn.Linear in {type(model).__name__}: use static int8 for conv models"
        )
    modules = dict(model.named_modules())
    float_bytes = sum(modules[name].weight.numel() * 4 for name in packed)
    packed_bytes = sum(p.nbytes() for p in packed.values())
    total = _model_bytes(model)
    return WeightOnlyResult(packed, float_bytes, packed_bytes, total, total - float_bytes + packed_bytes)


def load_weight_only(model: nn.Module, result: WeightOnlyResult, *, inplace: bool = False) -> nn.Module:
    """Dequantize-on-load: a copy of ``model`` whose Linear weights are the unpacked ones."""
    model = model if inplace else copy.deepcopy(model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, p in result.packed.items():
            modules[name].weight.copy_(unpack(p))
    return model
