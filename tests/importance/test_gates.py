"""Per-sample unit gates: statistics against the chain rule by hand, and against real removals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.dependency import build_graph
from prunekit.dependency.groups import PruningPlan
from prunekit.errors import PrunekitWarning
from prunekit.importance import (
    DegenerateScoresError,
    GateFisher,
    GateOBD,
    GateTaylor,
    OutputSensitivity,
    TaylorFirstOrder,
    TaylorSecondOrder,
    collect,
    make_criterion,
    score_groups,
)
from prunekit.importance.collect import _prepare_gates
from prunekit.models import DigitsCNN
from prunekit.pruning.surgery import zero_plan

X2 = torch.tensor([[1.0, -1.0], [-1.0, 0.5]])  # two samples in ONE batch
C2 = torch.tensor([[1.0, 2.0], [-1.0, 1.0]])


def per_sample_linear(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (y * c).sum(1)  # (N,) one loss per sample


def hand_gate_grads(model) -> np.ndarray:
    """dL_n/dgate_u = relu(h_n)_u * (W2^T c_n)_u for the gate on fc2's input, numpy chain rule."""
    w1 = model.fc1.weight.detach().numpy().astype(np.float64)
    b1 = model.fc1.bias.detach().numpy().astype(np.float64)
    w2 = model.fc2.weight.detach().numpy().astype(np.float64)
    rows = []
    for x, c in zip(X2.numpy().astype(np.float64), C2.numpy().astype(np.float64)):
        r = np.maximum(w1 @ x + b1, 0)  # (3,) what fc2 reads
        rows.append(r * (w2.T @ c))
    return np.stack(rows)  # (N, 3)


@pytest.mark.parametrize("loss", [per_sample_linear, lambda y, c: per_sample_linear(y, c).mean()],
                         ids=["per-sample losses", "batch-mean loss"])
def test_per_sample_gate_gradients_match_the_chain_rule(two_layer, hidden_group, loss):
    ctx = collect(two_layer, [(X2, C2)], needs={"gates"}, loss_fn=loss, groups=[hidden_group])
    g = hand_gate_grads(two_layer)  # (2, 3); by hand: r = [3.1, 0, 0], [0, 0, 3.8]; W2^T c = [-1, 2, 2], [-2, 1, -2]
    np.testing.assert_allclose(g, [[-3.1, 0.0, 0.0], [0.0, 0.0, -7.6]], rtol=1e-6)
    stats = ctx.gates[hidden_group.id]
    assert stats.samples == 2 and stats.batches == 1 and stats.sites == ("consumer:fc2",)
    np.testing.assert_allclose(stats.g_sum.numpy(), g.sum(0), rtol=1e-6)
    np.testing.assert_allclose(stats.g2_sum.numpy(), (g ** 2).sum(0), rtol=1e-6)
    np.testing.assert_allclose(stats.batch_mean_sq.numpy(), g.mean(0) ** 2, rtol=1e-6)
    np.testing.assert_allclose(GateTaylor("batch")(hidden_group, ctx).numpy(), g.mean(0) ** 2, rtol=1e-6)
    np.testing.assert_allclose(GateTaylor()(hidden_group, ctx).numpy(), (g ** 2).mean(0), rtol=1e-6)
    np.testing.assert_allclose(GateFisher()(hidden_group, ctx).numpy(), 0.5 * (g ** 2).mean(0), rtol=1e-6)
    np.testing.assert_allclose(TaylorFirstOrder()(hidden_group, ctx).numpy(), -g.mean(0), rtol=1e-6)


def test_taylor_accumulates_per_batch_squares(two_layer, hidden_group):
    """Two batches of one sample: per-batch Taylor averages (g_b)**2 over the batches (= per sample here)."""
    data = [(X2[:1], C2[:1]), (X2[1:], C2[1:])]
    ctx = collect(two_layer, data, needs={"gates"}, loss_fn=per_sample_linear, groups=[hidden_group])
    g = hand_gate_grads(two_layer)
    np.testing.assert_allclose(GateTaylor("batch")(hidden_group, ctx).numpy(), (g ** 2).mean(0), rtol=1e-6)
    assert ctx.gates[hidden_group.id].g_sum.shape == (3,)  # memory: one value per unit, whatever the batches
    with pytest.raises(Exception, match="'accumulate' parameter of GateTaylor must be 'batch' or 'sample'"):
        GateTaylor("epoch")


