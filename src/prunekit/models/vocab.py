"""Vocabulary pruning: keep only the embedding rows of tokens the user's text actually uses.

In a small encoder the token table is most of the model (11.9M of all-MiniLM-L6-v2's 22.7M
parameters), and pruning heads or FFN channels never touches it. A corpus uses a fraction of a
30k-token vocabulary, so the unused rows can go. The tokenizer stays as it is: the embedding
keeps a table from the original ids to the kept rows (int64, one entry per original token), and
every token outside the kept set reads the row of the unknown token. Save ``kept_ids`` (see
:func:`save_vocabulary`) and call :func:`prune_vocabulary` on a fresh model before loading the
pruned weights to rebuild it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import InvalidParameterError, SourceError
from prunekit.fileio import write_text_atomic

VOCAB_FILE = "vocabulary.json"


class PrunedVocabEmbedding(nn.Module):
    """``nn.Embedding`` over the kept tokens, indexed by the ORIGINAL token ids."""

    def __init__(self, embedding: nn.Embedding, kept_ids: torch.Tensor, fallback_id: int) -> None:
        super().__init__()
        kept_ids = torch.as_tensor(kept_ids, dtype=torch.long).unique(sorted=True)
        if fallback_id not in set(kept_ids.tolist()):
            raise InvalidParameterError(f"the fallback token id {fallback_id} must be among the kept ids")
        remap = torch.full((embedding.num_embeddings,), -1, dtype=torch.long)
        remap[kept_ids] = torch.arange(len(kept_ids))
        remap[remap < 0] = int(remap[fallback_id])
        self.register_buffer("remap", remap)
        self.register_buffer("kept_ids", kept_ids)
        self.weight = nn.Parameter(embedding.weight.detach()[kept_ids].clone())
        self.padding_idx, self.fallback_id = None, int(fallback_id)
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.remap[input_ids], self.weight)


def corpus_token_ids(batches: Iterable[Any], tokenizer: Any) -> torch.Tensor:
    """Sorted ids of every token in ``batches`` (loader items or dicts holding ``input_ids``) plus specials."""
    seen: set[int] = set(int(i) for i in getattr(tokenizer, "all_special_ids", []))
    for batch in batches:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        seen.update((ids[mask.bool()] if mask is not None else ids).unique().tolist())
    return torch.tensor(sorted(seen), dtype=torch.long)


def prune_vocabulary(model: nn.Module, kept_ids: torch.Tensor, *, fallback_id: int) -> nn.Module:
    """Replace ``model``'s input embedding (in place) by one holding only ``kept_ids``.

    ``model`` is a Hugging Face model or a :class:`prunekit.models.hf.TextModel`. Models that tie
    the input table to the output layer (language-model heads) are refused: their vocabulary is
    also what they predict.
    """
    target = getattr(model, "model", model)
    if not hasattr(target, "get_input_embeddings"):
        raise InvalidParameterError(f"{type(target).__name__} has no get_input_embeddings(): vocabulary pruning "
                                    f"needs a Hugging Face model")
    table = target.get_input_embeddings()
    if not isinstance(table, nn.Embedding):
        raise InvalidParameterError(f"the input embedding is a {type(table).__name__}, already pruned or not an nn.Embedding")
    output = target.get_output_embeddings() if hasattr(target, "get_output_embeddings") else None
    if output is not None:
        raise InvalidParameterError("this model predicts tokens with an output layer over the vocabulary; "
                                    "vocabulary pruning is for encoders (embedding and classification tasks)")
    target.set_input_embeddings(PrunedVocabEmbedding(table, kept_ids, fallback_id))
    return model


def save_vocabulary(model: nn.Module, folder: str | Path) -> Path:
    """Write the kept token ids beside the weights, so :func:`load_vocabulary` can rebuild the table."""
    table = getattr(model, "model", model).get_input_embeddings()
    if not isinstance(table, PrunedVocabEmbedding):
        raise InvalidParameterError("the model's vocabulary is not pruned: nothing to save")
    path = Path(folder) / VOCAB_FILE
    write_text_atomic(path, json.dumps({"kept_ids": table.kept_ids.tolist(), "fallback_id": table.fallback_id,
                                        "original_size": table.num_embeddings}))
    return path


def load_vocabulary(model: nn.Module, folder: str | Path) -> nn.Module:
    """Re-apply a saved vocabulary pruning to a freshly loaded dense model (before loading pruned weights)."""
    path = Path(folder) / VOCAB_FILE
    if not path.is_file():
        raise SourceError(f"no {VOCAB_FILE} in '{folder}': this model's vocabulary was not pruned")
    saved = json.loads(path.read_text())
    return prune_vocabulary(model, torch.tensor(saved["kept_ids"], dtype=torch.long), fallback_id=saved["fallback_id"])
