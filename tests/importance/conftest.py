"""Tiny hand-set models and hand-built groups for the criteria tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.dependency.groups import ChannelGroup, Slot


def slot(tensor: str, axis: int, units: list[int], role: str, module: str) -> Slot:
    return Slot(tensor, axis, np.asarray(units, dtype=np.int64), role, module)


class TwoLayer(nn.Module):
    """fc1 (2 -> 3, bias) -> ReLU -> fc2 (3 -> 2, no bias), weights set by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 3)
        self.fc2 = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.5], [-3.0, 1.0]]))
            self.fc1.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
            self.fc2.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def hidden_group() -> ChannelGroup:
    """The 3 hidden units: fc1 rows and bias (out), fc2 columns (in)."""
    return ChannelGroup("fc1:out", 3, (
        slot("fc1.weight", 0, [0, 1, 2], "out", "fc1"),
        slot("fc1.bias", 0, [0, 1, 2], "out", "fc1"),
        slot("fc2.weight", 1, [0, 1, 2], "in", "fc2"),
    ))


# two calibration batches of one sample each; loss = sum(y * c) has a closed-form gradient
X = [torch.tensor([[1.0, -1.0]]), torch.tensor([[-1.0, 0.5]])]
C = [torch.tensor([[1.0, 2.0]]), torch.tensor([[-1.0, 1.0]])]


def linear_loss(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (y * c).sum()


def hand_grads(model: TwoLayer) -> list[dict[str, np.ndarray]]:
    """dL/dW by the chain rule written out, one dict per batch (no autograd)."""
    w1 = model.fc1.weight.detach().numpy().astype(np.float64)
    b1 = model.fc1.bias.detach().numpy().astype(np.float64)
    w2 = model.fc2.weight.detach().numpy().astype(np.float64)
    out = []
    for x, c in zip(X, C):
        x, c = x.numpy()[0].astype(np.float64), c.numpy()[0].astype(np.float64)
        h = w1 @ x + b1
        r = np.maximum(h, 0)
        dh = (w2.T @ c) * (h > 0)
        out.append({"fc1.weight": np.outer(dh, x), "fc1.bias": dh, "fc2.weight": np.outer(c, r), "h": h})
    return out


@pytest.fixture
def two_layer() -> TwoLayer:
    torch.manual_seed(0)
    return TwoLayer()


@pytest.fixture
def calib() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(X, C))


@pytest.fixture(name="hidden_group")
def _hidden_group() -> ChannelGroup:
    return hidden_group()


@pytest.fixture(name="grads_by_hand")
def _grads_by_hand(two_layer: TwoLayer) -> list[dict[str, np.ndarray]]:
    return hand_grads(two_layer)


@pytest.fixture(name="linear_loss")
def _linear_loss():
    return linear_loss


@pytest.fixture(name="make_slot")
def _make_slot():
    return slot
