"""Vocabulary pruning: the kept tokens behave exactly as before, others read [UNK], and it round-trips."""

from __future__ import annotations

import pytest
import torch

from hf_text import sentences, tiny_checkpoint
from prunekit.errors import InvalidParameterError

pytestmark = pytest.mark.transformers
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from prunekit.models.hf import load_hf

    folder = tiny_checkpoint(tmp_path_factory.mktemp("vocab") / "bert")
    return folder, *load_hf(str(folder), "embedding")


def _inputs(tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def test_kept_tokens_unchanged_unseen_tokens_read_unk(loaded, tmp_path):
    import copy

    from prunekit.models.hf import parameter_breakdown
    from prunekit.models.vocab import corpus_token_ids, load_vocabulary, prune_vocabulary, save_vocabulary

    folder, model, tokenizer = loaded
    model = copy.deepcopy(model)
    seen = _inputs(tokenizer, [t for t, _ in sentences(6)])
    kept = corpus_token_ids([(seen, None)], tokenizer)
    assert set(tokenizer.all_special_ids) <= set(kept.tolist())
    with torch.no_grad():
        before = model(**seen)
        unseen = _inputs(tokenizer, ["the man said that"])
        swapped = dict(unseen)
        swapped["input_ids"] = torch.where(torch.isin(unseen["input_ids"], kept), unseen["input_ids"],
                                           torch.tensor(tokenizer.unk_token_id))
        dense_with_unk = model(**swapped)
    full = parameter_breakdown(model)
    prune_vocabulary(model, kept, fallback_id=tokenizer.unk_token_id)
    small = parameter_breakdown(model)
    assert full["embedding"] - small["embedding"] == (model.config.vocab_size - len(kept)) * 32
    with torch.no_grad():
        torch.testing.assert_close(model(**seen), before)
        torch.testing.assert_close(model(**unseen), dense_with_unk)
    save_vocabulary(model, tmp_path)
    from prunekit.models.hf import load_hf

    fresh, _ = load_hf(str(folder), "embedding")
    load_vocabulary(fresh, tmp_path)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(**unseen), dense_with_unk)


def test_language_models_are_refused(tmp_path):
    from prunekit.models.hf import load_hf
    from prunekit.models.vocab import prune_vocabulary

    model, tokenizer = load_hf(str(tiny_checkpoint(tmp_path / "gpt", kind="gpt2")), "causal_lm")
    with pytest.raises(InvalidParameterError, match="vocabulary pruning is for encoders"):
        prune_vocabulary(model, torch.arange(10), fallback_id=1)
