from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.dependency.groups import ChannelGroup
from prunekit.importance import APoZ, HeadImportance, MeanActivation, UnscorableGroupError, collect


def test_apoz_and_mean_activation_are_read_after_the_relu(two_layer, calib, hidden_group):
    ctx = collect(two_layer, calib, needs={"activations"}, groups=[hidden_group])
    # fc1 outputs (pre-ReLU): [3.1, -0.2, -3.7] and [-1.9, -0.45, 3.8]; fc2 reads [3.1, 0, 0], [0, 0, 3.8]
    torch.testing.assert_close(APoZ()(hidden_group, ctx), torch.tensor([0.5, 0.0, 0.5]))
    torch.testing.assert_close(MeanActivation()(hidden_group, ctx), torch.tensor([1.55, 0.0, 1.9]))


def test_activation_statistics_follow_batchnorm_and_relu(make_slot):
    """conv -> BN -> ReLU -> conv: the statistics are of what the second conv reads."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 1, 1)).eval()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([1.0, -1.0]))
        model[1].bias.copy_(torch.tensor([0.5, -0.5]))
    x = torch.randn(4, 1, 3, 3)
    group = ChannelGroup("c", 2, (make_slot("0.weight", 0, [0, 1], "out", "0"),
                                  make_slot("1.weight", 0, [0, 1], "norm", "1"),
                                  make_slot("3.weight", 1, [0, 1], "in", "3")))
    ctx = collect(model, [(x, torch.zeros(4))], needs={"activations"}, groups=[group])
    consumed = model[2](model[1](model[0](x)))  # (4, 2, 3, 3)
    expected_apoz = (consumed <= 0).double().mean((0, 2, 3))
    torch.testing.assert_close(APoZ()(group, ctx), (1 - expected_apoz).float())
    torch.testing.assert_close(MeanActivation()(group, ctx), consumed.abs().mean((0, 2, 3)))


def _signed_conv_stats(make_slot):
    """A 1x1 conv whose two channels see x and -x, with no consumer: statistics of its raw output."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    x = torch.tensor([1.0, -2.0, 3.0, 0.0]).view(1, 1, 2, 2)
    group = ChannelGroup(":out", 2, (make_slot("weight", 0, [0, 1], "out", ""),))
    return group, collect(conv, [(x, torch.zeros(1))], needs={"activations"}, groups=[group])


