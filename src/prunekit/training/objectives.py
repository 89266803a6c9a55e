"""Losses for models without class labels: sentence embeddings and language models.

Recovery distils the pruned model towards the dense one (cosine on embeddings, KL on token
logits). Calibration for gradient criteria needs more care: a distance to the dense model has
exactly zero gradient AT the dense model, so every first-order score would be 0. Calibration
therefore uses objectives whose gradient at the dense model is not zero and still says what a
unit is for:

- ``embedding``: in-batch contrastive loss against the dense model's own embeddings (each
  sentence must pick out its own dense embedding among the batch's, temperature 0.05): a unit
  matters when removing it blurs which sentence is which. Needs batches of >= 2 texts.
- ``causal_lm``: the next-token loss on the calibration text.
- ``classification``: cross-entropy on the labels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from prunekit.errors import InvalidParameterError

IGNORE_INDEX = -100


def cosine_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(student, teacher)`` over the batch: ``(B, H), (B, H) -> scalar``."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)).mean()


def contrastive_to_reference(embeddings: torch.Tensor, reference: torch.Tensor, *, temperature: float = 0.05) -> torch.Tensor:
    """Cross-entropy of each row picking its own reference row among the batch's (InfoNCE)."""
    if embeddings.shape[0] < 2:
        raise InvalidParameterError("the embedding calibration loss needs batches of at least 2 texts "
                                    "(it contrasts the texts of a batch); raise data.batch_size")
    e = F.normalize(embeddings.float(), dim=-1)
    r = F.normalize(reference.detach().float(), dim=-1)
    logits = e @ r.T / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(e), device=e.device))


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: position t predicts token t+1; ``-100`` labels are skipped."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    target = labels[:, 1:].reshape(-1)
    if not bool((target != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(shifted, target, ignore_index=IGNORE_INDEX)


def lm_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *,
                         temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher || student)`` per real token + ``(1 - alpha) *`` the next-token loss."""
    keep = (labels != IGNORE_INDEX).reshape(-1)
    t = float(temperature)
    s = F.log_softmax(student.reshape(-1, student.shape[-1]).float()[keep] / t, dim=-1)
    p = F.log_softmax(teacher.detach().reshape(-1, teacher.shape[-1]).float()[keep] / t, dim=-1)
    kl = F.kl_div(s, p, reduction="batchmean", log_target=True) if len(s) else student.sum() * 0.0
    return alpha * t * t * kl + (1.0 - alpha) * lm_loss(student, labels)


def calibration_loss(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The ``loss_fn(outputs, targets)`` that :func:`prunekit.importance.collect` should use for ``task``.

    ``None`` keeps collect's default (cross-entropy) for classification and regression-free tasks.
    """
    if task == "embedding":
        return lambda outputs, _targets: contrastive_to_reference(outputs, outputs.detach())
    if task == "causal_lm":
        return lm_loss
    return None
