from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.pruning.depth import (
    Bypass,
    explain_blocks,
    find_bypassable_blocks,
    remove_blocks,
    score_blocks,
)


class ResMLPBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, d)
        return x + self.fc2(torch.relu(self.fc1(x)))


class ResMLP(nn.Module):
    def __init__(self, d: int = 8, depth: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(4, d)
        self.blocks = nn.Sequential(*[ResMLPBlock(d) for _ in range(depth)])
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 4)
        return self.head(self.blocks(self.proj(x)))  # (B, 3)


class BasicBlock(nn.Module):
    """torchvision-style block: relu(x + bn2(conv2(relu(bn1(conv1(x)))))), optional downsample."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(4, 4), BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 8, stride=2), BasicBlock(8, 8))
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 8, 8)
        x = self.layer2(self.layer1(self.stem(x)))  # (B, 8, 4, 4)
        return self.fc(x.mean((2, 3)))  # (B, 2)


class TupleLayer(nn.Module):
    """HF-style layer: returns (hidden, attn) with attn None unless asked for."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None, output_attn: bool = False):
        out = hidden + self.fc(self.norm(hidden))
        return (out, out.mean(-1) if output_attn else None)


class TinyDecoder(nn.Module):
    def __init__(self, d: int = 6, output_attn: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList([TupleLayer(d) for _ in range(3)])
        self.output_attn = output_attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d)
        for layer in self.layers:
            x = layer(x, mask=None, output_attn=self.output_attn)[0]
        return x


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_finds_residual_mlp_blocks_only():
    torch.manual_seed(0)
    model = ResMLP()
    assert find_bypassable_blocks(model, torch.randn(2, 4)) == ["blocks.0", "blocks.1", "blocks.2"]


def test_removed_block_equals_zeroed_residual_branch_and_drops_its_params():
    torch.manual_seed(0)
    model, x = ResMLP(), torch.randn(5, 4)
    small = remove_blocks(model, ["blocks.1"])
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.blocks[1].fc2.weight.zero_()
        zeroed.blocks[1].fc2.bias.zero_()
    torch.testing.assert_close(small(x), zeroed(x), rtol=0, atol=0)
    assert not torch.allclose(small(x), model(x))  # the block mattered: removal did something
    assert _params(model) - _params(small) == 2 * (8 * 8 + 8)
    assert isinstance(small.blocks[1], Bypass) and isinstance(model.blocks[1], ResMLPBlock)  # copy by default
    assert "blocks.2.fc1.weight" in small.state_dict()  # indices of later blocks do not shift


def test_resnet_blocks_with_downsample_are_kept_and_removal_matches_zeroed_bn():
    torch.manual_seed(0)
    model, x = TinyResNet().eval(), torch.randn(2, 3, 8, 8)
    reasons = explain_blocks(model, x)
    assert find_bypassable_blocks(model, x) == ["layer1.0", "layer1.1", "layer2.1"]
    assert reasons["layer2.0"] == "maps (2, 4, 8, 8) to (2, 8, 4, 4)"
    assert reasons["stem.0"] == "not a composite block with parameters"
    small = remove_blocks(model, ["layer1.1"], example_inputs=x)
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.layer1[1].bn2.weight.zero_()
        zeroed.layer1[1].bn2.bias.zero_()
    # relu(x + 0) == x because the previous block ends with a relu
    torch.testing.assert_close(small(x), zeroed(x), rtol=0, atol=0)
    block = model.layer1[1]
    assert _params(model) - _params(small) == _params(block) == 2 * (4 * 4 * 9) + 2 * 8


