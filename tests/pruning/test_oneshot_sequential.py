"""Block-by-block one-shot pruning on tiny LLaMA and GPT-2 decoders: same as pruning each layer
from its true (pruned-upstream) inputs, one block's activations held, masks in state_dict layout."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError, PrunekitWarning, UnsupportedLayerError
from prunekit.pruning.masking import check_nm
from prunekit.pruning.oneshot import find_blocks, prune_oneshot, sparsegpt_prune, wanda_keep_mask
from prunekit.pruning.oneshot.blocks import first_tensor, linear_layers, linear_weight

from ._decoders import calibration, tiny_decoder

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.transformers
torch.set_num_threads(1)


def true_block_inputs(model: nn.Module, blocks: nn.ModuleList, batches) -> list[list[tuple]]:
    """Per block, the (hidden, args, kwargs) it receives when ``model`` runs on each batch."""
    seen: list[list[tuple]] = [[] for _ in blocks]
    hooks = [b.register_forward_pre_hook(lambda _m, a, k, i=i: seen[i].append((a[0], a[1:], k)), with_kwargs=True)
             for i, b in enumerate(blocks)]
    with torch.no_grad():
        for batch in batches:
            model(batch, use_cache=False)
    for h in hooks:
        h.remove()
    return seen


def layer_inputs(block: nn.Module, calls: list[tuple]) -> dict[str, torch.Tensor]:
    """Every linear layer's inputs over all calls of the (dense) block, as (tokens, in)."""
    got: dict[str, list[torch.Tensor]] = {}
    layers = linear_layers(block)
    def keep(name: str):
        return lambda _m, a: got.setdefault(name, []).append(a[0].reshape(-1, a[0].shape[-1]))

    hooks = [m.register_forward_pre_hook(keep(n)) for n, m in layers.items()]
    with torch.no_grad():
        for hidden, args, kwargs in calls:
            first_tensor(block(hidden, *args, **kwargs))
    for h in hooks:
        h.remove()
    return {n: torch.cat(v).double() for n, v in got.items()}


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_sequential_equals_pruning_each_layer_from_its_true_inputs(kind: str, method: str) -> None:
    dense = tiny_decoder(kind, layers=3)
    batches = calibration()
    pruned, result = prune_oneshot(dense, batches, method=method, sparsity=0.5)
    _, dense_blocks = find_blocks(dense)
    _, pruned_blocks = find_blocks(pruned)
    inputs = true_block_inputs(pruned, pruned_blocks, batches)  # block i's inputs went through pruned 0..i-1
    for i, block in enumerate(dense_blocks):
        for name, x in layer_inputs(copy.deepcopy(block), inputs[i]).items():
            w = linear_weight(block.get_submodule(name)).double()
            got = linear_weight(pruned_blocks[i].get_submodule(name)).double()
            if method == "wanda":
                expected = w * wanda_keep_mask(w, x.pow(2).sum(0).sqrt(), sparsity=0.5)
                assert torch.equal(got, expected), f"block {i} {name}"
            else:
                expected, _ = sparsegpt_prune(w, 2 * x.T @ x / x.shape[0], sparsity=0.5)
                assert torch.equal(got == 0, expected == 0), f"block {i} {name}"
                assert torch.allclose(got, expected, atol=1e-4), f"block {i} {name}"
    if i and method == "wanda":  # the pruned upstream matters: dense inputs would give other masks somewhere
        dense_inputs = true_block_inputs(dense, dense_blocks, batches)
        assert any(not torch.equal(a[0], b[0]) for a, b in zip(inputs[-1], dense_inputs[-1]))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_every_block_layer_is_half_sparse_and_masks_use_state_dict_layout(kind: str, method: str) -> None:
    dense = tiny_decoder(kind)
    pruned, result = prune_oneshot(dense, calibration(), method=method, sparsity=0.5)
    state = pruned.state_dict()
    layers = [k for k in state if k.endswith("weight") and state[k].dim() == 2 and (".h." in k or ".layers." in k)]
    assert sorted(result.masks) == sorted(layers) and len(layers) == (14 if kind == "llama" else 8)
    for key, keep in result.masks.items():
        assert keep.shape == state[key].shape
        assert torch.equal(state[key] == 0, ~keep), key
        assert result.layers[key] == 0.5
    assert result.sparsity == 0.5
    # embeddings and the head are left dense; the original model is untouched
    assert torch.equal(pruned.lm_head.weight, dense.lm_head.weight)
    assert all((p != 0).all() for n, p in dense.named_parameters() if n in result.masks)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("nm", [(2, 4), (4, 8)])
def test_nm_patterns_hold_along_the_input_axis(kind: str, nm: tuple[int, int]) -> None:
    pruned, result = prune_oneshot(tiny_decoder(kind), calibration(), method="sparsegpt", nm=nm)
    for key, keep in result.masks.items():
        module = pruned.get_submodule(key.rsplit(".", 1)[0])
        assert check_nm(linear_weight(module), *nm), key  # (out, in) view: runs along in


def test_memory_is_one_blocks_activations_whatever_the_depth() -> None:
    batches = calibration(batches=4)
    _, shallow = prune_oneshot(tiny_decoder("llama", layers=2), batches, method="sparsegpt", sparsity=0.5)
    _, deep = prune_oneshot(tiny_decoder("llama", layers=6), batches, method="sparsegpt", sparsity=0.5)
    assert shallow.peak_held_activations == deep.peak_held_activations == len(batches)
    assert shallow.peak_held_bytes == deep.peak_held_bytes
    hidden = sum(b.numel() for b in batches) * 32 * 4  # tokens x hidden x float32, for ONE block
    inputs = [32] * 6 + [48]  # q, k, v, o, gate, up see 32 features; down_proj 48
    stats = sum(i * i + 2 * i for i in inputs) * 8  # float64 X^T X, sum of squares and sum per layer
    shared = deep.peak_held_bytes - hidden - stats  # rotary cos/sin and position ids, shared by all blocks
    assert 0 < shared <= 4 * (2 * 2 * 8 * 8 * 4 + 2 * 8 * 8)


