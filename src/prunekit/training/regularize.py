"""Sparsity penalties added to the training loss, so pruning later removes what training let go.

``bn_scale_penalty`` is network slimming (Liu et al., 2017): L1 on BatchNorm gammas pushes whole
channels to zero scale. ``group_lasso_penalty`` does the same for any coupled ``ChannelGroup``:
the L2 norm of each unit over every tensor it spans, summed (an L2,1 norm), so a unit shrinks as
one piece across the convolution, its BatchNorm and its consumers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import InvalidParameterError

_WEIGHTED = (_ConvNd, nn.Linear)


def _check_weight(weight: float, owner: str) -> float:
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
        raise InvalidParameterError(f"The 'weight' parameter of {owner} must be a float >= 0. Got {weight!r} instead.")
    return float(weight)


def _weights(model: nn.Module, modules: Iterable[str] | None, owner: str) -> list[torch.Tensor]:
    """The weight tensors of the named modules, or of every conv/linear layer when None."""
    if modules is None:
        chosen = [m for m in model.modules() if isinstance(m, _WEIGHTED)]
    else:
        chosen = []
        for name in modules:
            try:
                chosen.append(model.get_submodule(name))
            except AttributeError:
                raise InvalidParameterError(
                    f"{owner}: the model has no module named '{name}'; use a name from named_modules()"
                ) from None
    # getattr, not named_parameters: a module pruned by torch.nn.utils.prune exposes the masked
    # `weight` (weight_orig * weight_mask) as a plain attribute, which is what the forward uses.
    return [w for m in chosen if isinstance(w := getattr(m, "weight", None), torch.Tensor)]


def _zero(model: nn.Module) -> torch.Tensor:
    for p in model.parameters():
        return p.new_zeros(())
    return torch.zeros(())


def l1_penalty(model: nn.Module, *, weight: float, modules: Iterable[str] | None = None) -> torch.Tensor:
    """``weight * sum |w|`` over the weights of ``modules`` (default: every conv and linear layer).

    Biases and normalisation parameters are left out: shrinking them does not make a layer sparse.
    """
    weight = _check_weight(weight, "l1_penalty")
    total = _zero(model)
    for w in _weights(model, modules, "l1_penalty"):
        total = total + w.abs().sum()
    return weight * total


def l2_penalty(model: nn.Module, *, weight: float, modules: Iterable[str] | None = None) -> torch.Tensor:
    """``weight * sum w^2`` over the same weights as ``l1_penalty`` (no 1/2 factor)."""
    weight = _check_weight(weight, "l2_penalty")
    total = _zero(model)
    for w in _weights(model, modules, "l2_penalty"):
        total = total + w.pow(2).sum()
    return weight * total


def bn_scale_penalty(model: nn.Module, weight: float) -> torch.Tensor:
    """``weight * sum |gamma|`` over every affine BatchNorm (network slimming)."""
    weight = _check_weight(weight, "bn_scale_penalty")
    total = _zero(model)
    for m in model.modules():
        if isinstance(m, _BatchNorm) and isinstance(m.weight, torch.Tensor):
            total = total + m.weight.abs().sum()
    return weight * total


def group_lasso_penalty(model: nn.Module, groups: Sequence[ChannelGroup], weight: float) -> torch.Tensor:
    """``weight * sum_groups sum_units sqrt(sum over all slots of w[positions of unit]^2)``.

    Each slot names a tensor in ``model.state_dict()``; positions mapped to -1 belong to another
    group and are skipped. Buffers (BatchNorm running statistics) are not trainable and are left
    out; every trainable tensor a unit spans (conv rows, BN gamma/beta, consumer columns) counts.

    Raises
    ------
    InvalidParameterError
        When a slot names a tensor the model lacks, or its axis length no longer matches
        (the groups were built before the model was pruned: rebuild them).
    """
    weight = _check_weight(weight, "group_lasso_penalty")
    params = dict(model.named_parameters())
    total = _zero(model)
    for group in groups:
        sumsq = None  # (group.size,) squared norm of each unit
        for slot in group.slots:
            tensor = _resolve(model, params, slot.tensor)
            if tensor is None or not tensor.requires_grad:
                continue
            if tensor.shape[slot.axis] != len(slot.unit_of_position):
                raise InvalidParameterError(
                    f"group '{group.id}' maps {len(slot.unit_of_position)} positions of '{slot.tensor}' axis "
                    f"{slot.axis}, but the tensor has {tensor.shape[slot.axis]}: rebuild the groups after pruning"
                )
            units = torch.as_tensor(slot.unit_of_position, dtype=torch.long, device=tensor.device)
            mine = units >= 0
            per_position = tensor.movedim(slot.axis, 0).reshape(tensor.shape[slot.axis], -1).pow(2).sum(1)  # (n_pos,)
            folded = per_position.new_zeros(group.size).index_add(0, units[mine], per_position[mine])
            sumsq = folded if sumsq is None else sumsq + folded
        if sumsq is None:
            continue
        alive = sumsq > 0
        # sqrt has an infinite slope at 0: route zero units through a constant so gradients stay finite.
        norms = torch.where(alive, sumsq, torch.ones_like(sumsq)).sqrt() * alive
        total = total + norms.sum()
    return weight * total


def _resolve(model: nn.Module, params: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    """The live tensor behind a state_dict name: a parameter, a buffer or a masked attribute."""
    if name in params:
        return params[name]
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        module = None
    value = getattr(module, attr, None) if module is not None else None
    if isinstance(value, torch.Tensor):
        return value  # a buffer (skipped by the caller) or torch.nn.utils.prune's masked weight
    raise InvalidParameterError(
        f"group_lasso_penalty: the model has no tensor '{name}'; the groups were built for another model"
    )