def test_conv_statistics_use_channel_axis_one(make_slot):
    group, ctx = _signed_conv_stats(make_slot)
    # channel 0 sees x, channel 1 sees -x: negative values are {-2} and {-1, -3}
    torch.testing.assert_close(ctx.activations[group.id].negative, torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(MeanActivation()(group, ctx), torch.tensor([1.5, 1.5]))


def test_apoz_refuses_a_group_no_relu_makes_zeros(make_slot):
    """The raw conv output above is negative 3 times in 8 values: APoZ there would count signs, not use."""
    group, ctx = _signed_conv_stats(make_slot)
    with pytest.raises(UnscorableGroupError, match=r"group ':out': 3 of 8 values .* are negative.*'activation'"):
        APoZ()(group, ctx)


def test_apoz_refuses_attention_heads(make_slot):
    model, data = _attention_data()
    group = _head_group(make_slot)
    ctx = collect(model, data, needs={"activations"}, groups=[group])
    with pytest.raises(UnscorableGroupError, match="cannot score group 'attn:heads'"):
        APoZ()(group, ctx)
    assert MeanActivation()(group, ctx).shape == (2,)


def test_activation_criterion_without_statistics_is_unscorable(two_layer, hidden_group):
    from prunekit.importance import ScoreContext

    with pytest.raises(UnscorableGroupError, match="cannot score group 'fc1:out': no activation statistics"):
        APoZ()(hidden_group, ScoreContext.from_model(two_layer))


class TinyAttention(nn.Module):
    """Two heads of width 2 on d=4; ``mask`` (B, heads) scales each head's output when given."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(4, 4, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (m(x).view(b, t, 2, 2).transpose(1, 2) for m in (self.q, self.k, self.v))  # (B, h, T, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(2), -1)  # (B, h, T, T)
        y = att @ v  # (B, h, T, 2)
        if mask is not None:
            y = y * mask[:, :, None, None]
        return self.o(y.transpose(1, 2).reshape(b, t, 4)).mean(1)  # (B, 4)


def _head_group(make_slot) -> ChannelGroup:
    heads = [0, 0, 1, 1]
    slots = tuple(make_slot(f"{m}.weight", 0, heads, "out", m) for m in "qkv")
    return ChannelGroup("attn:heads", 2, slots + (make_slot("o.weight", 1, heads, "in", "o"),), unit="head")


def _attention_data():
    torch.manual_seed(0)
    model = TinyAttention()
    data = [(torch.randn(3, 5, 4), torch.randint(0, 4, (3,))) for _ in range(2)]
    return model, data


def _mask_grads(model, data):
    """dL_n/dmask of each sample's own loss, straight from the definition (Michel et al. 2019)."""
    rows = []
    for x, y in data:
        mask = torch.ones(x.shape[0], 2, requires_grad=True)
        loss = nn.functional.cross_entropy(model(x, mask), y, reduction="sum")
        rows.append(torch.autograd.grad(loss, mask)[0])
    return torch.cat(rows)  # (samples, heads)


def test_head_importance_is_the_head_mask_gradient(make_slot):
    model, data = _attention_data()
    group = _head_group(make_slot)
    ctx = collect(model, data, needs={"gates", "grads"}, groups=[group])
    assert ctx.gates[group.id].sites == ("consumer:o",)
    per_sample = _mask_grads(model, data)
    torch.testing.assert_close(HeadImportance(per_sample=False)(group, ctx), per_sample.sum(0).abs(),
                               rtol=1e-5, atol=1e-7)
    for mode in (True, None):  # the default is Michel et al.'s E_x |dL(x)/dxi_h| where the gate runs
        torch.testing.assert_close(HeadImportance(per_sample=mode)(group, ctx), per_sample.abs().mean(0),
                                   rtol=1e-5, atol=1e-7)
    assert not torch.allclose(per_sample.sum(0).abs() / len(per_sample), per_sample.abs().mean(0))  # signs differ


def test_head_importance_falls_back_to_the_weight_gradient_identity(make_slot):
    model, data = _attention_data()
    group = _head_group(make_slot)
    ctx = collect(model, data, needs={"gates", "grads"}, groups=[group])
    hooked = HeadImportance(per_sample=False)(group, ctx)
    ctx.gates.clear()  # as for nn.MultiheadAttention, whose out_proj forward never runs
    for mode in (False, None):
        torch.testing.assert_close(HeadImportance(per_sample=mode)(group, ctx), hooked, rtol=1e-5, atol=1e-7)
    with pytest.raises(UnscorableGroupError, match="per-sample"):
        HeadImportance(per_sample=True)(group, ctx)


def test_head_importance_on_torch_multihead_attention(make_slot):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(4, 2, batch_first=True)

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mha

        def forward(self, x, mask=None):
            out = self.attn(x, x, x, need_weights=False)[0]
            return out.mean(1)

    model = Wrap()
    data = [(torch.randn(3, 5, 4), torch.randint(0, 4, (3,)))]
    group = ChannelGroup("attn:heads", 2, (make_slot("attn.out_proj.weight", 1, [0, 0, 1, 1], "in", "attn.out_proj"),),
                         unit="head")
    ctx = collect(model, data, needs={"gates", "grads"}, groups=[group])
    assert group.id not in ctx.gates  # out_proj is applied functionally: no gate site runs
    # reference: mask the heads by scaling out_proj's input columns, gradient w.r.t. the mask
    gate = torch.ones(2, requires_grad=True)
    w = mha.out_proj.weight.detach() * gate.repeat_interleave(2)[None, :]
    x, y = data[0]
    out = nn.functional.multi_head_attention_forward(
        x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), 4, 2, mha.in_proj_weight.detach(),
        mha.in_proj_bias.detach(), None, None, False, 0.0, w, mha.out_proj.bias.detach(),
        training=False, need_weights=False)[0]
    loss = nn.functional.cross_entropy(out.transpose(0, 1).mean(1), y, reduction="sum")
    (expected,) = torch.autograd.grad(loss, gate)  # sum over samples of each sample's mask gradient
    np.testing.assert_allclose(HeadImportance()(group, ctx).numpy(), expected.abs().numpy(), rtol=1e-4, atol=1e-7)


def test_apoz_warns_that_it_ranked_below_random_and_names_the_alternative():
    from prunekit.errors import PrunekitWarning
    from prunekit.importance import make_criterion

    with pytest.warns(PrunekitWarning, match=r"'apoz' ranked units below random one-shot .* prefer 'output_sensitivity'"):
        make_criterion("apoz")
