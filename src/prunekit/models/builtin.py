"""Small built-in models for the demo and tests: real conv/BN/residual/linear structure."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A compact CNN for 1x8x8 digits: two conv stages, a residual block, then a classifier.

    Wide enough (64/128 channels) that channel pruning has room to work and latency is
    dominated by the convolutions, as in real deployments.
    """

    def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 1) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
        )
        self.down = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 8, 8)
        x = self.stem(x)  # (B, w, 8, 8)
        x = torch.relu(x + self.block(x))  # residual add couples stem and block outputs
        x = self.down(x)  # (B, 2w, 4, 4)
        return self.head(x)  # (B, classes)


class MLP(nn.Module):
    """Plain multi-layer perceptron on flattened inputs."""

    def __init__(self, in_features: int = 64, hidden: tuple[int, ...] = (256, 128), num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Residual(nn.Module):
    """conv-BN-ReLU-conv-BN plus identity, then ReLU (the basic ResNet block)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ResNet8(nn.Module):
    """A small three-stage ResNet for 28x28 (or larger) grey images, e.g. Fashion-MNIST."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        w = width

        def down(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stage1 = _Residual(w)
        self.stage2 = nn.Sequential(down(w, 2 * w), _Residual(2 * w))
        self.stage3 = nn.Sequential(down(2 * w, 4 * w), _Residual(4 * w))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28)
        x = self.stage1(self.stem(x))  # (B, w, 28, 28)
        x = self.stage3(self.stage2(x))  # (B, 4w, 7, 7)
        return self.head(x)  # (B, classes)


BUILTIN_MODELS = {"digits_cnn": DigitsCNN, "mlp": MLP, "resnet8": ResNet8}
