"""On-disk size: what a deployed model actually costs to ship."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from prunekit.errors import SourceError


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights serialized as safetensors, measured on a temporary file.

    Measured rather than computed from element counts, so the header and any dtype change
    (e.g. fp16, int8 buffers) show up exactly as they would on disk. Tied weights (the same
    storage under two names) are stored once, as ``safetensors.torch.save_model`` would.
    """
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach().cpu().contiguous()
    handle, tmp = tempfile.mkstemp(suffix=".safetensors", prefix="prunekit-size-")
    os.close(handle)
    try:
        save_file(tensors, tmp)
        return os.path.getsize(tmp)
    finally:
        os.unlink(tmp)


def file_bytes(path: str | Path) -> int:
    """Size of a file in bytes (an ONNX model, a checkpoint...)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"file '{path}' does not exist or is not a file: give the path of a written model")
    return path.stat().st_size
