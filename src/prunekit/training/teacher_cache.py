"""The teacher's outputs for every training text, computed once instead of at every step.

Distilling a pruned transformer runs the frozen teacher forward on every batch: on MiniLM that is
about a third of a step. Over many passes the teacher sees the same texts again and again, so its
outputs (the pooled embedding and each layer's hidden states, per token) can be computed once and
read back. The hidden states of a text do not depend on how much padding its batch had (padded
keys are masked), so each text is stored unpadded and re-padded to whatever batch it lands in.

Memory: ``tokens x layers x width`` values, kept in float16 by default (MiniLM on the 33,675
Brown training sentences: 880k tokens x 6 x 384 x 2 bytes = 4.1 GB).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.training.distill import _store  # FeatureMatcher's hook: keeps a layer's (first) output


class TeacherCache:
    """``outputs`` (one row per text) and the hidden states of ``layers`` (one row per token) of a teacher.

    Build with ``TeacherCache.build``; ``targets(indices, width)`` gives a batch's targets padded to
    ``width`` tokens, in the order of ``indices``.
    """

    def __init__(self, outputs: torch.Tensor, features: torch.Tensor, lengths: Sequence[int]) -> None:
        self.outputs, self.features = outputs, features
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.offsets = _offsets(self.lengths)

    @classmethod
    @torch.no_grad()
    def build(cls, teacher: nn.Module, texts: Sequence[Sequence[int]], collate: Callable[[list], tuple[Any, Any]],
              layers: Sequence[nn.Module], *, batch_size: int = 64, dtype: torch.dtype = torch.float16) -> "TeacherCache":
        """Run ``teacher`` (in eval mode) over ``texts`` (token id lists) in length-sorted batches.

        ``collate`` turns ``[(ids, target), ...]`` into ``(inputs, targets)`` (a text loader's
        ``collate_fn``); ``layers`` are the teacher modules whose outputs ``(B, T, H)`` are kept.
        """
        from prunekit.training._batch import call_model

        if not texts:
            raise InvalidParameterError("TeacherCache.build got no texts; give the training texts to distil on")
        if not layers:
            raise InvalidParameterError("TeacherCache.build got no layers; give the teacher modules whose outputs to keep")
        lengths = [len(t) for t in texts]
        offsets = _offsets(torch.as_tensor(lengths, dtype=torch.long)).tolist()
        captured, handles = capture_outputs(layers)
        was_training = teacher.training
        teacher.eval()
        try:
            order = sorted(range(len(texts)), key=lambda i: lengths[i])
            outputs = features = None
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                inputs, _ = collate([(texts[i], 0) for i in index])
                out = call_model(teacher, inputs).float()
                stacked = torch.stack([captured[k] for k in range(len(layers))], dim=2)  # (B, T, layers, H)
                if outputs is None:
                    outputs = torch.empty((len(texts), *out.shape[1:]), dtype=torch.float32)
                    features = torch.empty((offsets[-1], len(layers), stacked.shape[-1]), dtype=dtype)
                outputs[index] = out
                for row, i in enumerate(index):
                    features[offsets[i]:offsets[i + 1]] = stacked[row, :lengths[i]].to(dtype)
        finally:
            for handle in handles:
                handle.remove()
            teacher.train(was_training)
        return cls(outputs, features, lengths)

    def targets(self, indices: Sequence[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(outputs (B, ...), features (B, width, layers, H))`` of the texts ``indices``; padding is zero."""
        features = torch.zeros((len(indices), width, *self.features.shape[1:]), dtype=torch.float32)
        for row, i in enumerate(indices):
            n = int(self.lengths[i])
            if n > width:
                raise InvalidParameterError(f"text {i} has {n} tokens but the batch is {width} wide; "
                                            f"collate the same token ids the cache was built from")
            features[row, :n] = self.features[self.offsets[i]:self.offsets[i + 1]].float()
        return self.outputs[list(indices)], features


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    """Where each text's first token row starts, plus the total: ``[0, n0, n0 + n1, ...]``."""
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)
    return offsets


def masked_feature_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens only: ``(B, T, ...), (B, T, ...), (B, T) -> scalar``.

    Padded positions carry no text; counting them would let the batch's padding weigh the loss.
    """
    keep = mask.bool()
    if not keep.any():
        raise InvalidParameterError("masked_feature_mse got a mask with no real token; check the attention mask")
    return (student[keep] - teacher.detach()[keep]).pow(2).mean()


def capture_outputs(layers: Sequence[nn.Module]) -> tuple[dict[int, torch.Tensor], list]:
    """``(outputs, handles)``: every forward stores ``layers[k]``'s output (first element of a tuple) at ``outputs[k]``.

    Call ``handle.remove()`` on each handle when done (e.g. before the model is copied or cut).
    """
    bucket: dict[int, torch.Tensor] = {}
    return bucket, [layer.register_forward_hook(_store(bucket, k)) for k, layer in enumerate(layers)]
