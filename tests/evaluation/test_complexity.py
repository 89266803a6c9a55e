from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import TracingError
from prunekit.evaluation.complexity import count_macs, count_params, layer_table


def test_grouped_conv_counts_only_in_group_channels() -> None:
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
    report = count_macs(conv, torch.randn(2, 4, 5, 5))
    assert report.total == (2 * 8 * 5 * 5) * (4 // 2) * 3 * 3  # output elements x (C_in/groups x k x k)
    assert report.per_op == {"conv2d": 7200} and report.per_module == {"": 7200}


def test_depthwise_conv1d_and_conv3d() -> None:
    assert count_macs(nn.Conv1d(6, 6, 3, groups=6), torch.randn(1, 6, 10)).total == 6 * 8 * 1 * 3
    assert count_macs(nn.Conv3d(2, 4, 2, stride=2), torch.randn(1, 2, 4, 4, 4)).total == (4 * 2 * 2 * 2) * 2 * 8


def test_transposed_conv_counts_each_input_element_fanning_out() -> None:
    deconv = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    report = count_macs(deconv, torch.randn(1, 4, 5, 5))
    assert report.total == (4 * 5 * 5) * (6 // 2) * 3 * 3  # 2700
    assert report.per_op == {"conv_transpose2d": 2700}


def test_linear_on_3d_input_counts_every_position() -> None:
    assert count_macs(nn.Linear(16, 32), torch.randn(2, 7, 16)).total == 2 * 7 * 16 * 32


class _Attention(nn.Module):
    """Hand-written attention: functional matmuls inside a custom module."""

    def __init__(self, dim: int = 12, heads: int = 3) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, D)
        b, n, d = x.shape
        q, k, v = (t(x).view(b, n, self.heads, d // self.heads).transpose(1, 2) for t in (self.q, self.k, self.v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)  # (B, H, L, L)
        return torch.matmul(scores.softmax(-1), v)  # (B, H, L, D/H)


def test_attention_matmuls_attributed_to_innermost_module() -> None:
    model = nn.Sequential(_Attention())
    report = count_macs(model, torch.randn(2, 5, 12))
    proj = 2 * 5 * 12 * 12
    attn = 2 * 3 * 5 * 5 * 4  # B x H x L x L x head_dim, once for QK^T and once for AV
    assert report.per_module == {"0.q": proj, "0.k": proj, "0.v": proj, "0": 2 * attn}
    assert report.per_op == {"linear": 3 * proj, "matmul": 2 * attn}
    assert report.total == 3 * proj + 2 * attn


def test_scaled_dot_product_attention_with_longer_keys_and_wider_values() -> None:
    class Sdpa(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    report = count_macs(Sdpa(), (q, k, v))
    assert report.total == 2 * 3 * 5 * 7 * 4 + 2 * 3 * 5 * 7 * 6
    assert report.per_op == {"scaled_dot_product_attention": report.total}


def test_multihead_attention_module() -> None:
    mha = nn.MultiheadAttention(8, 2)
    q, kv = torch.randn(3, 2, 8), torch.randn(4, 2, 8)  # (L, N, E), (S, N, E)
    report = count_macs(mha, (q, kv, kv))
    projections = 3 * 2 * 8 * 8 + 2 * (4 * 2 * 8 * 8) + 3 * 2 * 8 * 8  # q, k, v, out
    assert report.total == projections + 2 * (2 * 3 * 4 * 8)  # + scores and weighted sum, all heads


def test_matmul_family_and_einsum() -> None:
    class Ops(nn.Module):
        def forward(self, a, b, c):  # a: (2, 3, 4), b: (2, 4, 5), c: (3, 4)
            torch.bmm(a, b)  # 2*3*4*5 = 120
            torch.baddbmm(torch.zeros(2, 3, 5), a, b)  # 120
            torch.addmm(torch.zeros(3, 5), c, b[0])  # 3*4*5 = 60
            c.mm(b[0])  # 60
            torch.einsum("bij,bjk->bik", a, b)  # 120
            torch.einsum("...ij,...jk", a, b)  # 120, ellipsis and implicit output
            torch.einsum("ij,jk,kl->il", c, b[0], torch.ones(5, 2))  # 3*4*5 + 3*5*2 = 90, left to right
            return torch.mv(c, torch.ones(4)) @ torch.ones(3)  # 12 + 3

    report = count_macs(Ops(), (torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(3, 4)))
    assert report.per_op == {"bmm": 120, "baddbmm": 120, "addmm": 60, "mm": 60, "einsum": 330, "mv": 12, "matmul": 3}


def test_einsum_sublist_form_is_counted() -> None:
    class Sub(nn.Module):
        def forward(self, a, b):
            return torch.einsum(a, [0, 1], b, [1, 2], [0, 2])

    assert count_macs(Sub(), (torch.randn(3, 4), torch.randn(4, 5))).per_op == {"einsum": 3 * 4 * 5}


def test_keyword_inputs_and_shared_module_called_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, *, scale):
            return self.fc(self.fc(x)) * scale

    report = count_macs(Twice(), {"x": torch.randn(3, 4), "scale": torch.tensor(2.0)})
    assert report.per_module == {"fc": 2 * 3 * 4 * 4}


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.down is None else self.down(x)))


def _resnet18() -> nn.Module:
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def test_resnet_block_matches_hand_count() -> None:
    block = _BasicBlock(64, 128, 2)
    report = count_macs(block, torch.randn(1, 64, 16, 16))
    assert report.per_module == {"conv1": 8 * 8 * 128 * 64 * 9, "conv2": 8 * 8 * 128 * 128 * 9,
                                 "down.0": 8 * 8 * 128 * 64}


def test_resnet18_matches_published_figure() -> None:
    # ResNet-18 at 224x224: 1.8 GFLOPs in He et al. (multiply-adds); 1,814,073,344 exactly with the fc.
    with torch.device("meta"):
        model = _resnet18()  # skip the (slow, irrelevant) weight init: MACs depend on shapes only
    model.to_empty(device="cpu")
    assert count_macs(model, torch.zeros(1, 3, 224, 224)).total == 1_814_073_344


def test_counting_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, torch.randn(2, 2, 6, 6))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not h for m in model.modules() for h in (m._forward_hooks, m._forward_pre_hooks))