def test_blocks_are_found_by_structure_or_by_name_with_clear_errors() -> None:
    assert find_blocks(tiny_decoder("llama"))[0] == "model.layers"
    assert find_blocks(tiny_decoder("gpt2"))[0] == "transformer.h"
    with pytest.raises(UnsupportedLayerError, match="found no nn.ModuleList of transformer blocks.*pass blocks="):
        prune_oneshot(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), [torch.zeros(1, 4)], sparsity=0.5)
    with pytest.raises(InvalidParameterError, match="'blocks' parameter names 'model.norm'"):
        prune_oneshot(tiny_decoder("llama"), calibration(), sparsity=0.5, blocks="model.norm")


def test_bad_patterns_and_methods_are_one_line_errors() -> None:
    model = tiny_decoder("llama")
    with pytest.raises(InvalidParameterError, match="exactly one of 'sparsity'"):
        prune_oneshot(model, calibration(), sparsity=0.5, nm=(2, 4))
    with pytest.raises(InvalidParameterError, match=r"'nm' parameter .* 0 < n < m\. Got \(4, 4\)"):
        prune_oneshot(model, calibration(), nm=(4, 4))
    with pytest.raises(InvalidParameterError, match="'method' parameter .* Got 'obs'"):
        prune_oneshot(model, calibration(), method="obs", sparsity=0.5)
    with pytest.raises(InvalidParameterError, match="needs calibration batches"):
        prune_oneshot(model, [], method="wanda", sparsity=0.5)
    pruned, _ = prune_oneshot(model, [], method="magnitude", sparsity=0.5)  # magnitude needs no data
    assert float((pruned.model.layers[0].mlp.up_proj.weight == 0).float().mean()) == 0.5


def test_ignore_takes_block_relative_or_qualified_names_and_rejects_unknown_ones() -> None:
    model = tiny_decoder("llama")
    _, relative = prune_oneshot(model, calibration(), method="wanda", sparsity=0.5, ignore=["mlp.down_proj"])
    assert not any("down_proj" in k for k in relative.masks) and len(relative.masks) == 12
    _, qualified = prune_oneshot(model, calibration(), method="wanda", sparsity=0.5,
                                 ignore=["model.layers.1.mlp"])
    assert len(qualified.masks) == 11 and "model.layers.0.mlp.up_proj.weight" in qualified.masks
    with pytest.raises(InvalidParameterError, match="names 'mlp.fc1', which is no linear layer.*'model.layers'"):
        prune_oneshot(model, calibration(), method="wanda", sparsity=0.5, ignore=["mlp.fc1"])


def test_nm_leaves_layers_whose_input_dim_does_not_fit_dense_and_says_which() -> None:
    with pytest.warns(PrunekitWarning, match=r"left 12 layer\(s\) dense: input dim not a multiple of m=3"):
        pruned, result = prune_oneshot(tiny_decoder("llama"), calibration(), method="wanda", nm=(1, 3))
    assert sorted(result.masks) == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    assert check_nm(pruned.model.layers[1].mlp.down_proj.weight, 1, 3)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_padding_marked_by_the_attention_mask_does_not_count(kind: str) -> None:
    model = tiny_decoder(kind)
    ids = calibration(batches=1)[0]  # (2, 8)
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # right padding: causal prefix unchanged
    mask = torch.cat([torch.ones(2, 8), torch.zeros(2, 3)], dim=1).long()
    plain, _ = prune_oneshot(model, [{"input_ids": ids}], method="sparsegpt", sparsity=0.5)
    masked, _ = prune_oneshot(model, [{"input_ids": padded, "attention_mask": mask}], method="sparsegpt", sparsity=0.5)
    unmasked, _ = prune_oneshot(model, [{"input_ids": padded}], method="sparsegpt", sparsity=0.5)
    weights = {n: p for n, p in plain.named_parameters() if p.dim() == 2}
    other = dict(masked.named_parameters())
    assert all(torch.allclose(p, other[n], atol=1e-5) for n, p in weights.items())
    counted = dict(unmasked.named_parameters())  # the pad tokens in the statistics change the result
    assert not all(torch.allclose(p, counted[n], atol=1e-5) for n, p in weights.items())


class _NoCacheKeyword(nn.Module):
    """A wrapper whose forward does not take ``use_cache`` (like prunekit's TextModel)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids).logits


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_wrapper_without_use_cache_prunes_like_the_bare_model(kind: str) -> None:
    """Caching is switched off inside the wrapper too: a KV cache recorded for a block would grow
    each time the block is re-run (a mask of T keys against 2T), and is back on afterwards."""
    bare = tiny_decoder(kind)
    bare.config.use_cache = True
    wrapped = _NoCacheKeyword(copy.deepcopy(bare))
    batches = calibration()
    want, _ = prune_oneshot(bare, batches, method="wanda", sparsity=0.5)
    got, _ = prune_oneshot(wrapped, batches, method="wanda", sparsity=0.5)
    for (name, w), (_, g) in zip(want.state_dict().items(), got.inner.state_dict().items()):
        assert torch.equal(w, g), name
    assert wrapped.inner.config.use_cache is True