def test_probing_does_not_move_batchnorm_statistics():
    torch.manual_seed(0)
    model = TinyResNet().train()
    before = copy.deepcopy(model.state_dict())
    find_bypassable_blocks(model, torch.randn(2, 3, 8, 8))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_tuple_layers_keep_their_return_structure():
    torch.manual_seed(0)
    model, x = TinyDecoder(), torch.randn(2, 5, 6)
    assert find_bypassable_blocks(model, x) == ["layers.0", "layers.1", "layers.2"]
    small = remove_blocks(model, ["layers.0", "layers.2"], example_inputs=x)
    h = x + 0
    out = small.layers[0](h, mask=None)
    assert type(out) is tuple and len(out) == 2 and out[0] is h and out[1] is None
    torch.testing.assert_close(small(x), model.layers[1](x)[0], rtol=0, atol=0)
    with_attn = TinyDecoder(output_attn=True)
    assert find_bypassable_blocks(with_attn, x) == []
    assert explain_blocks(with_attn, x)["layers.0"] == "returns a tuple whose extra elements are not None"
    with pytest.raises(InvalidParameterError, match="'layers.1'.*not None"):
        remove_blocks(with_attn, ["layers.1"], example_inputs=x)


def test_scores_rank_a_dead_block_lowest_and_leave_the_model_unchanged():
    torch.manual_seed(0)
    model, x = ResMLP(), torch.randn(16, 4)
    with torch.no_grad():
        model.blocks[0].fc2.weight.zero_()
        model.blocks[0].fc2.bias.zero_()
        model.blocks[2].fc2.weight.mul_(5.0)
    reference = model(x)
    scores = score_blocks(model, ["blocks.0", "blocks.1", "blocks.2"], x)
    assert scores["blocks.0"] == 0.0
    assert scores["blocks.2"] > scores["blocks.1"] > 0.0
    with torch.no_grad():
        expected = float(((remove_blocks(model, ["blocks.1"])(x) - reference) ** 2).mean())
    assert scores["blocks.1"] == pytest.approx(expected, rel=1e-6)
    assert all(isinstance(b, ResMLPBlock) for b in model.blocks)
    torch.testing.assert_close(model(x), reference, rtol=0, atol=0)


def test_loss_scores_are_the_loss_increase_over_a_loader():
    torch.manual_seed(0)
    model = ResMLP()
    gen = torch.Generator().manual_seed(3)
    loader = [(torch.randn(4, 4, generator=gen), torch.randint(0, 3, (4,), generator=gen)) for _ in range(3)]
    loss = nn.functional.cross_entropy
    scores = score_blocks(model, ["blocks.1"], loader, loss_fn=loss, max_batches=2)
    small = remove_blocks(model, ["blocks.1"])
    with torch.no_grad():
        dense = sum(float(loss(model(xb), yb)) for xb, yb in loader[:2]) / 2
        cut = sum(float(loss(small(xb), yb)) for xb, yb in loader[:2]) / 2
    assert scores["blocks.1"] == pytest.approx(cut - dense, rel=1e-5, abs=1e-7)
    with pytest.raises(InvalidParameterError, match="loss_fn needs \\(inputs, targets\\)"):
        score_blocks(model, ["blocks.1"], torch.randn(2, 4), loss_fn=loss)


def test_bad_block_names_are_rejected():
    model = ResMLP()
    with pytest.raises(InvalidParameterError, match="'head'.*not in an nn.Sequential"):
        remove_blocks(model, ["head"])
    with pytest.raises(InvalidParameterError, match="'blocks.9'.*not a module"):
        remove_blocks(model, ["blocks.9"])
    with pytest.raises(InvalidParameterError, match="overlapping blocks '0' and '0.1'"):
        remove_blocks(nn.Sequential(model.blocks), ["0", "0.1"])


@pytest.mark.transformers
def test_hf_llama_layers_are_found_and_removable():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    inputs = {"input_ids": torch.randint(0, 64, (1, 7)), "use_cache": False}
    names = find_bypassable_blocks(model, inputs)
    assert names == ["model.layers.0", "model.layers.1", "model.layers.2"]
    small = remove_blocks(model, ["model.layers.1"], example_inputs=inputs)
    assert _params(model) - _params(small) == _params(model.model.layers[1])
    # a layer whose residual writes (o_proj, down_proj) are zero is exactly the identity
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.model.layers[1].self_attn.o_proj.weight.zero_()
        zeroed.model.layers[1].mlp.down_proj.weight.zero_()
        torch.testing.assert_close(small(**inputs).logits, zeroed(**inputs).logits, rtol=0, atol=1e-6)
