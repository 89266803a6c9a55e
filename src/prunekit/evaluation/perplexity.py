"""Perplexity of a causal language model on a token stream, in fixed non-overlapping windows.

``exp`` of the mean next-token negative log-likelihood over every predicted token. The stream
is cut into windows of ``seq_len`` tokens (the last, shorter one dropped so every window has the
same context budget); within a window, token ``t`` is predicted from tokens ``< t``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import InvalidParameterError


def _logits(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise InvalidParameterError(f"perplexity needs a model returning logits (a tensor or an output with "
                                    f".logits). Got {type(output).__name__} instead.")
    return logits


def windows(tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """A 1-D token stream as (num_windows, seq_len), the incomplete tail dropped."""
    tokens = torch.as_tensor(tokens).flatten()
    count = tokens.numel() // seq_len
    if count == 0:
        raise InvalidParameterError(f"perplexity needs at least seq_len={seq_len} tokens. Got {tokens.numel()}.")
    return tokens[: count * seq_len].view(count, seq_len)


@torch.no_grad()
def perplexity(model: nn.Module, tokens: torch.Tensor, *, seq_len: int = 128, batch_size: int = 8) -> float:
    """Perplexity of ``model`` (token ids -> logits) on the 1-D ``tokens`` stream; model left as found."""
    if seq_len < 2:
        raise InvalidParameterError(f"The 'seq_len' parameter of perplexity must be at least 2. Got {seq_len}.")
    chunks = windows(tokens, seq_len)
    training = model.training
    model.eval()
    nll, count = 0.0, 0
    try:
        for start in range(0, chunks.shape[0], batch_size):
            ids = chunks[start:start + batch_size]
            logits = _logits(model(ids)).float()  # (B, T, V)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                   reduction="sum")
            nll += float(loss)
            count += ids[:, 1:].numel()
    finally:
        model.train(training)
    return math.exp(nll / count)
