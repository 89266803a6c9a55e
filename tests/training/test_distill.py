from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.training import FeatureMatcher, distillation_loss, regression_distillation_loss


def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def test_distillation_loss_matches_hand_computation() -> None:
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 1.0, 0.0], [1.0, 0.5, 2.5]]
    y = [1, 2]
    temperature, alpha = 2.0, 0.7
    kl = ce = 0.0
    for si, ti, yi in zip(s, t, y):
        ps = _softmax([v / temperature for v in si])
        pt = _softmax([v / temperature for v in ti])
        kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
        ce += -math.log(_softmax(si)[yi])
    expected = alpha * temperature**2 * kl / 2 + (1 - alpha) * ce / 2
    got = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature=temperature, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_cross_entropy_and_teacher_gets_no_gradient() -> None:
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    assert torch.allclose(distillation_loss(s, t, y, temperature=3.0, alpha=0.0), F.cross_entropy(s, y))
    distillation_loss(s, t, y, temperature=3.0, alpha=1.0).backward()
    assert t.grad is None and s.grad is not None
    # identical logits: the KL term and its gradient vanish
    assert distillation_loss(t.detach(), t.detach(), y, temperature=3.0, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_regression_distillation_hand_value() -> None:
    s, t, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [2.0]]), torch.tensor([3.0, 2.0])
    got = regression_distillation_loss(s, t, y, alpha=0.25)
    assert got.item() == pytest.approx(0.25 * (1 + 0) / 2 + 0.75 * (4 + 0) / 2)


@pytest.mark.parametrize(("kwargs", "match"), [({"temperature": 0.0, "alpha": 0.5}, "temperature"),
                                               ({"temperature": 1.0, "alpha": 1.5}, "alpha")])
def test_invalid_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), **kwargs)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(InvalidParameterError, match="one shape"):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), temperature=1.0, alpha=0.5)


def _conv_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 6), nn.Linear(6, 3))
    teacher = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 25, 6), nn.Linear(6, 3))
    return student, teacher


def test_feature_matcher_projects_pruned_conv_and_matches_by_hand() -> None:
    student, teacher = _conv_pair()
    x = torch.randn(2, 1, 5, 5)
    with FeatureMatcher(student, teacher, {"1": "1", "3": "3"}) as matcher:
        matcher.build(x)
        proj = matcher.projections["1"]
        assert isinstance(proj, nn.Conv2d) and (proj.in_channels, proj.out_channels, proj.kernel_size) == (4, 8, (1, 1))
        assert isinstance(matcher.projections["3"], nn.Identity)  # same width: no projection
        student(x)
        teacher(x)
        loss = matcher.loss()
        s1, t1 = student[1](student[0](x)), teacher[1](teacher[0](x))
        s3 = student[3](student[2](s1))
        t3 = teacher[3](teacher[2](t1))
        expected = (F.mse_loss(proj(s1), t1) + F.mse_loss(s3, t3)) / 2
        assert torch.allclose(loss, expected)
        loss.backward()
        assert proj.weight.grad is not None and teacher[0].weight.grad is None
    assert not student[1]._forward_hooks and not teacher[1]._forward_hooks


def test_feature_matcher_linear_projection_for_channels_last() -> None:
    student, teacher = nn.Linear(3, 4), nn.Linear(3, 7)
    matcher = FeatureMatcher(nn.Sequential(student), nn.Sequential(teacher), {"0": "0"}).build(torch.randn(2, 5, 3))
    assert isinstance(matcher.projections["0"], nn.Linear) and matcher.projections["0"].weight.shape == (7, 4)
    matcher.detach()


def test_feature_matcher_errors() -> None:
    student, teacher = _conv_pair()
    with pytest.raises(InvalidParameterError, match="no module named 'nope'"):
        FeatureMatcher(student, teacher, {"nope": "1"}).attach()
    matcher = FeatureMatcher(student, teacher, {"1": "1"}).attach()
    with pytest.raises(InvalidParameterError, match="no captured features"):
        matcher.loss()
    student(torch.randn(1, 1, 5, 5))
    teacher(torch.randn(1, 1, 5, 5))
    with pytest.raises(InvalidParameterError, match="build"):
        matcher.loss()
    matcher.detach()
    with pytest.raises(InvalidParameterError, match="exactly one non-batch axis"):
        # channels AND spatial size differ: no single projection can map one onto the other
        FeatureMatcher(nn.Sequential(nn.Conv2d(1, 2, 3)), nn.Sequential(nn.Conv2d(1, 4, 1)), {"0": "0"}).build(
            torch.randn(1, 1, 5, 5))
