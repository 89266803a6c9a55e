"""Run a model in training mode without changing it: the mode the fine-tune stage will use.

A model's ``forward`` may take other paths when ``self.training`` is set (auxiliary heads,
stochastic depth, dropout); tracing and verification must see those paths too. Norm layers with
running statistics stay in eval mode so a batch of one runs and the statistics are read, not
updated; every buffer is restored afterwards anyway (custom EMA buffers), the global RNG too
(dropout draws), and each module's training flag.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def training_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in train mode (norms with running statistics in eval), restored on exit."""
    flags = {m: m.training for m in model.modules()}
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            m.eval()
    try:
        cuda = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
        with torch.random.fork_rng(devices=cuda):
            yield model
    finally:
        with torch.no_grad():
            for buffer, value in saved:  # only those that changed: a write would void a pending backward
                if buffer.shape == value.shape and not torch.equal(buffer, value):
                    buffer.copy_(value)
        for m, flag in flags.items():
            m.train(flag)
