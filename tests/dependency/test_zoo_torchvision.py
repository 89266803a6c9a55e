"""torchvision classification models (random weights, small inputs): 30% pruning keeps the
forward, the output shape, exact groups equal zeroed == pruned. Skipped without torchvision;
the full table over every model is benchmarks/zoo.py --source torchvision (docs/zoo.md)."""

from __future__ import annotations

import pytest
import torch

from models import check_prune, outputs, ratio_plan
from prunekit.pruning.surgery import apply_plan

torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.torchvision
torch.set_num_threads(1)


@pytest.mark.parametrize("name,kwargs", [
    ("resnet18", {}), ("mobilenet_v3_small", {}), ("shufflenet_v2_x0_5", {}), ("squeezenet1_1", {}),
    ("regnet_x_400mf", {}), ("vit_b_16", {"image_size": 32}),
])
def test_torchvision_model_prunes(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs).eval()
    x = torch.randn(1, 3, 64 if name != "vit_b_16" else 32, 64 if name != "vit_b_16" else 32)
    check = check_prune(model, x, 0.3, exact_only=True)
    assert check.max_diff <= 1e-4
    pruned, _ = apply_plan(model, check.graph, ratio_plan(check.graph, 0.3))
    assert outputs(pruned, x)[0].shape == (1, 10)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
