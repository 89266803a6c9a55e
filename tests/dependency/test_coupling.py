"""Coupling rules, one fixture model per rule: the right slices go together, and removing them
from the model gives the same outputs as zeroing them (exact groups), or at least runs (inexact)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models import RULE_MODELS, Opaque, check_prune, make_input, outputs, randomize_norms
from prunekit.dependency import PruningPlan, build_graph
from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import InvalidParameterError
from prunekit.pruning.surgery import PruningVerificationError, apply_plan

torch.set_num_threads(1)


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    cls, shape, kind = RULE_MODELS[name]
    torch.manual_seed(0)
    return randomize_norms(cls()).eval(), make_input(shape, kind)


def _slots(group: ChannelGroup) -> set[tuple[str, int, str]]:
    return {(s.tensor, s.axis, s.role) for s in group.slots}


def _group_with(graph, tensor: str, axis: int) -> ChannelGroup:
    found = [g for g in graph.groups if any(s.tensor == tensor and s.axis == axis for s in g.slots)]
    assert len(found) == 1, f"{tensor}[{axis}] is in {len(found)} groups"
    return found[0]


@pytest.mark.parametrize("name", [n for n in RULE_MODELS if n != "torch_mha"])
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_exact_groups_zeroed_equals_removed(name: str, ratio: float) -> None:
    model, x = _model(name)
    check = check_prune(model, x, ratio, exact_only=True, seed=int(ratio * 10))
    assert check.exact
    assert check.max_diff <= 1e-4
    if check.plan.removed:
        assert check.params_after < check.params_before


@pytest.mark.parametrize("name", list(RULE_MODELS))
def test_ratio_zero_leaves_outputs_identical(name: str) -> None:
    model, x = _model(name)
    graph = build_graph(model, x)
    pruned, record = apply_plan(model, graph, PruningPlan({g.id: () for g in graph.prunable_groups()}))
    assert record.kept == {} and record.attributes == {}
    for a, b in zip(outputs(model, x), outputs(pruned, x)):
        assert torch.equal(a, b)


def test_residual_and_gate_share_one_channel_set_with_bn_stats() -> None:
    model, x = _model("conv_bn_residual")
    graph = build_graph(model, x)
    (group,) = graph.prunable_groups()
    assert group.size == 8
    assert _slots(group) == {
        ("stem.weight", 0, "out"), ("stem.bias", 0, "out"), ("a.weight", 0, "out"), ("a.bias", 0, "out"),
        ("b.weight", 0, "out"), ("b.bias", 0, "out"), ("bn.weight", 0, "norm"), ("bn.bias", 0, "norm"),
        ("bn.running_mean", 0, "norm"), ("bn.running_var", 0, "norm"), ("a.weight", 1, "in"),
        ("b.weight", 1, "in"), ("head.weight", 1, "in"),
    }
    pruned, record = apply_plan(model, graph, PruningPlan({group.id: (1, 6)}))
    keep = [0, 2, 3, 4, 5, 7]
    assert record.kept["bn.running_var"] == {0: keep}
    assert torch.equal(pruned.a.weight, model.a.weight[keep][:, keep])
    assert torch.equal(pruned.bn.running_mean, model.bn.running_mean[keep])
    assert pruned.bn.num_features == 6 and pruned.a.in_channels == 6 and pruned.head.in_features == 6


def test_concat_offsets_and_chunk_pairs() -> None:
    model, x = _model("concat_split")
    graph = build_graph(model, x)
    a = _group_with(graph, "a.weight", 0)
    b = _group_with(graph, "b.weight", 0)
    mix_in_a = next(s for s in a.slots if s.tensor == "mix.weight")
    mix_in_b = next(s for s in b.slots if s.tensor == "mix.weight")
    assert mix_in_a.unit_of_position.tolist() == [0, 1, 2, 3, 4, 5, -1, -1, -1, -1]
    assert mix_in_b.unit_of_position.tolist() == [-1] * 6 + [0, 1, 2, 3]
    mix = _group_with(graph, "mix.weight", 0)  # chunk(2): output i and i + 4 are one unit
    assert mix.size == 4
    out = next(s for s in mix.slots if s.tensor == "mix.weight" and s.axis == 0)
    assert out.unit_of_position.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    pruned, _ = apply_plan(model, graph, PruningPlan({b.id: (2,), mix.id: (0,)}))
    assert pruned.mix.weight.shape == (6, 9, 1, 1)
    assert torch.equal(pruned.mix.weight, model.mix.weight[[1, 2, 3, 5, 6, 7]][:, [0, 1, 2, 3, 4, 5, 6, 7, 9]])


def test_depthwise_and_grouped_convs_update_groups() -> None:
    model, x = _model("grouped_depthwise")
    graph = build_graph(model, x)
    dw = _group_with(graph, "dw.weight", 0)
    stem = next(s for s in dw.slots if s.tensor == "stem.weight" and s.axis == 0)
    dwo = next(s for s in dw.slots if s.tensor == "dw.weight")
    # depthwise x2: input j feeds outputs 2j, 2j+1; the grouped conv (4 groups of 4 inputs) ties
    # dw outputs p and p+4k together, so dw classes {0,1} / {2,3} (mod 4) are the 2 units, and
    # stem j (-> dw 2j mod 4) alternates between them
    assert dw.size == 2
    assert stem.unit_of_position.tolist() == [0, 1] * 4
    assert dwo.unit_of_position.tolist() == [0, 0, 1, 1] * 4
    grouped = _group_with(graph, "grouped.weight", 0)
    assert grouped.size == 3  # 3 outputs per group, same index removed in all 4 groups
    check = check_prune(model, x, 0.5)
    assert check.max_diff <= 1e-4
    p = check.pruned
    assert (p.dw.in_channels, p.dw.out_channels, p.dw.groups) == (4, 8, 4)
    assert (p.grouped.in_channels, p.grouped.out_channels, p.grouped.groups) == (8, 8, 4)
    assert p.bn.num_features == 8


def test_transposed_conv_and_group_norm_groups() -> None:
    model, x = _model("transposed_conv")
    graph = build_graph(model, x)
    down = _group_with(graph, "down.weight", 0)
    assert ("up.weight", 0, "in") in _slots(down)  # ConvTranspose weight is [in, out, k, k]
    norm = _group_with(graph, "up.weight", 1)
    assert norm.unit == "group" and norm.size == 3
    assert {("up.weight", 1, "out"), ("norm.weight", 0, "norm"), ("out.weight", 1, "in")} <= _slots(norm)
    pruned, _ = apply_plan(model, graph, PruningPlan({norm.id: (1,), down.id: (0, 5)}))
    assert pruned.norm.num_groups == 2 and pruned.norm.num_channels == 4
    assert (pruned.up.in_channels, pruned.up.out_channels) == (6, 4)
    check = check_prune(model, x, 0.4)
    assert check.exact and check.max_diff <= 1e-4


def test_flatten_into_linear_expands_indices() -> None:
    model, x = _model("flatten_linear")
    graph = build_graph(model, x)
    group = _group_with(graph, "conv.weight", 0)
    fc_in = next(s for s in group.slots if s.tensor == "fc.weight")
    assert fc_in.axis == 1 and fc_in.unit_of_position.tolist() == (np.arange(96) // 16).tolist()
    pruned, _ = apply_plan(model, graph, PruningPlan({group.id: (2,)}))
    assert pruned.fc.in_features == 80
    assert torch.equal(pruned.fc.weight, torch.cat([model.fc.weight[:, :32], model.fc.weight[:, 48:]], 1))


def test_channels_last_layernorm_is_inexact_and_says_so() -> None:
    model, x = _model("channels_last")
    graph = build_graph(model, x)
    hidden = _group_with(graph, "stem.weight", 0)
    assert {("gamma", 0, "param"), ("norm.weight", 0, "norm"), ("dw.weight", 0, "out"), ("fc2.weight", 0, "out")} <= _slots(hidden)
    assert not hidden.exact  # LayerNorm statistics over the pruned axis change
    assert hidden.inexact_reason.startswith("layer_norm statistics over the axis (op 'layer_norm' in module 'norm')")
    assert _group_with(graph, "fc1.weight", 0).exact
    # inexact: only check that the pruned model runs with the same output shape
    pruned, _ = apply_plan(model, graph, PruningPlan({hidden.id: (0, 3)}))
    assert pruned.norm.normalized_shape == (6,) and pruned.gamma.shape == (6,)
    assert outputs(pruned, x)[0].shape == (2, 3)


def test_attention_heads_pruned_whole_and_count_updated() -> None:
    model, x = _model("tokens_attention")
    graph = build_graph(model, x)
    heads = _group_with(graph, "attn.q.weight", 0)
    assert heads.unit == "head" and heads.size == 4
    assert {("attn.q.weight", 0, "out"), ("attn.k.weight", 0, "out"), ("attn.v.weight", 0, "out"),
            ("attn.o.weight", 1, "in")} <= _slots(heads)
    q = next(s for s in heads.slots if s.tensor == "attn.q.weight")
    assert q.unit_of_position.tolist() == np.repeat(np.arange(4), 4).tolist()
    hidden = _group_with(graph, "patch.weight", 0)  # class token and positional embedding follow
    assert {("cls", 2, "param"), ("pos", 2, "param")} <= _slots(hidden)
    check = check_prune(model, x, 0.5, exact_only=True)
    assert check.max_diff <= 1e-4
    # head_dim == num_heads == 4 here: only the head count may change (a bug once changed both)
    pruned, _ = apply_plan(model, graph, PruningPlan({heads.id: (1,)}))
    assert (pruned.attn.num_heads, pruned.attn.head_dim) == (3, 4)
    assert pruned.attn.q.out_features == 12 and pruned.attn.o.in_features == 12


def test_embedding_and_glu_halves() -> None:
    model, x = _model("embedding_glu")
    graph = build_graph(model, x)
    hidden = _group_with(graph, "emb.weight", 1)
    assert ("emb.weight", 1, "out") in _slots(hidden) and ("lm.weight", 1, "in") in _slots(hidden)
    glu = _group_with(graph, "fc.weight", 0)
    fc = next(s for s in glu.slots if s.tensor == "fc.weight")
    assert fc.unit_of_position.tolist() == list(range(12)) * 2
    pruned, _ = apply_plan(model, graph, PruningPlan({hidden.id: (0, 1, 2)}))
    assert pruned.emb.embedding_dim == 9 and pruned.emb.weight.shape == (30, 9)


def test_unknown_op_is_refused_with_module_op_and_suggestion() -> None:
    torch.manual_seed(0)
    model, x = Opaque().eval(), torch.randn(1, 3, 6, 6)
    graph = build_graph(model, x)
    group = _group_with(graph, "conv.weight", 0)
    assert not group.prunable
    assert "fft_fft" in group.reason and "module '<root>'" in group.reason and "ignore that layer" in group.reason
    assert any("fft_fft" in k for k in graph.unknown_ops)
    with pytest.raises(InvalidParameterError, match=r"group 'conv.weight:0' is not prunable: op 'fft_fft'"):
        apply_plan(model, graph, PruningPlan({group.id: (0,)}))


class _StaleCount(nn.Module):
    """Reshapes by a stored channel count: the engine cannot know, surgery verification must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.channels = 8
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).reshape(x.shape[0], self.channels, -1)  # (B, 8, H*W) by a literal
        return self.head(y.mean(-1))


