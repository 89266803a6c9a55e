"""QuantSpec: every choice a quantization run makes, frozen so reports can quote it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prunekit.errors import InvalidParameterError

Method = Literal["minmax", "percentile", "entropy", "mse"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy", "mse")


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize.

    Defaults are the fastest form measured on x86 AVX2 without VNNI (see docs/quantization.md):
    QDQ, per-channel int8 weights, uint8 activations (ONNX Runtime's U8S8 kernels).

    Parameters
    ----------
    bits
        Bit width of fake-quant / weight-only paths (the ONNX Runtime static path is int8 only).
    symmetric
        Symmetric weights (zero point 0); activations are asymmetric when ``activation_type`` is uint8.
    per_channel
        One scale per output channel for weights.
    method
        Activation range calibration: ``minmax``, ``percentile``, ``entropy`` (KL) or ``mse``.
    percentile
        Upper percentile kept by the ``percentile`` method (e.g. 99.99).
    activation_type, weight_type
        ``uint8`` or ``int8``. int8 x int8 (S8S8) ran 0.77x fp32 on AVX2; keep U8S8 unless the target has VNNI.
    reduce_range
        7-bit weights, which avoids the int16 saturation of vpmaddubsw on x86 without VNNI (measured:
        dynamic int8 output error 0.10 -> 0.008 on a small MLP). ``None``: on when the CPU lacks VNNI.
    format
        ``qdq`` (QuantizeLinear/DequantizeLinear pairs, fused by ORT) or ``qoperator`` (QLinearConv...).
    calib_batches
        Cap on the calibration batches drawn from the loader (None: all).
    """

    bits: int = 8
    symmetric: bool = True
    per_channel: bool = True
    method: Method = "minmax"
    percentile: float = 99.99
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["uint8", "int8"] = "int8"
    reduce_range: bool | None = None
    format: Literal["qdq", "qoperator"] = "qdq"
    calib_batches: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> InvalidParameterError:
            return InvalidParameterError(
                f"The '{name}' parameter of QuantSpec must be {rule}. Got {getattr(self, name)!r} instead."
            )

        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 2 <= self.bits <= 16:
            raise bad("bits", "an int in [2, 16]")
        if self.method not in METHODS:
            raise bad("method", f"one of {', '.join(METHODS)}")
        if not isinstance(self.percentile, (int, float)) or not 50.0 < self.percentile <= 100.0:
            raise bad("percentile", "a float in (50, 100]")
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in ("uint8", "int8"):
                raise bad(name, "'uint8' or 'int8'")
        if self.format not in ("qdq", "qoperator"):
            raise bad("format", "'qdq' or 'qoperator'")
        if self.reduce_range not in (None, True, False):
            raise bad("reduce_range", "None, True or False")
        if self.calib_batches is not None and (not isinstance(self.calib_batches, int) or self.calib_batches < 1):
            raise bad("calib_batches", "None or a positive int")


def cpu_has_vnni() -> bool:
    """True when the x86 CPU has AVX512-VNNI or AVX-VNNI (int8 dot products without saturation)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def resolved_reduce_range(spec: QuantSpec) -> bool:
    """``spec.reduce_range``, or the automatic choice for this machine when it is None."""
    return (not cpu_has_vnni()) if spec.reduce_range is None else spec.reduce_range
