"""Builders for the pieces a fine-tune needs: optimizer, LR schedule, masks, seeding."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from prunekit.errors import InvalidParameterError


def make_optimizer(params: Iterable[torch.nn.Parameter], *, name: str, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, *, name: str, lr: float, total_steps: int,
                   steps_per_epoch: int, step_size: int, gamma: float,
                   warmup_steps: int = 0) -> torch.optim.lr_scheduler.LRScheduler:
    """A schedule stepped once per optimizer step; ``step_size`` counts epochs for "step".

    ``warmup_steps`` ramps the rate linearly from ``lr / warmup_steps`` to ``lr`` first (a fresh
    AdamW on a pretrained transformer takes a higher rate without its first steps wrecking the
    weights); "cosine" then decays over the remaining steps. Not with "onecycle", which warms up itself.
    """
    sched = torch.optim.lr_scheduler
    if warmup_steps > 0:
        return sched.LambdaLR(optimizer, _warmup_then(name, warmup_steps, total_steps, steps_per_epoch * step_size, gamma))
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if name == "step":
        return sched.StepLR(optimizer, step_size=max(step_size * steps_per_epoch, 1), gamma=gamma)
    if name == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 2))
    return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _warmup_then(name: str, warmup: int, total: int, decay_every: int, gamma: float):  # noqa: ANN202
    """The LR factor at each step: linear warm-up, then the named schedule over the steps after it."""
    import math

    if name == "onecycle":
        raise InvalidParameterError("a warm-up with scheduler 'onecycle' would warm up twice; use 'cosine' or 'constant'")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        after = step - warmup
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(after / max(total - warmup, 1), 1.0)))
        if name == "step":
            return gamma ** (after // max(decay_every, 1))
        return 1.0

    return factor


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def loader_generators(loader: object) -> list[torch.Generator]:
    """The torch.Generator objects that drive a DataLoader's shuffling and worker seeds."""
    found: list[torch.Generator] = []
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, sampler, getattr(batch_sampler, "sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def prepare_masks(model: nn.Module, masks: Mapping[str, torch.Tensor] | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pair each mask with the parameter it covers, after checking names, shapes and 0/1 values."""
    if not masks:
        return []
    params = dict(model.named_parameters())
    pairs = []
    for name, mask in masks.items():
        if name not in params:
            raise InvalidParameterError(
                f"masks: the model has no parameter '{name}'; use a name from named_parameters() "
                "(a module pruned by torch.nn.utils.prune keeps its own mask and needs none here)"
            )
        param, mask = params[name], torch.as_tensor(mask)
        if tuple(mask.shape) != tuple(param.shape):
            raise InvalidParameterError(
                f"masks: mask for '{name}' has shape {tuple(mask.shape)}, the parameter {tuple(param.shape)}"
            )
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise InvalidParameterError(f"masks: mask for '{name}' must hold only 0 and 1")
        pairs.append((param, mask.to(device=param.device, dtype=param.dtype)))
    return pairs


@torch.no_grad()
def apply_masks(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Zero the masked entries again (an optimizer step with momentum or decay revives them)."""
    for param, mask in pairs:
        param.mul_(mask)
