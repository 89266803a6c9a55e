"""Every HF family buildable offline from a tiny config: trace, prune 30%, prove equivalence.

Each model is first made to give outputs of order one (``order_one``: head re-drawn, BatchNorm
statistics from random inputs), then exact groups must give zeroed model == pruned model within
1e-4 of the output's own scale. Groups over which a
LayerNorm/RMSNorm computes statistics are ``exact=False`` (removing channels changes the mean
and variance): for those the test only checks that the pruned model runs with the same output
shapes in eval mode, trains (forward + backward in train mode) and has fewer parameters. The full
table with ONNX checks is benchmarks/zoo.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from models import HF_SPECS, build_hf, check_prune, order_one, output_scale, outputs, ratio_plan, train_step
from prunekit.pruning.surgery import apply_plan

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.transformers
torch.set_num_threads(1)


@pytest.mark.parametrize("name", list(HF_SPECS))
def test_hf_family_prunes_with_equivalence(name: str) -> None:
    model, inputs = build_hf(name)
    model = order_one(model, inputs)
    scale = output_scale(model, inputs)
    assert 0.1 < scale < 1e3, f"{name}: output scale {scale:.1e} would make the relative check vacuous"
    exact = check_prune(model, inputs, 0.3, exact_only=True)
    graph = exact.graph
    assert graph.prunable_groups(), graph.explain()
    assert graph.train_output_shapes is not None and graph.train_backward, graph.train_note
    if exact.plan.removed:
        assert exact.relative_diff <= 1e-4, f"{name}: zeroed vs pruned differ by {exact.relative_diff:.2e} of the scale"
    for group in graph.prunable_groups():
        if not group.exact:  # say so: statistics over the pruned axis are the only allowed change
            assert any(op in group.inexact_reason for op in ("layer_norm", "rms_norm", "mean", "pow", "norm")), \
                group.describe()
    plan = ratio_plan(graph, 0.3)  # every prunable group, exact or not: must run, same shapes
    pruned, _ = apply_plan(model, graph, plan)
    before, after = outputs(model, inputs), outputs(pruned, inputs)
    assert [t.shape for t in before] == [t.shape for t in after]
    trained = train_step(pruned, inputs)  # fine-tuning's step runs on the pruned model
    assert [tuple(t.shape) for t in trained] == graph.train_output_shapes
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_gqa_prunes_kv_heads_with_their_query_heads() -> None:
    model, inputs = build_hf("qwen2")  # 4 query heads share 2 key/value heads
    check = check_prune(model, inputs, 0.5, exact_only=True)
    heads = next(g for g in check.graph.prunable_groups() if g.unit == "head")
    assert heads.size == 2
    q = next(s for s in heads.slots if s.tensor.endswith("q_proj.weight"))
    k = next(s for s in heads.slots if s.tensor.endswith("k_proj.weight"))
    assert q.unit_of_position.tolist() == [0] * 16 + [1] * 16  # query heads 0,1 -> kv head 0
    assert k.unit_of_position.tolist() == [0] * 8 + [1] * 8
    assert check.max_diff <= 1e-4
    attn = check.pruned.model.layers[0].self_attn
    assert attn.q_proj.out_features == 16 and attn.k_proj.out_features == 8 and attn.head_dim == 8


def test_bert_heads_and_onnx_export() -> None:
    from prunekit.export.onnx import export_onnx, verify_onnx

    model, inputs = build_hf("bert")
    check = check_prune(model, inputs, 0.5, exact_only=True)
    assert check.max_diff <= 1e-4
    heads = next(g for g in check.graph.prunable_groups() if g.unit == "head")
    assert heads.size == 4 and len(check.plan.removed[heads.id]) == 2

    class Logits(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.m(input_ids=input_ids).logits

    wrapped = Logits(check.pruned).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(wrapped, inputs, Path(tmp) / "bert.onnx", dynamic_batch=False)
        assert verify_onnx(wrapped, path, inputs, atol=1e-4) <= 1e-4
