"""Unstructured and N:M masks: choose which weights to zero, hold them through fine-tuning, bake.

prunekit's own work here is *choosing* masks (exact counts, deterministic ties, N:M groups along
the input dimension). Holding them is left to ``torch.nn.utils.prune``: ``apply_masks`` moves
``weight`` to ``weight_orig`` (same Parameter object, so optimizers keep working), adds a
``weight_mask`` buffer and recomputes ``weight = weight_orig * weight_mask`` before every
forward, so pruned entries get zero gradient and stay zero whatever the optimizer does.
``make_permanent`` bakes the product back into a plain ``weight``.

Masks are ``dict[str, Tensor]`` keyed by the weight's ``state_dict`` name *before* masking
(``"fc.weight"``), boolean, True = keep, shaped like the weight.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable, Mapping, Union

import torch
from torch import nn
from torch.nn.utils import prune

from prunekit.errors import InvalidParameterError, PrunekitWarning, check_ratio

DEFAULT_MODULES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

# Per-weight scores: a mapping from state_dict name to a tensor shaped like the weight, or a
# callable name -> tensor (e.g. ``lambda name: weight_scores(name, ctx)``). Higher = keep.
Scores = Union[Mapping[str, torch.Tensor], Callable[[str], torch.Tensor], None]


# ----------------------------------------------------------------------------- selection helpers


def _effective_weight(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The weight the forward sees: ``orig * mask`` when masked (``module.weight`` may be stale
    after an optimizer step until the next forward), the plain parameter otherwise."""
    mask = getattr(module, f"{name}_mask", None)
    if mask is not None and hasattr(module, f"{name}_orig"):
        return getattr(module, f"{name}_orig").detach() * mask
    return getattr(module, name).detach()


def _targets(
    model: nn.Module, modules: tuple[type[nn.Module], ...], ignore: Iterable[str | nn.Module], owner: str
) -> dict[str, nn.Module]:
    """Modules to mask, by qualified name, minus ``ignore`` (names cover their children)."""
    ignore = tuple(ignore)
    names = [i for i in ignore if isinstance(i, str)]
    ids = {id(i) for i in ignore if isinstance(i, nn.Module)}
    known = dict(model.named_modules())
    for name in names:
        if name not in known:
            raise InvalidParameterError(
                f"The 'ignore' parameter of {owner} names module {name!r}, which the model does not have. "
                "Use names from model.named_modules()."
            )
    picked: dict[str, nn.Module] = {}
    for qual, mod in known.items():
        if not isinstance(mod, modules) or id(mod) in ids:
            continue
        if any(qual == n or qual.startswith(n + ".") or n == "" for n in names):
            continue
        if getattr(mod, "weight", None) is None:
            continue
        picked[qual] = mod
    return picked


def _key(qual: str) -> str:
    return f"{qual}.weight" if qual else "weight"


def _scores_for(key: str, module: nn.Module, scores: Scores, owner: str) -> torch.Tensor:
    """Per-weight scores (float, weight-shaped); already-masked entries get -inf so masks only grow."""
    weight = _effective_weight(module)
    if scores is None:
        s = weight.abs()
    else:
        s = scores(key) if callable(scores) else scores.get(key)
        if s is None:
            raise InvalidParameterError(f"{owner} got scores without an entry for {key!r}. Give one per masked weight.")
        s = torch.as_tensor(s).detach().to(device=weight.device, dtype=torch.float32)
        if s.shape != weight.shape:
            raise InvalidParameterError(
                f"Scores for {key!r} in {owner} must have the weight's shape {tuple(weight.shape)}. "
                f"Got {tuple(s.shape)} instead."
            )
        if torch.isnan(s).any():
            raise InvalidParameterError(f"Scores for {key!r} in {owner} contain NaN. Give finite scores.")
    s = s.float().clone()
    mask = getattr(module, "weight_mask", None)
    if mask is not None:
        s[mask == 0] = -math.inf
    return s


