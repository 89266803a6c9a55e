"""Check the data against the model before any training, so a bad label costs seconds, not a run.

Checked on every split (train, val, test, calib): labels are class indices the model can output,
inputs and regression targets are finite, and one real sample (and ``example_input_shape``) goes
through the model; a shape error becomes one line naming the data, the model and the fix.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from prunekit.errors import SourceError

_SPLITS = ("train", "val", "test", "calib")


def check_data_fits_model(bundle: Any, model: nn.Module, *, model_label: str, example: Any = None,
                          example_from_recipe: bool = False) -> None:
    """Raise :class:`SourceError` for the first problem found; returns None when all is well."""
    sample = _first_inputs(bundle.train)
    outputs = _forward(model, sample, what=f"data '{bundle.name}' (a training batch of shape "
                       f"{_shape(sample)})", model_label=model_label,
                       fix="check data vs model.kwargs (input size, channels)") if sample is not None else None
    if example_from_recipe and example is not None:
        _forward(model, example, what=f"model.example_input_shape {list(example.shape)}", model_label=model_label,
                 fix="set model.example_input_shape to one sample's shape with a batch of 1, or remove it")
        if isinstance(sample, torch.Tensor) and isinstance(example, torch.Tensor) and sample.shape[1:] != example.shape[1:]:
            raise SourceError(f"model.example_input_shape {list(example.shape)} does not match data '{bundle.name}' "
                              f"samples of shape {list(sample.shape[1:])}; use [1, {', '.join(map(str, sample.shape[1:]))}]")
    classes = _class_count(outputs) if bundle.task == "classification" else None
    for split in _SPLITS:
        loader = getattr(bundle, split, None)
        if loader is None:
            continue
        for x, y in _tensor_batches(loader):
            where = f"data '{bundle.name}' {split} split"
            if x.is_floating_point() and not torch.isfinite(x).all():
                bad = int((~torch.isfinite(x)).sum())
                raise SourceError(f"{where}: inputs hold {bad} NaN/Inf value(s); clean or impute them before compressing")
            if y.is_floating_point() and not torch.isfinite(y).all():
                raise SourceError(f"{where}: targets hold NaN/Inf value(s); drop or fix those samples")
            if classes is not None:
                _check_labels(y, classes, where=where, model_label=model_label)
        if bundle.task == "regression" and outputs is not None:
            _check_regression_shape(loader, outputs, where=f"data '{bundle.name}' {split} split", model_label=model_label)


def _check_labels(y: torch.Tensor, classes: int, *, where: str, model_label: str) -> None:
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise SourceError(f"{where}: labels must be integer class indices for task: classification, got fractional "
                          f"values; set data.task: regression or fix the labels")
    if y.numel() == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise SourceError(f"{where}: label {bad} is outside [0, {classes}) — model {model_label!r} outputs {classes} "
                          f"classes; fix the labels or the model's number of classes (model.kwargs)")


def _check_regression_shape(loader: Any, outputs: torch.Tensor, *, where: str, model_label: str) -> None:
    for _, y in _tensor_batches(loader, limit=1):
        per_out = outputs[0].numel() if outputs.dim() > 0 else 1
        per_target = y[0].numel() if y.dim() > 0 else 1
        if per_out != per_target:
            raise SourceError(f"{where}: each target has {per_target} value(s) but model {model_label!r} outputs "
                              f"{per_out}; match the model's output size to the targets")


def _class_count(outputs: torch.Tensor | None) -> int | None:
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
        return None  # only (batch, classes) logits say how many classes there are
    return int(outputs.shape[1])


def _forward(model: nn.Module, inputs: Any, *, what: str, model_label: str, fix: str) -> torch.Tensor | None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward is reported the same way
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SourceError(f"{what} does not fit model {model_label!r}: {type(exc).__name__}: {text}; {fix}") from None
    finally:
        model.train(was_training)
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    return out if isinstance(out, torch.Tensor) else None


def _first_inputs(loader: Any) -> Any:
    for batch in _tensor_batches(loader, limit=1):
        return batch[0][:2]
    return None


def _shape(x: Any) -> str:
    return str(list(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _tensor_batches(loader: Any, *, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) tensors of ``loader``: the whole TensorDataset at once, else batch by batch."""
    dataset = getattr(loader, "dataset", None)
    tensors = _dataset_tensors(dataset)
    if tensors is not None:
        yield tensors
        return
    if not isinstance(loader, (DataLoader, list, tuple)):
        return
    for k, batch in enumerate(loader):
        if limit is not None and k >= limit:
            return
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(b, torch.Tensor) for b in batch)):
            return  # another batch layout (dicts of tokens...): nothing this check understands
        yield batch[0], batch[1]


def _dataset_tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return dataset.tensors[0], dataset.tensors[1]
    if isinstance(dataset, Subset):
        inner = _dataset_tensors(dataset.dataset)
        if inner is not None:
            index = torch.as_tensor(list(dataset.indices), dtype=torch.long)
            return inner[0][index], inner[1][index]
    return None
