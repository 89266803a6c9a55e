"""An nn.MultiheadAttention with separate q/k/v projections, so whole heads can be removed.

``nn.MultiheadAttention`` packs q, k and v into one ``in_proj_weight`` of shape (3E, E) and derives
``head_dim = embed_dim // num_heads`` from its input width, so its attention width can never
differ from its model width: no head can be removed from it. :func:`split_attention` swaps every
instance for :class:`SplitMultiheadAttention`, which computes the same function (same weights, same
call signature and return values) with ``-1`` heads inferred at run time; the dependency graph
then sees four linear layers and a head split, and prunes heads like any other attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitMultiheadAttention(nn.Module):
    """Drop-in replacement for ``nn.MultiheadAttention`` (no add_bias_kv / add_zero_attn)."""

    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, kdim: int | None = None, vdim: int | None = None) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> "SplitMultiheadAttention":
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn are not supported")
        new = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=mha.in_proj_bias is not None,
                  batch_first=mha.batch_first, kdim=mha.kdim, vdim=mha.vdim)
        e = mha.embed_dim
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                q, k, v = mha.in_proj_weight.split(e, dim=0)  # (E, E) each
            else:
                q, k, v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            for proj, w in ((new.q_proj, q), (new.k_proj, k), (new.v_proj, v)):
                proj.weight.copy_(w)
            if mha.in_proj_bias is not None:
                for proj, b in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_bias.split(e)):
                    proj.bias.copy_(b)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.to(mha.out_proj.weight.device).train(mha.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:  # (L, E): one sequence
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
        if not self.batch_first or not batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))  # -> (B, L, E)
        b, tgt, src = query.shape[0], query.shape[1], key.shape[1]
        q = self.q_proj(query).view(b, tgt, -1, self.head_dim).transpose(1, 2)  # (B, h, L, d)
        k = self.k_proj(key).view(b, src, -1, self.head_dim).transpose(1, 2)  # (B, h, S, d)
        v = self.v_proj(value).view(b, src, -1, self.head_dim).transpose(1, 2)  # (B, h, S, d)
        mask = _float_mask(attn_mask, key_padding_mask, b, tgt, src, q.dtype)
        if is_causal and mask is None:
            mask = torch.full((tgt, src), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
        if need_weights:
            scores = q @ k.transpose(-2, -1) / self.head_dim**0.5  # (B, h, L, S)
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, self.dropout, self.training) @ v  # (B, h, L, d)
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                 dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(b, tgt, -1))  # (B, L, E)
        if not self.batch_first or not batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        if weights is not None:
            weights = weights.mean(dim=1) if average_attn_weights else weights
            if not batched:
                weights = weights.squeeze(0)
        return out, weights


def _float_mask(attn_mask, key_padding_mask, b: int, tgt: int, src: int, dtype) -> torch.Tensor | None:
    """nn.MultiheadAttention's masks (True = blocked, or additive floats) as one additive mask."""
    total = None
    for mask, shape in ((attn_mask, None), (key_padding_mask, (b, 1, 1, src))):
        if mask is None:
            continue
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        if shape is not None:
            mask = mask.view(shape)
        elif mask.dim() == 3:  # (B * heads, L, S)
            mask = mask.view(b, -1, tgt, src)
        total = mask.to(dtype) if total is None else total + mask.to(dtype)
    return total


def split_attention(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Replace every ``nn.MultiheadAttention`` in ``model`` (in place); returns it and their names."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent)
        setattr(owner, child, SplitMultiheadAttention.from_torch(getattr(owner, child)))
    return model, names