def _lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask over a flat score vector dropping exactly the ``k`` lowest.

    A stable sort breaks ties by position (layer order, then row-major index), so equal scores
    always give the same mask.
    """
    order = torch.sort(scores, stable=True).indices  # (N,)
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[order[:k]] = False
    return keep


def _already_masked(module: nn.Module) -> int:
    mask = getattr(module, "weight_mask", None)
    return 0 if mask is None else int((mask == 0).sum())


# ----------------------------------------------------------------------------- unstructured


def unstructured_masks(
    model: nn.Module,
    *,
    sparsity: float,
    scores: Scores = None,
    scope: str = "global",
    modules: tuple[type[nn.Module], ...] = DEFAULT_MODULES,
    ignore: Iterable[str | nn.Module] = (),
) -> dict[str, torch.Tensor]:
    """Masks that zero exactly ``round(sparsity * n)`` of the lowest-scored weights.

    Parameters
    ----------
    sparsity : fraction in [0, 1) of weights to zero, over all selected weights
        (``scope="global"``) or in each layer (``scope="local"``).
    scores : per-weight importance (default ``|w|``); mapping or callable, see ``Scores``.
    modules, ignore : module types to mask, and module names (or objects) to leave dense.

    On a model that already holds masks, masked entries rank lowest, so new masks contain the
    old ones (iterative pruning never revives a weight).

    Raises
    ------
    InvalidParameterError
        Bad sparsity/scope/scores, or a sparsity below what is already masked.
    """
    owner = "unstructured_masks"
    sparsity = check_ratio(sparsity, "sparsity", owner)
    if scope not in ("global", "local"):
        raise InvalidParameterError(
            f"The 'scope' parameter of {owner} must be 'global' or 'local'. Got {scope!r} instead."
        )
    targets = _targets(model, modules, ignore, owner)
    per_layer = {_key(q): (m, _scores_for(_key(q), m, scores, owner)) for q, m in targets.items()}
    masks: dict[str, torch.Tensor] = {}
    if scope == "local":
        for key, (mod, s) in per_layer.items():
            k = round(sparsity * s.numel())
            _check_growth(k, _already_masked(mod), key, sparsity, owner)
            masks[key] = _lowest(s.flatten(), k).view_as(s)
        return masks
    if not per_layer:
        return masks
    flat = torch.cat([s.flatten().cpu() for _, s in per_layer.values()])  # (N,)
    k = round(sparsity * flat.numel())
    _check_growth(k, sum(_already_masked(m) for m, _ in per_layer.values()), "the selected weights", sparsity, owner)
    keep = _lowest(flat, k)
    start = 0
    for key, (_, s) in per_layer.items():
        masks[key] = keep[start : start + s.numel()].view_as(s).to(s.device)
        start += s.numel()
    return masks


def _check_growth(k: int, masked: int, where: str, sparsity: float, owner: str) -> None:
    if k < masked:
        raise InvalidParameterError(
            f"The 'sparsity' parameter of {owner} ({sparsity}) would prune {k} weights of {where}, "
            f"but {masked} are already masked; masks only grow. Ask for a higher sparsity."
        )


# ----------------------------------------------------------------------------- N:M


def _input_axis(module: nn.Module) -> int:
    """Axis of the weight that runs over input features (0 for transposed convs)."""
    return 0 if getattr(module, "transposed", False) else 1


def nm_incompatible(
    model: nn.Module,
    *,
    m: int = 4,
    modules: tuple[type[nn.Module], ...] = DEFAULT_MODULES,
    ignore: Iterable[str | nn.Module] = (),
) -> dict[str, str]:
    """Weights that cannot take an N:M pattern, with the reason (input dim not a multiple of m)."""
    out: dict[str, str] = {}
    for qual, mod in _targets(model, modules, ignore, "nm_incompatible").items():
        weight = _effective_weight(mod)
        axis = _input_axis(mod)
        if weight.dim() < 2:
            out[_key(qual)] = f"weight is {weight.dim()}-D; N:M needs an input axis"
        elif weight.shape[axis] % m:
            out[_key(qual)] = f"input dim {weight.shape[axis]} is not a multiple of m={m}"
    return out


def nm_masks(
    model: nn.Module,
    *,
    n: int = 2,
    m: int = 4,
    scores: Scores = None,
    modules: tuple[type[nn.Module], ...] = DEFAULT_MODULES,
    ignore: Iterable[str | nn.Module] = (),
    on_indivisible: str = "skip",
) -> dict[str, torch.Tensor]:
    """N:M masks: in every run of ``m`` consecutive weights along the input axis keep the ``n`` best.

    For Linear the input axis is the last; for Conv it is ``in_channels`` at each (out, kh, kw),
    which is the layout sparse tensor cores expect after permuting the input axis last.
    Ties keep the earlier position.

    A layer whose input dim is not a multiple of ``m`` cannot carry the pattern without padding
    the layer itself, which changes its shape; such layers are left dense and named in a
    ``PrunekitWarning`` (``on_indivisible="skip"``) or rejected (``"error"``). See
    ``nm_incompatible`` to list them up front.
    """
    owner = "nm_masks"
    _check_nm_params(n, m, owner)
    if on_indivisible not in ("skip", "error"):
        raise InvalidParameterError(
            f"The 'on_indivisible' parameter of {owner} must be 'skip' or 'error'. Got {on_indivisible!r} instead."
        )
    bad = nm_incompatible(model, m=m, modules=modules, ignore=ignore)
    if bad and on_indivisible == "error":
        key, why = next(iter(bad.items()))
        raise InvalidParameterError(
            f"{owner} cannot mask {key!r} as {n}:{m}: {why}. Ignore that layer or pick another m."
        )
    if bad:
        listed = "; ".join(f"{k} ({v})" for k, v in bad.items())
        warnings.warn(f"{owner} left {len(bad)} layer(s) dense: {listed}", PrunekitWarning, stacklevel=2)
    masks: dict[str, torch.Tensor] = {}
    for qual, mod in _targets(model, modules, ignore, owner).items():
        key = _key(qual)
        if key in bad:
            continue
        s = _scores_for(key, mod, scores, owner)
        axis = _input_axis(mod)
        moved = s.movedim(axis, -1)  # (..., in): input axis last
        groups = moved.reshape(-1, m)  # (G, m)
        order = torch.argsort(groups, dim=1, descending=True, stable=True)  # (G, m)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(1, order[:, :n], True)
        masks[key] = keep.view(moved.shape).movedim(-1, axis).contiguous()
    return masks


def _check_nm_params(n: int, m: int, owner: str) -> None:
    for name, value in (("n", n), ("m", m)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidParameterError(
                f"The '{name}' parameter of {owner} must be a positive int. Got {value!r} instead."
            )
    if n >= m:
        raise InvalidParameterError(f"The 'n' parameter of {owner} must be below m={m}. Got n={n} instead.")


def check_nm(tensor: torch.Tensor, n: int, m: int, *, input_axis: int | None = None) -> bool:
    """True when every run of ``m`` consecutive entries along the input axis has at most ``n`` nonzeros.

    ``input_axis`` defaults to 1 (Linear and Conv weights); pass 0 for transposed convs.
    A tensor whose input dim is not a multiple of ``m`` is not N:M and gives False.
    """
    _check_nm_params(n, m, "check_nm")
    if tensor.dim() < 2 and input_axis is None:
        raise InvalidParameterError(f"check_nm needs a weight with an input axis; got a {tensor.dim()}-D tensor.")
    axis = 1 if input_axis is None else input_axis
    if tensor.shape[axis] % m:
        return False
    groups = tensor.detach().movedim(axis, -1).reshape(-1, m)  # (G, m)
    return bool(((groups != 0).sum(dim=1) <= n).all())


# ----------------------------------------------------------------------------- hold, bake, report


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Hold ``masks`` on ``model`` in place with ``prune.custom_from_mask``; returns ``model``.

    A weight that already holds a mask keeps the intersection (torch composes the two).
    """
    owner = "apply_masks"
    for key, mask in masks.items():
        qual, _, pname = key.rpartition(".")
        try:
            module = model.get_submodule(qual)
        except AttributeError:
            raise InvalidParameterError(f"{owner} got a mask for {key!r}, which the model does not have.") from None
        weight = getattr(module, pname, None)
        if not isinstance(weight, torch.Tensor):
            raise InvalidParameterError(f"{owner} got a mask for {key!r}, which is not a tensor of the model.")
        if mask.shape != weight.shape:
            raise InvalidParameterError(
                f"The mask for {key!r} in {owner} must have shape {tuple(weight.shape)}. "
                f"Got {tuple(mask.shape)} instead."
            )
        prune.custom_from_mask(module, pname, mask.to(device=weight.device, dtype=torch.bool))
    return model


