"""Tiny LLaMA (RMSNorm, SwiGLU, GQA, Linear) and GPT-2 (LayerNorm, Conv1D) decoders for one-shot tests."""

from __future__ import annotations

import torch
from torch import nn


def tiny_decoder(kind: str, layers: int = 2) -> nn.Module:
    import transformers

    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
        cls = transformers.LlamaForCausalLM
    else:
        config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=layers, n_head=4, n_positions=32)
        cls = transformers.GPT2LMHeadModel
    config._attn_implementation = "eager"
    return cls(config).eval()


def calibration(batches: int = 3) -> list[torch.Tensor]:
    """Token-id batches of shape (2, 8)."""
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 64, (2, 8), generator=g) for _ in range(batches)]
