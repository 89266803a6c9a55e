"""Find a decoder's stack of blocks, run it one block at a time, and read its layers' weights.

One-shot LLM pruning never holds more than one block's activations: the calibration batches are
run through the embeddings once, stopped at the first block, and from then on each block maps the
held hidden states to the next block's, in place. What a block needs besides the hidden states
(attention masks, rotary position embeddings, per-layer mask kinds) is recorded for every block in
that first pass; those are shared tensors, not per-block activations.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from prunekit.errors import InvalidParameterError, TracingError, UnsupportedLayerError


# ----------------------------------------------------------------------------- linear-like layers


def is_conv1d(module: nn.Module) -> bool:
    """Hugging Face GPT-2's ``Conv1D``: a linear layer storing its weight as (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def is_linear_like(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out_features, in_features), detached (a view for ``Conv1D``)."""
    w = module.weight.detach()
    return w.t() if is_conv1d(module) else w


def set_linear_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Write an (out, in) weight back into the layer in place, in the layer's dtype and layout."""
    with torch.no_grad():
        target = module.weight
        target.copy_((weight.t() if is_conv1d(module) else weight).to(target.dtype))


def linear_layers(block: nn.Module, ignore: Iterable[str] = ()) -> dict[str, nn.Module]:
    """``nn.Linear`` and ``Conv1D`` layers of ``block`` by name relative to it, minus ``ignore``."""
    ignore = tuple(ignore)
    return {name: mod for name, mod in block.named_modules()
            if name and is_linear_like(mod) and not any(name == i or name.startswith(i + ".") for i in ignore)}


# ----------------------------------------------------------------------------- finding the blocks


def find_blocks(model: nn.Module, name: str | None = None) -> tuple[str, nn.ModuleList]:
    """The model's stack of transformer blocks: ``(qualified name, ModuleList)``.

    Without ``name``: the ``ModuleList`` of same-class children, each holding linear layers, with
    the most parameters (``model.layers`` in LLaMA, ``transformer.h`` in GPT-2).
    """
    modules = dict(model.named_modules())
    if name is not None:
        found = modules.get(name)
        if not isinstance(found, nn.ModuleList) or len(found) == 0:
            raise InvalidParameterError(
                f"The 'blocks' parameter names {name!r}, which is not a non-empty nn.ModuleList of "
                f"{type(model).__name__}. Give the name of its list of transformer blocks (e.g. 'model.layers').")
        return name, found
    best: tuple[int, str, nn.ModuleList] | None = None
    for qual, mod in modules.items():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        kinds = {type(child) for child in mod}
        if len(kinds) != 1 or not all(linear_layers(child) for child in mod):
            continue
        size = sum(p.numel() for p in mod.parameters())
        if best is None or size > best[0]:
            best = (size, qual, mod)
    if best is None:
        raise UnsupportedLayerError(
            f"found no nn.ModuleList of transformer blocks with linear layers in {type(model).__name__}; "
            "one-shot pruning runs block by block: pass blocks='<qualified name of the block list>'")
    return best[1], best[2]


# ----------------------------------------------------------------------------- calling the model