def _masked_names(module: nn.Module) -> list[str]:
    params = dict(module.named_parameters(recurse=False))
    buffers = dict(module.named_buffers(recurse=False))
    return [p[: -len("_orig")] for p in params if p.endswith("_orig") and p[: -len("_orig")] + "_mask" in buffers]


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake every held mask into its weight (``prune.remove``) in place; returns ``model``."""
    for module in model.modules():
        for name in _masked_names(module):
            prune.remove(module, name)
    return model


def sparsity_report(model: nn.Module, *, modules: tuple[type[nn.Module], ...] = DEFAULT_MODULES) -> dict:
    """Exact zero fractions of the weights the forward sees, per layer and over all of them.

    Returns ``{"layers": {name: {"zeros", "total", "sparsity"}}, "global": {...}}``.
    """
    layers: dict[str, dict] = {}
    zeros = total = 0
    for qual, mod in _targets(model, modules, (), "sparsity_report").items():
        weight = _effective_weight(mod)
        z, t = int((weight == 0).sum()), weight.numel()
        layers[_key(qual)] = {"zeros": z, "total": t, "sparsity": z / t if t else 0.0}
        zeros, total = zeros + z, total + t
    return {"layers": layers, "global": {"zeros": zeros, "total": total, "sparsity": zeros / total if total else 0.0}}
