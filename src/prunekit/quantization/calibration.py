"""The calibration data flow: a torch DataLoader becomes ONNX Runtime feeds, once, and is replayed.

Feeds are materialised as numpy arrays up front so the several calibration runs of one
quantization (static ranges, MSE collection, fallback re-quantization) all see the same batches.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from prunekit.errors import QuantizationError


def _inputs_of(batch: Any) -> Any:
    """A loader batch is ``(inputs, targets)``, a dict of kwargs, or the inputs alone."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and not isinstance(batch[0], (int, float)):
        return batch[0]
    return batch


def feeds_from_loader(loader: Iterable[Any] | None, input_names: Sequence[str], *,
                      max_batches: int | None = None) -> list[dict[str, np.ndarray]]:
    """Numpy feeds ``{input_name: array}`` for up to ``max_batches`` batches of ``loader``.

    Raises
    ------
    QuantizationError
        If ``loader`` is None or yields nothing: static ranges cannot be calibrated without data.
    """
    if loader is None:
        raise QuantizationError(
            "static int8 needs calibration data: pass calib_loader (e.g. DataBundle.calib) or use dynamic quantization"
        )
    feeds: list[dict[str, np.ndarray]] = []
    for batch in loader:
        if max_batches is not None and len(feeds) >= max_batches:
            break
        inputs = _inputs_of(batch)
        if isinstance(inputs, Mapping):
            feed = {k: _to_numpy(inputs[k]) for k in input_names if k in inputs}
        else:
            tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
            feed = {name: _to_numpy(t) for name, t in zip(input_names, tensors)}
        feeds.append(feed)
    if not feeds:
        raise QuantizationError(
            "static int8 needs calibration data: calib_loader yielded no batches; give at least one batch"
        )
    return feeds


def _to_numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class FeedReader(CalibrationDataReader):
    """ONNX Runtime's reader interface over materialised feeds; ``rewind`` replays them."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self.feeds = list(feeds)
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.feeds):
            return None
        self._pos += 1
        return self.feeds[self._pos - 1]

    def rewind(self) -> None:
        self._pos = 0


def collect_activations(model_path: str | os.PathLike[str], feeds: Sequence[dict[str, np.ndarray]],
                        ) -> dict[str, list[np.ndarray]]:
    """Every float intermediate tensor of the ONNX model, per calibration batch.

    Uses onnxruntime.quantization.qdq_loss_debug, which adds each node's tensors as graph outputs.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations as _collect,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory() as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        modify_model_output_intermediate_tensors(str(model_path), str(augmented))
        return _collect(str(augmented), FeedReader(feeds))
