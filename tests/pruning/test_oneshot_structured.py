"""Structured one-shot pruning: Wanda-style unit scores by hand, real shrinkage, runs after the cut."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import InvalidParameterError
from prunekit.pruning.oneshot import prune_structured

from ._decoders import calibration, tiny_decoder

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.transformers
torch.set_num_threads(1)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_ffn_channels_and_heads_are_removed_and_the_model_still_runs(kind: str) -> None:
    dense = tiny_decoder(kind, layers=2)
    batches = calibration()
    small, result = prune_structured(dense, batches, channel_ratio=0.3, head_ratio=0.5)
    assert _params(small) < _params(dense)
    for i in range(2):
        if kind == "llama":
            layer = small.model.layers[i]
            assert layer.mlp.up_proj.out_features == 48 - 14 and layer.mlp.down_proj.in_features == 34
            attn = layer.self_attn  # one of the two key/value heads left, with its two query heads
            assert attn.k_proj.out_features == 8 and attn.q_proj.out_features == 16
        else:
            block = small.transformer.h[i]
            assert block.mlp.c_fc.nf == 128 - 38 and block.attn.num_heads == 2
    assert sorted(result.kinds.values()) == ["channel", "channel", "head", "head"]
    for mode in ("eval", "train"):
        getattr(small, mode)()
        out = small(batches[0]).logits
        assert out.shape == (2, 8, 64) and torch.isfinite(out).all()
    loss = small.train()(batches[0], labels=batches[0]).loss
    loss.backward()  # trainable after the cut
    assert all(p.grad is not None for p in small.parameters())


def test_block0_channel_scores_are_aggregated_wanda_scores_by_hand() -> None:
    dense = tiny_decoder("llama", layers=2)
    batches = calibration()
    down = dense.model.layers[0].mlp.down_proj
    seen: list[torch.Tensor] = []
    hook = down.register_forward_pre_hook(lambda _m, a: seen.append(a[0].reshape(-1, 48)))
    with torch.no_grad():
        for b in batches:
            dense(b)
    hook.remove()
    norms = torch.cat(seen).double().pow(2).sum(0).sqrt()  # ||X_j|| over all tokens
    expected = (down.weight.detach().abs().double() * norms).sum(0)  # sum over output rows
    _, result = prune_structured(dense, batches, channel_ratio=0.25)
    gid = next(g for g, k in result.kinds.items() if k == "channel" and ".layers.0." in g)
    assert torch.allclose(result.scores[gid], expected, rtol=1e-6)
    assert result.plan.removed[gid] == tuple(sorted(torch.argsort(expected)[:12].tolist()))
    _, plain = prune_structured(dense, batches, channel_ratio=0.25, score="magnitude")
    assert torch.allclose(plain.scores[gid], down.weight.detach().abs().double().sum(0))


def test_removing_silenced_units_changes_nothing_and_bias_compensation_is_the_mean() -> None:
    dense = tiny_decoder("gpt2", layers=1)
    batches = calibration()
    fc_proj = dense.transformer.h[0].mlp.c_proj
    seen: list[torch.Tensor] = []
    hook = fc_proj.register_forward_pre_hook(lambda _m, a: seen.append(a[0].reshape(-1, 128)))
    with torch.no_grad():
        for b in batches:
            dense(b)
    hook.remove()
    mean = torch.cat(seen).mean(0)
    plain, r0 = prune_structured(dense, batches, channel_ratio=0.5, compensate_bias=False)
    comp, r1 = prune_structured(dense, batches, channel_ratio=0.5)
    gid = next(g for g, k in r0.kinds.items() if k == "channel")
    drop = list(r0.plan.removed[gid])
    assert r0.plan.removed == r1.plan.removed
    assert torch.equal(plain.transformer.h[0].mlp.c_proj.bias, fc_proj.bias)
    shift = mean[drop] @ fc_proj.weight[drop]  # Conv1D weight is (in, out)
    assert torch.allclose(comp.transformer.h[0].mlp.c_proj.bias, fc_proj.bias + shift, atol=1e-5)


def test_bad_ratios_and_models_without_block_groups_are_one_line_errors() -> None:
    with pytest.raises(InvalidParameterError, match=r"'head_ratio' parameter of prune_structured .* Got 1\.0"):
        prune_structured(tiny_decoder("llama"), calibration(), head_ratio=1.0)
    with pytest.raises(InvalidParameterError, match="'score' parameter of prune_structured .* Got 'taylor'"):
        prune_structured(tiny_decoder("llama"), calibration(), channel_ratio=0.3, score="taylor")
    with pytest.raises(InvalidParameterError, match="needs calibration batches"):
        prune_structured(tiny_decoder("llama"), [], channel_ratio=0.3)
