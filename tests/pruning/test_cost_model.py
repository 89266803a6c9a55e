"""Plans priced from the graph equal the counts of the really pruned models; allocate verifies them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import ConvBNResidual, GroupedDepthwise, HeadAttention, make_input
from prunekit.dependency import build_graph
from prunekit.dependency.groups import PruningPlan
from prunekit.errors import InvalidParameterError
from prunekit.evaluation.complexity import count_macs, count_params
from prunekit.models import DigitsCNN
from prunekit.pruning.allocate import allocate
from prunekit.pruning.cost_model import GraphCostModel
from prunekit.pruning.surgery import apply_plan

torch.set_num_threads(1)


def _random_plans(graph, n: int, seed: int = 0) -> list[PruningPlan]:
    rng = np.random.default_rng(seed)
    plans = []
    for _ in range(n):
        removed = {}
        for g in graph.prunable_groups():
            k = int(rng.integers(0, g.size - max(g.min_units, 1) + 1))
            if k:
                removed[g.id] = tuple(sorted(rng.choice(g.size, size=k, replace=False).tolist()))
        plans.append(PruningPlan(removed))
    return plans


CASES = {
    "digits_cnn": (lambda: DigitsCNN(width=8), lambda: torch.randn(2, 1, 8, 8)),
    "conv_bn_residual": (ConvBNResidual, lambda: make_input((2, 3, 8, 8), "pixels")),
    "grouped_depthwise": (GroupedDepthwise, lambda: make_input((2, 3, 8, 8), "pixels")),
    "head_attention": (lambda: HeadAttention(16, 4), lambda: torch.randn(2, 5, 16)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("target", ["params", "macs"])
def test_graph_price_equals_the_pruned_model_count(name: str, target: str) -> None:
    torch.manual_seed(0)
    factory, inputs = CASES[name]
    model, x = factory().eval(), inputs()
    graph = build_graph(model, x)
    price = GraphCostModel(model, graph, target=target, example_inputs=x)
    count = (lambda m: count_params(m)) if target == "params" else (lambda m: count_macs(m, x).total)
    assert price(PruningPlan({})) == count(model)
    for plan in _random_plans(graph, 4):
        pruned, _ = apply_plan(model, graph, plan)
        assert price(plan) == pytest.approx(count(pruned), rel=1e-12, abs=1e-6), plan.removed


@pytest.mark.transformers
def test_graph_price_is_exact_for_heads_and_ffn_of_bert() -> None:
    pytest.importorskip("transformers")
    from hf_tiny import VOCAB, tiny_bert

    model = tiny_bert()
    x = {"input_ids": torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0)),
         "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    graph = build_graph(model, x)
    price = GraphCostModel(model, graph, target="macs", example_inputs=x)
    for plan in _random_plans(graph, 4, seed=1):
        pruned, _ = apply_plan(model, graph, plan)
        assert price(plan) == pytest.approx(count_macs(pruned, x).total, rel=1e-12)


def _scores(graph) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {grp.id: torch.rand(grp.size, generator=g) for grp in graph.prunable_groups()}


@pytest.mark.parametrize("scope", ["global", "local"])
def test_allocate_on_the_estimate_picks_the_plan_exact_pricing_picks(scope: str) -> None:
    model, x = DigitsCNN(width=16).eval(), torch.randn(1, 1, 8, 8)
    graph = build_graph(model, x)
    calls = {"measure": 0}

    def measure(plan: PruningPlan) -> float:
        calls["measure"] += 1
        return float(count_macs(apply_plan(model, graph, plan, verify=False)[0] if plan.removed else model, x).total)

    exact = allocate(graph.groups, _scores(graph), ratio=0.6, scope=scope, target="macs", measure=measure, round_to=None)
    exact_calls, calls["measure"] = calls["measure"], 0
    fast = allocate(graph.groups, _scores(graph), ratio=0.6, scope=scope, target="macs", measure=measure,
                    round_to=None, estimate=GraphCostModel(model, graph, target="macs", example_inputs=x))
    assert fast.removed == exact.removed
    assert fast.meta["achieved"] == pytest.approx(exact.meta["achieved"], rel=1e-12)
    assert fast.meta["pricing"] == "graph estimate, verified"
    assert calls["measure"] == 1 < exact_calls  # one real re-count instead of one per bisection step


def test_allocate_re_counts_when_the_estimate_is_wrong() -> None:
    model, x = DigitsCNN(width=16).eval(), torch.randn(1, 1, 8, 8)
    graph = build_graph(model, x)
    price = GraphCostModel(model, graph, target="macs", example_inputs=x)

    def measure(plan: PruningPlan) -> float:
        return float(count_macs(apply_plan(model, graph, plan, verify=False)[0] if plan.removed else model, x).total)

    exact = allocate(graph.groups, _scores(graph), ratio=0.5, scope="global", target="macs", measure=measure)
    wrong = allocate(graph.groups, _scores(graph), ratio=0.5, scope="global", target="macs", measure=measure,
                     estimate=lambda plan: price(plan) * (1.0 if not plan.removed else 0.8))
    assert wrong.removed == exact.removed
    assert wrong.meta["pricing"].startswith("re-counted (graph estimate was off by +")


def test_cost_model_checks_its_target() -> None:
    model, x = DigitsCNN(width=8), torch.randn(1, 1, 8, 8)
    graph = build_graph(model, x)
    with pytest.raises(InvalidParameterError, match="'target' parameter of GraphCostModel"):
        GraphCostModel(model, graph, target="latency")
    with pytest.raises(InvalidParameterError, match="needs example_inputs for target 'macs'"):
        GraphCostModel(model, graph, target="macs")