class Linear2(nn.Module):
    """fc1 (2 -> 3) -> ReLU -> fc2 (3 -> 3, orthogonal columns): the gate Hessian is diagonal."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2, 3), nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.5], [-3.0, 1.0]]))
            self.fc1.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
            self.fc2.weight.copy_(torch.diag(torch.tensor([1.0, 2.0, 3.0])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_teacher_distance_has_zero_first_order_and_obd_ranks_by_curvature():
    """Loss = |y - y_teacher|^2 at the teacher itself: every gate gradient is 0, taylor refuses, obd
    gives 0.5 * E_n[2 * r_nu^2 * |W2[:, u]|^2] exactly (diagonal Hessian: Hutchinson is exact)."""
    model = Linear2()
    graph = build_graph(model, X2)
    (group,) = graph.prunable_groups()
    with torch.no_grad():
        teacher = model(X2)
    dist = lambda y, t: ((y - t) ** 2).sum(1)  # noqa: E731
    ctx = collect(model, [(X2, teacher)], needs={"gates", "gate_hessian"}, loss_fn=dist, groups=[group])
    assert float(ctx.gates[group.id].g2_sum.abs().max()) == 0.0
    with pytest.raises(DegenerateScoresError, match=f"group '{group.id}' the same score 0: every per-sample gate "
                                                    "gradient is exactly 0.*use criterion 'obd'"):
        score_groups([group], ctx, make_criterion("taylor"))
    r = torch.relu(model.fc1(X2)).detach().double()  # (2, 3)
    expected = 0.5 * (2 * r ** 2 * torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)).mean(0)
    scores, _ = score_groups([group], ctx, GateOBD())
    torch.testing.assert_close(scores[group.id], expected.float())
    torch.testing.assert_close(TaylorSecondOrder()(group, ctx), expected.float())  # first-order term is 0
    # Gauss-Newton on the outputs, no loss: 0.5 E_n |dy_n/dg_u|^2 = 0.5 E_n[r_nu^2 W2_uu^2] (one output per unit:
    # the Rademacher projection is exact), half the curvature of this sum-of-squares distance
    ggn = collect(model, [(X2, None)], needs={"gate_ggn"}, groups=[group], loss_fn=lambda *_: 1 / 0)
    torch.testing.assert_close(OutputSensitivity()(group, ggn), (expected / 2).float())
    # the curvature is the exact loss increase here: the loss is quadratic in the gate
    for u in range(3):
        zeroed = zero_plan(model, graph, PruningPlan({group.id: (u,)}))
        with torch.no_grad():
            increase = dist(zeroed(X2), teacher).mean()
        assert float(increase) == pytest.approx(float(expected[u]), rel=1e-5)


def test_first_order_taylor_equals_the_oracle_when_removal_is_linear(two_layer):
    """Loss linear in the output, unit removed after its ReLU: the loss change is exactly -E_n[g_n]."""
    graph = build_graph(two_layer, X2)
    (group,) = graph.prunable_groups()
    ctx = collect(two_layer, [(X2, C2)], needs={"gates"}, loss_fn=per_sample_linear, groups=[group])
    predicted = TaylorFirstOrder()(group, ctx)
    with torch.no_grad():
        dense = per_sample_linear(two_layer(X2), C2).mean()
        oracle = torch.stack([per_sample_linear(zero_plan(two_layer, graph, PruningPlan({group.id: (u,)}))(X2), C2).mean()
                              - dense for u in range(group.size)])
    torch.testing.assert_close(predicted, oracle)
    assert bool((oracle != 0).any())


def test_a_zero_gate_is_the_removal_on_a_residual_cnn():
    """Gating the consumers' inputs at 0 gives the same outputs as zero_plan, for every group of
    DigitsCNN (BatchNorm after the producer, a residual sum coupling two producers, flatten)."""
    torch.manual_seed(0)
    model = DigitsCNN(width=4).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    x = torch.randn(3, 1, 8, 8)
    graph = build_graph(model, x)
    groups = graph.prunable_groups()
    recorder, handles = _prepare_gates(model, x, groups, True, False)
    try:
        for group in groups:
            for u in (0, group.size - 1):
                gate = torch.ones(3, group.size)
                gate[:, u] = 0
                recorder.gates = {group.id: gate}
                with torch.no_grad():
                    gated = model(x)
                for h in handles:
                    h.remove()
                with torch.no_grad():
                    removed = zero_plan(model, graph, PruningPlan({group.id: (u,)}))(x)
                handles = recorder.install(model)
                torch.testing.assert_close(gated, removed, rtol=1e-5, atol=1e-5)
    finally:
        for h in handles:
            h.remove()


def test_pruner_with_a_teacher_distance_refuses_taylor_and_prunes_by_output_sensitivity():
    from prunekit.models.builtin import MLP
    from prunekit.pruning.pruner import StructuredPruner

    torch.manual_seed(0)
    model = MLP(in_features=8, hidden=(16,), num_classes=3).eval()
    x = torch.randn(32, 8)
    with torch.no_grad():
        data = [(x, model(x))]  # (inputs, dense outputs): the loss is 0 with 0 gradient at the dense model
    dist = lambda y, t: ((y - t) ** 2).sum(1)  # noqa: E731
    with pytest.raises(DegenerateScoresError, match="net.1.weight:0.*gate gradient is exactly 0"):
        StructuredPruner(criterion="taylor", ratio=0.5, loss_fn=dist).fit(model, x[:1], data)
    pruner = StructuredPruner(criterion="output_sensitivity", ratio=0.5, round_to=None).fit(model, x[:1], data)
    (group,) = pruner.graph_.prunable_groups()
    with torch.no_grad():  # what removing each unit alone costs
        oracle = torch.stack([dist(zero_plan(model, pruner.graph_, PruningPlan({group.id: (u,)}))(x), data[0][1]).mean()
                              for u in range(group.size)])
    ranks = lambda t: t.argsort().argsort().double()  # noqa: E731
    rho = float(torch.corrcoef(torch.stack([ranks(pruner.scores_[group.id]), ranks(oracle)]))[0, 1])
    assert rho > 0.9  # one projection over 32 samples ranks like the exact loss increase
    assert pruner.transform(model).net[1].out_features == 8
    # the loss is quadratic in the last hidden layer's gates and its gradient is 0: the exact gate
    # Hessian diagonal (16 units <= 64) is twice the removal cost, so obd is the oracle itself
    obd = StructuredPruner(criterion="obd", ratio=0.5, round_to=None, loss_fn=dist).fit(model, x[:1], data)
    torch.testing.assert_close(obd.scores_[group.id].double(), oracle.double(), rtol=1e-4, atol=1e-6)


def test_gate_hessian_diagonal_is_exact_for_small_groups(two_layer):
    """Loss |W2 (gate * r_n) - t_n|^2 has gate Hessian 2 diag(r_n) W2^T W2 diag(r_n): diagonal entries
    2 r_nu^2 |W2[:, u]|^2, whatever t_n. fc2's columns 0 and 2 are not orthogonal (dot 2), so one
    Hutchinson probe carries cross terms; the exact diagonal does not."""
    graph = build_graph(two_layer, X2)
    (group,) = graph.prunable_groups()
    dist = lambda y, t: ((y - t) ** 2).sum(1)  # noqa: E731
    x = torch.tensor([[-1.0, -2.0], [1.0, -1.0]])
    data = [(x, C2)]
    r = torch.relu(two_layer.fc1(x)).detach().double()  # (2, 3): [3.1, 0, 1.3], [3.1, 0, 0]
    col_sq = torch.tensor([2.0, 1.0, 4.0], dtype=torch.float64)  # |W2[:, u]|^2
    expected = 0.5 * (2 * r ** 2 * col_sq).mean(0)  # obd = 0.5 E_n[H_n,uu] = [19.22, 0, 3.38]
    torch.testing.assert_close(expected, torch.tensor([19.22, 0.0, 3.38], dtype=torch.float64))
    exact = collect(two_layer, data, needs={"gates", "gate_hessian"}, loss_fn=dist, groups=[group])
    assert exact.gates[group.id].hessian_exact
    torch.testing.assert_close(GateOBD()(group, exact), expected.float())
    probed = collect(two_layer, data, needs={"gates", "gate_hessian"}, loss_fn=dist, groups=[group],
                     exact_hessian_units=0, seed=0)
    assert not probed.gates[group.id].hessian_exact
    assert not torch.allclose(GateOBD()(group, probed), expected.float())
    with pytest.raises(Exception, match="'exact_hessian_units' parameter of collect must be an int >= 0"):
        collect(two_layer, data, needs={"gates", "gate_hessian"}, loss_fn=dist, groups=[group], exact_hessian_units=-1)
    # past its time budget (projected from the first batch's forward) the exact diagonal gives way to probes
    with pytest.warns(PrunekitWarning, match=r"obd: the exact gate Hessian would take about .* \(3 double backwards per batch, 1 batches\); using Hutchinson"):
        over = collect(two_layer, data, needs={"gates", "gate_hessian"}, loss_fn=dist, groups=[group],
                       exact_hessian_seconds=0.0, seed=0)
    assert not over.gates[group.id].hessian_exact
    torch.testing.assert_close(GateOBD()(group, over), GateOBD()(group, probed))  # same probes, same seed
