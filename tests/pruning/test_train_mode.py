"""Train-mode paths: traced, pruned consistently and verified with a forward and a backward."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from models import AuxHead, ConvBNResidual, ratio_plan, train_step
from prunekit import StructuredPruner
from prunekit.dependency import build_graph
from prunekit.dependency.groups import PruningPlan
from prunekit.errors import InvalidParameterError, PrunekitWarning
from prunekit.pruning.surgery import PruningVerificationError, apply_plan, apply_record, plan_to_record, verify_pruned

torch.set_num_threads(1)


def test_train_only_head_is_pruned_with_its_producer() -> None:
    torch.manual_seed(0)
    model, x = AuxHead().eval(), torch.randn(2, 3, 8, 8)
    small = StructuredPruner(criterion="l2", ratio=0.5, target="channels", scope="local").fit(model, x).transform(model)
    assert small.c1.out_channels == 8 and small.aux.in_features == 8  # the aux head follows conv c1
    out = train_step(small, x)
    assert [tuple(t.shape) for t in out] == [(2, 10), (2, 10)]
    assert small.aux.weight.grad is not None and small.c1.weight.grad.shape == (8, 3, 3, 3)


def test_pruner_can_trace_eval_mode_only_and_says_so() -> None:
    torch.manual_seed(0)
    model, x = AuxHead().eval(), torch.randn(2, 3, 8, 8)
    pruner = StructuredPruner(criterion="l2", ratio=0.5, target="channels", scope="local", trace_train_mode=False)
    small = pruner.fit(model, x).transform(model)
    assert pruner.graph_.train_output_shapes is None and "train_mode=False" in pruner.graph_.train_note
    assert small.c1.out_channels == 8 and small(x).shape == (2, 10)  # eval mode works
    with pytest.raises(RuntimeError, match="mat1 and mat2"):  # the aux head was not seen: what the default guards
        train_step(small, x)
    with pytest.raises(InvalidParameterError, match="'trace_train_mode' parameter of StructuredPruner must be True or False"):
        StructuredPruner(trace_train_mode="no").fit(model, x)


def test_verification_fails_a_cut_that_breaks_only_train_mode() -> None:
    torch.manual_seed(0)
    model, x = AuxHead().eval(), torch.randn(2, 3, 8, 8)
    eval_only = build_graph(model, x, train_mode=False)  # blind to the aux head
    assert eval_only.train_output_shapes is None and "train_mode=False" in eval_only.train_note
    c1 = next(g for g in eval_only.prunable_groups() if g.id.startswith("c1.weight"))
    plan = PruningPlan({c1.id: tuple(range(8))})
    broken = apply_record(copy.deepcopy(model), plan_to_record(model, eval_only, plan))
    verify_pruned(broken, eval_only)  # eval mode alone does not see it
    with pytest.raises(PruningVerificationError, match="failed to run in train mode .*mat1 and mat2"):
        verify_pruned(broken, build_graph(model, x))


def test_verification_leaves_statistics_gradients_modes_and_rng_alone() -> None:
    torch.manual_seed(0)
    model, x = ConvBNResidual(), torch.randn(2, 3, 8, 8)
    graph = build_graph(model, x)
    assert graph.train_output_shapes == [(2, 5)] and graph.train_note == "" and graph.train_backward
    pruned, _ = apply_plan(model, graph, ratio_plan(graph, 0.5))
    pruned.bn.train()  # a mix of modes must come back as it was
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    rng = torch.get_rng_state()
    verify_pruned(pruned, graph)
    assert pruned.training is True and pruned.bn.training is True
    for k, v in pruned.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in pruned.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


class _TrainFails(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("this model is inference-only")
        return self.b(torch.relu(self.a(x)))


def test_model_that_cannot_train_is_traced_in_eval_with_a_warning() -> None:
    with pytest.warns(PrunekitWarning, match="train mode not traced.*inference-only"):
        graph = build_graph(_TrainFails(), torch.randn(2, 4))
    assert graph.train_output_shapes is None and "inference-only" in graph.train_note
    assert graph.prunable_groups()  # eval-mode pruning still works


class _NoBackward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor_divide(self.b(torch.relu(self.a(x))), 0.5)  # no derivative in torch


def test_model_without_backward_is_verified_forward_only() -> None:
    torch.manual_seed(0)
    model, x = _NoBackward(), torch.randn(2, 4)
    graph = build_graph(model, x)
    assert graph.train_output_shapes == [(2, 2)] and not graph.train_backward
    assert "backward fails" in graph.train_note and "floor_divide" in graph.train_note
    small = StructuredPruner(criterion="l2", ratio=0.5).fit(model, x).transform(model)  # the train forward is still checked
    assert small.a.out_features == 4 and all(p.grad is None for p in model.parameters())
