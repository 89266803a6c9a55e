"""trace_ops: one eager run, every tensor op shown with the module executing it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import ConvBNResidual
from prunekit.dependency import build_graph
from prunekit.errors import TracingError
from prunekit.tracing import iter_tensors, trace_ops


def _record(model: nn.Module, x) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    trace_ops(model, x, lambda name, func, args, kwargs, out, module: seen.append((name, module)))
    return seen


def test_ops_are_attributed_to_their_module_and_flags_restored() -> None:
    model = ConvBNResidual().train()
    seen = _record(model, torch.randn(1, 3, 4, 4))
    assert ("conv2d", "stem") in seen and ("batch_norm", "bn") in seen and ("linear", "head") in seen
    assert ("add", "") in seen or ("__add__", "") in seen  # the residual add runs in the root forward
    assert model.training and model.bn.training  # eval during the trace, restored after
    assert model.bn.num_batches_tracked.item() == 0  # eval mode: statistics untouched


class _DataDependent(nn.Module):
    """Control flow on tensor values and a keyword-only forward: torch.fx cannot trace this."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, *, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        h = self.a(x) if x.sum() > 0 else self.b(x)
        return self.out(torch.relu(h) * scale)


def test_data_dependent_branch_traces_the_path_taken() -> None:
    model = _DataDependent()
    graph = build_graph(model, {"x": torch.ones(1, 4)})
    tensors = {s.tensor for g in graph.groups for s in g.slots}
    assert "a.weight" in tensors and "b.weight" not in tensors
    (group,) = [g for g in graph.prunable_groups()]
    assert {(s.tensor, s.axis) for s in group.slots} == {("a.weight", 0), ("a.bias", 0), ("out.weight", 1)}


def test_model_that_cannot_run_raises_tracing_error() -> None:
    with pytest.raises(TracingError, match=r"model ConvBNResidual could not run on the example inputs \(RuntimeError"):
        build_graph(ConvBNResidual(), torch.randn(1, 5, 4, 4))


def test_iter_tensors_walks_nested_outputs() -> None:
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    assert [t.numel() for t in iter_tensors({"x": (a, [b]), "y": c, "z": None})] == [1, 2, 3]


def test_weight_transpose_keeps_producer_roles() -> None:
    class T(nn.Module):  # Falcon-style linear: x @ W.T
        def __init__(self) -> None:
            super().__init__()
            self.w1, self.w2 = nn.Parameter(torch.randn(6, 4)), nn.Parameter(torch.randn(3, 6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x @ self.w1.T) @ self.w2.T

    graph = build_graph(T(), torch.randn(2, 4))
    (group,) = graph.prunable_groups()
    assert {(s.tensor, s.axis, s.role) for s in group.slots} == {("w1", 0, "out"), ("w2", 1, "in")}


def test_train_mode_trace_sees_train_paths_and_changes_nothing() -> None:
    model = ConvBNResidual().eval()
    torch.manual_seed(3)
    x = torch.randn(1, 3, 4, 4)
    rng = torch.get_rng_state()
    model.bn.running_mean.fill_(0.5)
    seen: list[tuple[str, bool]] = []
    trace_ops(model, x,  # batch of one: BatchNorm reads its running statistics
              lambda name, func, args, kwargs, out, module: seen.append((name, model.training)), training=True)
    assert ("conv2d", True) in seen  # the forward ran with self.training set
    assert not model.training and not model.bn.training
    assert model.bn.num_batches_tracked.item() == 0 and torch.all(model.bn.running_mean == 0.5)
    assert torch.equal(torch.get_rng_state(), rng)
