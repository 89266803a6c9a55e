"""Prune a decoder block by block with calibration inputs that already went through pruned blocks.

Each block's linear layers are pruned from statistics of the inputs they see *in the pruned
model*: block ``i`` is fed the outputs of blocks ``0..i-1`` after those were pruned, so errors do
not compound unseen. Per block: one pass collects the layers' input statistics, the layers are
pruned, a second pass maps the held hidden states through the pruned block, in place. At any time
the engine holds one hidden-state tensor per calibration batch plus one block's statistics.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from prunekit.errors import InvalidParameterError, PrunekitWarning, check_ratio
from prunekit.pruning.oneshot.blocks import (
    capture_block_inputs,
    find_blocks,
    is_conv1d,
    linear_layers,
    linear_weight,
    set_linear_weight,
)
from prunekit.pruning.oneshot.sparsegpt import sparsegpt_prune
from prunekit.pruning.oneshot.stats import collect_inputs
from prunekit.pruning.oneshot.wanda import layer_keep_mask, nm_keep_mask, wanda_keep_mask

METHODS = ("magnitude", "wanda", "sparsegpt")


@dataclass
class OneShotResult:
    """What one-shot pruning did: keep-masks by ``state_dict`` name, per-layer sparsity, cost."""

    masks: dict[str, torch.Tensor]
    layers: dict[str, float]  # weight name -> fraction of zeros after pruning
    blocks: str  # qualified name of the block list
    seconds: float
    peak_held_bytes: int  # hidden states + shared block arguments + one block's statistics
    peak_held_activations: int  # hidden-state tensors held at once (one per calibration batch)
    method: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        return sum(int((~m).sum()) for m in self.masks.values()) / total if total else 0.0


def _check_pattern(sparsity: float | None, nm: tuple[int, int] | None, owner: str) -> None:
    if (sparsity is None) == (nm is None):
        raise InvalidParameterError(f"{owner} takes exactly one of 'sparsity' (unstructured) or 'nm' (e.g. (2, 4)).")
    if sparsity is not None:
        check_ratio(sparsity, "sparsity", owner)
    else:
        n, m = nm
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (n, m)) or n >= m:
            raise InvalidParameterError(
                f"The 'nm' parameter of {owner} must be two ints 0 < n < m. Got {nm!r} instead.")


def prune_oneshot(model: nn.Module, calibration: Iterable[Any], *, method: str = "wanda",
                  sparsity: float | None = None, nm: tuple[int, int] | None = None, blocks: str | None = None,
                  ignore: Iterable[str] = (), blocksize: int = 128, damp: float = 0.01,
                  inplace: bool = False) -> tuple[nn.Module, OneShotResult]:
    """Prune every linear layer inside the model's transformer blocks in one shot.

    Parameters
    ----------
    calibration : batches the model accepts (token-id tensors, or dicts of keyword tensors).
    method : ``"wanda"`` (|W|·||X|| per output row), ``"sparsegpt"`` (OBS with weight updates) or
        ``"magnitude"`` (|W| per layer; needs no data but runs the same way).
    sparsity, nm : unstructured fraction per layer, or an ``(n, m)`` pattern along the input axis.
    blocks : qualified name of the block list (found automatically when omitted).
    ignore : layer names to leave dense, relative to a block (``"mlp.down_proj"``, in every block)
        or qualified (``"model.layers.0.mlp.down_proj"``).

    Embeddings and the LM head are never pruned, as in both papers. Returns ``(model, result)``;
    the model is a pruned deep copy unless ``inplace``. Masks are baked in (pruned weights are 0).
    """
    owner = "prune_oneshot"
    ignore = tuple(ignore)
    if method not in METHODS:
        raise InvalidParameterError(
            f"The 'method' parameter of {owner} must be one of {METHODS}. Got {method!r} instead.")
    _check_pattern(sparsity, nm, owner)
    batches = list(calibration)
    if not batches and method != "magnitude":
        raise InvalidParameterError(f"{owner} with method={method!r} needs calibration batches. Got none.")
    if not inplace:
        model = copy.deepcopy(model)
    started = time.perf_counter()
    blocks_name, block_list = find_blocks(model, blocks)
    _check_ignore(ignore, block_list, blocks_name, owner)
    training = model.training
    model.eval()
    masks: dict[str, torch.Tensor] = {}
    peak_bytes = peak_tensors = 0
    skipped: list[str] = []
    try:
        held = capture_block_inputs(model, block_list, batches) if method != "magnitude" else None
        for index, block in enumerate(block_list):
            layers = {k: v for k, v in linear_layers(block, ignore).items()
                      if not _ignored(f"{blocks_name}.{index}.{k}", ignore)}
            if nm is not None:
                for name in [k for k, layer in layers.items() if linear_weight(layer).shape[1] % nm[1]]:
                    skipped.append(f"{blocks_name}.{index}.{name}")
                    layers.pop(name)
            stats = {}
            if held is not None:
                shapes = {k: linear_weight(layer).shape[1] for k, layer in layers.items()}
                collector = collect_inputs(layers, hessian=method == "sparsegpt", in_features=shapes)
                with torch.no_grad(), collector as stats:
                    held.observe(index, block, collector)
                peak_bytes = max(peak_bytes, held.held_bytes() + sum(s.nbytes() for s in stats.values()))
                peak_tensors = max(peak_tensors, len(held.hidden))
            for name, layer in layers.items():
                key = f"{blocks_name}.{index}.{name}.weight"
                keep = _prune_layer(layer, stats.get(name), method, sparsity, nm, blocksize, damp)
                masks[key] = keep.t().contiguous() if is_conv1d(layer) else keep  # state_dict layout
            del stats
            if held is not None:
                with torch.no_grad():
                    held.advance(index, block)  # in place: one block's activations
    finally:
        model.train(training)
    if skipped:
        warnings.warn(f"{owner} left {len(skipped)} layer(s) dense: input dim not a multiple of m={nm[1]}: "
                      + ", ".join(skipped), PrunekitWarning, stacklevel=2)
    state = model.state_dict()
    layers_sparsity = {k: float((state[k] == 0).sum()) / state[k].numel() for k in masks}
    result = OneShotResult(masks, layers_sparsity, blocks_name, time.perf_counter() - started, peak_bytes,
                           peak_tensors, method, {"sparsity": sparsity, "nm": list(nm) if nm else None,
                                                  "skipped": skipped})
    return model, result


def _check_ignore(ignore: tuple[str, ...], block_list: nn.ModuleList, blocks_name: str, owner: str) -> None:
    """Every ``ignore`` entry must name a linear layer of the blocks (relative or qualified)."""
    names = [(f"{blocks_name}.{i}.{name}", name) for i, block in enumerate(block_list) for name in linear_layers(block)]
    for entry in ignore:
        if not any(_ignored(qualified, (entry,)) or _ignored(relative, (entry,)) for qualified, relative in names):
            raise InvalidParameterError(
                f"The 'ignore' parameter of {owner} names {entry!r}, which is no linear layer of the blocks in "
                f"'{blocks_name}'. Use names like 'mlp.down_proj' or '{blocks_name}.0.mlp.down_proj'.")


def _ignored(qualified: str, ignore: tuple[str, ...]) -> bool:
    return any(qualified == i or qualified.startswith(i + ".") for i in ignore)


def _prune_layer(layer: nn.Module, stats, method: str, sparsity: float | None, nm: tuple[int, int] | None,
                 blocksize: int, damp: float) -> torch.Tensor:
    """Prune one layer in place; returns its (out, in) keep-mask."""
    weight = linear_weight(layer)
    n, m = nm if nm is not None else (None, None)
    if method == "sparsegpt":
        new, keep = sparsegpt_prune(weight, stats.hessian(), sparsity=sparsity, n=n, m=m,
                                    blocksize=blocksize, damp=damp)
        set_linear_weight(layer, new)
        return keep
    if method == "wanda":
        keep = wanda_keep_mask(weight, stats.norms(), sparsity=sparsity, n=n, m=m)
    else:
        scores = weight.abs().to(torch.float64)
        keep = nm_keep_mask(scores, n, m) if nm is not None else layer_keep_mask(scores, sparsity)
    set_linear_weight(layer, weight * keep)
    return keep
