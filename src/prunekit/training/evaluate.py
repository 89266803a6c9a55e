"""Validation loss and accuracy over a loader, sharded and all-reduced when several ranks run."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from prunekit.errors import InvalidParameterError
from prunekit.evaluation.text_metrics import lm_token_sums
from prunekit.training._batch import (
    call_model, check_task, match_targets, model_device, split_batch, to_device,
)
from prunekit.training.distributed import ShardedBatchSampler, all_reduce_metrics, shard_loader, world_size


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, task: str = "classification",
             teacher: nn.Module | None = None) -> dict[str, float | None]:
    """Mean task loss and, for classification, accuracy of ``model`` on ``loader``.

    The loss is cross-entropy (classification) or mean squared error over all output elements
    (regression), mean cosine distance to ``teacher``'s outputs (embedding, which has no labels),
    or the per-token next-token loss (causal_lm), computed from sums so uneven final batches and uneven rank shards weigh each
    sample once. Under torchrun (process group up) every rank scores its shard and the sums
    are all-reduced, so every rank returns the global numbers. The model's mode is restored.

    Returns
    -------
    dict
        ``loss``, ``accuracy`` (None for regression) and ``samples``.
    """
    check_task(task, "evaluate")
    if world_size() > 1 and isinstance(loader, DataLoader) and not isinstance(loader.batch_sampler, ShardedBatchSampler):
        loader = shard_loader(loader)
    device = model_device(model)
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "elements": 0.0, "correct": 0.0, "samples": 0.0}
    try:
        for batch in loader:
            inputs, targets = split_batch(batch)
            outputs = call_model(model, to_device(inputs, device))
            targets = to_device(targets, device)
            if outputs.shape[0] == 0:
                continue
            if task == "embedding":
                if teacher is None:
                    raise InvalidParameterError("evaluate: task 'embedding' is scored against a teacher's "
                                                "embeddings; pass teacher=")
                reference = call_model(teacher, to_device(inputs, device))
                sums["loss"] += float((1 - F.cosine_similarity(outputs.float(), reference.float(), dim=-1)).sum())
                sums["elements"] += outputs.shape[0]
            elif task == "causal_lm":
                total, tokens = lm_token_sums(outputs, targets)
                sums["loss"] += total
                sums["elements"] += tokens
            elif task == "classification":
                sums["loss"] += float(F.cross_entropy(outputs.float(), targets, reduction="sum"))
                sums["elements"] += outputs.shape[0]
                sums["correct"] += float((outputs.argmax(dim=-1) == targets).sum())
            else:
                targets = match_targets(outputs, targets)
                sums["loss"] += float(F.mse_loss(outputs.float(), targets.float(), reduction="sum"))
                sums["elements"] += outputs.numel()
            sums["samples"] += outputs.shape[0]
    finally:
        model.train(was_training)
    sums = all_reduce_metrics(sums, op="sum")
    if sums["samples"] == 0:
        return {"loss": float("nan"), "accuracy": None, "samples": 0}
    accuracy = sums["correct"] / sums["samples"] if task == "classification" else None
    return {"loss": sums["loss"] / sums["elements"], "accuracy": accuracy, "samples": int(sums["samples"])}