def test_forward_failure_becomes_tracing_error() -> None:
    with pytest.raises(TracingError, match="could not run Linear on the example inputs"):
        count_macs(nn.Linear(4, 2), torch.randn(3, 5))


def test_count_params_counts_tied_weights_once() -> None:
    a = nn.Linear(3, 4)
    assert count_params(a) == 16
    tied = nn.Sequential(a, nn.ReLU(), a)
    assert count_params(tied) == 16
    a.bias.requires_grad_(False)
    assert count_params(tied, trainable_only=True) == 12


def test_layer_table_rows_sum_to_totals() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    x = torch.randn(1, 1, 6, 6)
    rows = layer_table(model, x)
    assert [(r["name"], r["type"]) for r in rows] == [("0", "Conv2d"), ("1", "BatchNorm2d"), ("4", "Linear")]
    assert [r["macs"] for r in rows] == [4 * 4 * 4 * 9, 0, 64 * 2]
    assert sum(r["params"] for r in rows) == count_params(model)
    assert sum(r["macs"] for r in rows) == count_macs(model, x).total


@pytest.mark.slow
@pytest.mark.transformers
def test_hugging_face_gpt2_functional_ops_are_counted() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    length, embed, vocab = 5, 16, 50
    report = count_macs(model, {"input_ids": torch.randint(0, vocab, (1, length))})
    # GPT-2's Conv1D layers are torch.addmm calls; attention runs through F.scaled_dot_product_attention
    per_layer = length * embed * (3 * embed + embed + 4 * embed + 4 * embed) + 2 * length * length * embed
    assert report.total == 2 * per_layer + length * embed * vocab
    assert report.per_module["transformer.h.1.attn"] == 2 * length * length * embed
    assert report.per_module["transformer.h.0.mlp.c_fc"] == length * embed * 4 * embed