def _accepts(model: nn.Module, keyword: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return keyword in params


_CACHE_KEYWORDS = ("past_key_values", "past_key_value", "layer_past")


def call_without_cache(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on a tensor, tuple or dict batch with no KV cache.

    ``use_cache=False`` is passed when the forward takes it; a wrapper whose forward does not
    (prunekit's ``TextModel``, a user's module) gets caching switched off in every Hugging Face
    config inside it for the call. A cache object recorded for a block would otherwise grow each
    time the block is re-run and pair the attention mask with twice the keys.
    """
    extra = {"use_cache": False} if _accepts(model, "use_cache") else {}
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None
               and getattr(c, "use_cache", None) is True}
    for config in configs.values():
        config.use_cache = False
    try:
        if isinstance(batch, Mapping):
            return model(**{**extra, **batch})
        if isinstance(batch, (tuple, list)):
            return model(*batch, **extra)
        return model(batch, **extra)
    finally:
        for config in configs.values():
            config.use_cache = True


def first_tensor(output: Any) -> torch.Tensor:
    """A block's hidden-state output: the tensor itself or the first item of a tuple/ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = tuple(output.values())
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TracingError(f"a transformer block returned {type(output).__name__}; expected a tensor or a tuple "
                       "whose first item is the hidden states")


class _Stop(Exception):
    """Raised by the last block's pre-hook: nothing past the blocks needs to run."""


@dataclass
class BlockInputs:
    """Hidden states entering the current block (one tensor per calibration batch, replaced in
    place as blocks run) and, per block and batch, the other arguments the model passed it."""

    hidden: list[torch.Tensor]
    calls: list[list[tuple[tuple, dict]]]  # block -> batch -> (args after hidden, kwargs)
    hidden_kw: list[bool] = field(default_factory=list)  # per block: hidden passed as keyword
    tokens: list[torch.Tensor | None] = field(default_factory=list)  # per batch: bool (B, T) real tokens

    def held_bytes(self) -> int:
        """Bytes of every distinct tensor held: the hidden states plus shared masks/embeddings."""
        seen: dict[int, int] = {id(t): t.numel() * t.element_size() for t in self.hidden}
        for per_block in self.calls:
            for args, kwargs in per_block:
                for t in _tensors((args, kwargs)):
                    seen.setdefault(id(t), t.numel() * t.element_size())
        return sum(seen.values())

    def run(self, index: int, block: nn.Module, batch: int) -> torch.Tensor:
        """Block ``index`` applied to the held hidden states of ``batch``."""
        args, kwargs = self.calls[index][batch]
        hidden = self.hidden[batch]
        if self.hidden_kw[index]:
            return first_tensor(block(*args, **{**kwargs, "hidden_states": hidden}))
        return first_tensor(block(hidden, *args, **kwargs))

    def observe(self, index: int, block: nn.Module, collector) -> None:
        """Run block ``index`` on every batch for ``collector``'s hooks, padding masked out."""
        for b in range(len(self.hidden)):
            collector.tokens = self.tokens[b] if b < len(self.tokens) else None
            self.run(index, block, b)
        collector.tokens = None

    def advance(self, index: int, block: nn.Module) -> None:
        """Replace the held hidden states by block ``index``'s outputs, batch by batch, in place."""
        for b in range(len(self.hidden)):
            self.hidden[b] = self.run(index, block, b)


def token_mask(batch: Any) -> torch.Tensor | None:
    """Bool (B, T) mask of real tokens from a dict batch's 2-D ``attention_mask``; None otherwise."""
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    return mask.bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def _tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _tensors(v)


def capture_block_inputs(model: nn.Module, blocks: nn.ModuleList, batches: list[Any]) -> BlockInputs:
    """Run each batch up to the first block, keep its hidden states; record every block's other args.

    Pre-hooks on all blocks record what the model passes each one besides the hidden states; only
    the first block's hidden states are kept (later blocks' are dropped as soon as they are made),
    and the last block's hook stops the forward before the head.
    """
    n = len(blocks)
    captured = BlockInputs(hidden=[], calls=[[] for _ in range(n)], hidden_kw=[False] * n,
                           tokens=[token_mask(batch) for batch in batches])

    def make_hook(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if args:
                hidden, rest, by_kw = args[0], tuple(args[1:]), False
            elif "hidden_states" in kwargs:
                hidden, rest, by_kw = kwargs["hidden_states"], (), True
                kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            else:
                raise TracingError(f"block {index} was called without hidden states (no positional argument "
                                   "and no 'hidden_states' keyword); pass blocks= the list of transformer blocks")
            if index == 0:
                captured.hidden.append(hidden.detach())
            kwargs = {k: (None if k in _CACHE_KEYWORDS else v) for k, v in kwargs.items()}
            captured.calls[index].append((rest, kwargs))
            captured.hidden_kw[index] = by_kw
            if index == n - 1:
                raise _Stop
        return hook

    handles = [b.register_forward_pre_hook(make_hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            for batch in batches:
                try:
                    call_without_cache(model, batch)
                except _Stop:
                    continue
                raise TracingError(f"the forward of {type(model).__name__} finished without reaching its last "
                                   "block; pass blocks= the list of transformer blocks the forward runs")
    finally:
        for h in handles:
            h.remove()
    return captured
