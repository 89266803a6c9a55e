"""ONNX export and verification against PyTorch."""

from prunekit.export.onnx import export_onnx, onnx_outputs, onnx_size_bytes, verify_onnx

__all__ = ["export_onnx", "onnx_outputs", "onnx_size_bytes", "verify_onnx"]
