"""nn.MultiheadAttention -> SplitMultiheadAttention: same function, then prunable by whole heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.dependency import PruningPlan, build_graph
from prunekit.models.attention import SplitMultiheadAttention, split_attention
from prunekit.pruning.surgery import apply_plan, zero_plan


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("masks", ["none", "padding", "causal_bool", "float"])
def test_split_attention_computes_what_torch_computes(batch_first, need_weights, masks):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    split = SplitMultiheadAttention.from_torch(mha).eval()
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    kwargs = {}
    if masks == "padding":
        kwargs["key_padding_mask"] = torch.tensor([[False] * 5, [False, False, False, True, True]])
    elif masks == "causal_bool":
        kwargs["attn_mask"] = torch.ones(5, 5, dtype=torch.bool).triu(1)
    elif masks == "float":
        kwargs["attn_mask"] = torch.randn(5, 5)
    with torch.no_grad():
        want_out, want_w = mha(x, x, x, need_weights=need_weights, **kwargs)
        got_out, got_w = split(x, x, x, need_weights=need_weights, **kwargs)
    torch.testing.assert_close(got_out, want_out, atol=1e-5, rtol=1e-5)
    if need_weights:
        torch.testing.assert_close(got_w, want_w, atol=1e-5, rtol=1e-5)
    else:
        assert got_w is None and want_w is None


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x + self.attn(x, x, x, need_weights=False)[0])
        return self.head(x.mean(1))


def test_multihead_attention_is_frozen_until_split_then_heads_prune_exactly():
    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randn(2, 5, 16)
    frozen = build_graph(model, x)
    assert not any(g.unit == "head" and g.prunable for g in frozen.groups)
    assert any("MultiheadAttention" in g.reason for g in frozen.groups)

    model, names = split_attention(model)
    assert names == ["attn"]
    graph = build_graph(model, x)
    heads = [g for g in graph.prunable_groups() if g.unit == "head"]
    assert len(heads) == 1 and heads[0].size == 4 and heads[0].exact
    plan = PruningPlan({heads[0].id: (1, 3)})
    pruned, _ = apply_plan(model, graph, plan)
    assert pruned.attn.q_proj.out_features == 8 and pruned.attn.out_proj.in_features == 8
    assert pruned.attn.num_heads == 2 and pruned.attn.head_dim == 4  # head_dim kept, count updated
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zero_plan(model, graph, plan)(x), atol=1e-5, rtol=0)