def test_broken_surgery_is_refused_and_model_untouched() -> None:
    torch.manual_seed(0)
    model, x = _StaleCount().eval(), torch.randn(1, 3, 4, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = build_graph(model, x)
    group = _group_with(graph, "conv.weight", 0)
    with pytest.raises(PruningVerificationError, match=r"pruned model failed to run .*'ignore'"):
        apply_plan(model, graph, PruningPlan({group.id: (0,)}), inplace=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_plan_validation_messages() -> None:
    model, x = _model("conv_bn_residual")
    graph = build_graph(model, x)
    gid = graph.prunable_groups()[0].id
    with pytest.raises(InvalidParameterError, match=r"distinct units in \[0, 8\)"):
        apply_plan(model, graph, PruningPlan({gid: (8,)}))
    with pytest.raises(InvalidParameterError, match="at least 1 must stay"):
        apply_plan(model, graph, PruningPlan({gid: tuple(range(8))}))
    with pytest.raises(InvalidParameterError, match="unknown group 'nope'"):
        apply_plan(model, graph, PruningPlan({"nope": (0,)}))


def test_explain_lists_groups_and_unknown_ops() -> None:
    model, x = Opaque().eval(), torch.randn(1, 3, 6, 6)
    text = build_graph(model, x).explain()
    assert "conv.weight:0: 8 channels, frozen" in text and "unknown op fft_fft in '<root>'" in text
