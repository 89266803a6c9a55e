"""One-shot pruning finds the blocks and runs on every decoder family buildable offline."""

from __future__ import annotations

import pytest
import torch

from models import build_hf
from prunekit.pruning.oneshot import prune_oneshot, prune_structured

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.transformers
torch.set_num_threads(1)

DECODERS = {"gpt2": "transformer.h", "gpt_neo": "transformer.h", "opt": "model.decoder.layers",
            "llama": "model.layers", "mistral": "model.layers", "qwen2": "model.layers", "phi": "model.layers",
            "falcon": "transformer.h", "gemma": "model.layers"}


@pytest.mark.parametrize("name", list(DECODERS))
def test_sparsegpt_and_structured_run_on_each_decoder_family(name: str) -> None:
    model, _ = build_hf(name)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 64, (2, 8), generator=g) for _ in range(2)]
    sparse, result = prune_oneshot(model, batches, method="sparsegpt", sparsity=0.5)
    assert result.blocks == DECODERS[name] and result.masks and result.sparsity == 0.5
    small, info = prune_structured(model, batches, channel_ratio=0.3, head_ratio=0.5)
    assert "channel" in info.kinds.values() and info.plan.n_removed > 0
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for pruned in (sparse, small):
            logits = pruned(batches[0]).logits
            assert logits.shape == (2, 8, 64) and torch.isfinite(logits).all()
