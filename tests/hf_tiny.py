"""A tiny random BERT with heads and FFN channels pruned differently per layer (shared by the HF deploy tests)."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.dependency import build_graph
from prunekit.dependency.groups import PruningPlan
from prunekit.pruning.surgery import SurgeryRecord, apply_plan

VOCAB = 96


def tiny_bert(seed: int = 0, *, layers: int = 2, attn: str = "sdpa") -> nn.Module:
    """BertModel, hidden 32, 4 heads of 8, FFN 48, random weights (LayerNorms too)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=160)
    config._attn_implementation = attn
    model = BertModel(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model


def prune_tiny_bert(model: nn.Module) -> tuple[nn.Module, SurgeryRecord]:
    """Layer i loses i+1 heads and 8*(i+1)+2 FFN channels: every layer ends with its own shapes."""
    example = {"input_ids": torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(0)),
               "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    graph = build_graph(model, example)
    removed: dict[str, tuple[int, ...]] = {}
    for group in graph.prunable_groups():
        layer = int(group.id.split("encoder.layer.")[1].split(".")[0])
        n = layer + 1 if group.unit == "head" else 8 * (layer + 1) + 2
        removed[group.id] = tuple(range(1, 1 + n))
    return apply_plan(model, graph, PruningPlan(removed))
