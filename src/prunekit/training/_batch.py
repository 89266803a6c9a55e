"""Batch plumbing shared by the training loops: move a batch to a device, call the model, score it.

Loaders yield ``(inputs, targets)``; inputs may be a tensor, a tuple of tensors (positional
arguments) or a dict (keyword arguments), the same shapes ``prunekit.dependency.build_graph`` takes.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import InvalidParameterError

Task = Literal["classification", "regression", "embedding", "causal_lm"]
TASKS = ("classification", "regression", "embedding", "causal_lm")


def check_task(task: str, owner: str) -> str:
    """Validate the task name against the losses prunekit knows."""
    if task not in TASKS:
        raise InvalidParameterError(
            f"The 'task' parameter of {owner} must be one of {TASKS}. Got {task!r} instead."
        )
    return task


def to_device(value: Any, device: torch.device) -> Any:
    """Move a tensor, or the tensors inside a tuple/list/dict, to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` from one loader item; a bare tensor is inputs without targets."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, torch.Tensor):
        return batch, None
    raise InvalidParameterError(
        f"a loader item must be an (inputs, targets) pair. Got {type(batch).__name__} of length "
        f"{len(batch) if hasattr(batch, '__len__') else '?'} instead."
    )


def call_model(model: nn.Module, inputs: Any) -> torch.Tensor:
    """Run the model on a tensor, a tuple (positional) or a dict (keyword) of inputs."""
    if isinstance(inputs, dict):
        out = model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        out = model(*inputs)
    else:
        out = model(inputs)
    if hasattr(out, "logits"):  # HF-style ModelOutput
        out = out.logits
    return out


def batch_size(inputs: Any) -> int:
    """Number of samples in a batch of inputs (first dimension of its first tensor)."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0])
    if isinstance(inputs, (tuple, list)) and inputs:
        return batch_size(inputs[0])
    if isinstance(inputs, dict) and inputs:
        return batch_size(next(iter(inputs.values())))
    raise InvalidParameterError(f"cannot tell the batch size of inputs of type {type(inputs).__name__}")


def task_loss(outputs: torch.Tensor, targets: torch.Tensor, task: str) -> torch.Tensor:
    """Mean cross-entropy (classification), next-token loss (causal_lm) or squared error (regression)."""
    if task == "classification":
        return F.cross_entropy(outputs, targets)  # outputs (B, C), targets (B,)
    if task == "causal_lm":
        from prunekit.training.objectives import lm_loss

        return lm_loss(outputs, targets)  # outputs (B, T, V), targets (B, T) with -100 on padding
    if task == "embedding":
        raise InvalidParameterError("task 'embedding' has no labels to train on: give a teacher (the dense model) "
                                    "to distil from, e.g. recovery.distillation.enabled: true")
    return F.mse_loss(outputs, match_targets(outputs, targets))


def match_targets(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Regression targets in the outputs' dtype and shape ((B,) becomes (B, 1) for one output)."""
    targets = targets.to(outputs.dtype)
    if targets.shape != outputs.shape and targets.numel() == outputs.numel():
        targets = targets.reshape(outputs.shape)
    return targets


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
