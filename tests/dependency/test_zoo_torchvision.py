"""torchvision: one model per family (random weights, small inputs), 30% pruning, both modes.

Each model is made to give outputs of order one (``order_one``: BatchNorm statistics from random
inputs, zero-initialised heads re-drawn), so the zeroed == removed check, relative to the
output's own scale, can fail. Then: exact groups cut with zeroed == removed within 1e-4 of the
scale; every prunable group cut (those whose cut alone fails verification left whole, as
StructuredPruner does) and the result runs in eval mode with the same shapes and trains (forward
+ backward in train mode, where GoogLeNet and Inception return their auxiliary heads).

Runs in .venv-tv (scripts/setup_torchvision.sh; scripts/test.sh runs it): torchvision does not
import beside .venv's CPU torch. The full table is ``benchmarks/zoo.py --source torchvision``.
"""

from __future__ import annotations

import pytest
import torch

from models import order_one, output_scale, outputs, ratio_plan, train_step, verified_plan, zero_plan
from prunekit.dependency import build_graph
from prunekit.models.attention import split_attention
from prunekit.pruning.surgery import apply_plan

torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.torchvision
torch.set_num_threads(1)

def _get(name: str, **kwargs):
    return lambda: torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs)


def _vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                             num_classes=10)


def _swin(v2: bool):
    from torchvision.models import swin_transformer as sw

    extra = dict(block=sw.SwinTransformerBlockV2, downsample_layer=sw.PatchMergingV2) if v2 else {}
    return sw.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                              num_classes=10, **extra)


def _maxvit():
    from torchvision.models.maxvit import MaxVit

    return MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2, block_channels=[16, 32],
                  block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.1, num_classes=10)


# name -> (input side, builder). One model per family at the smallest input it accepts; the
# transformers (ViT, Swin, MaxViT) as their own classes at a few layers and a small width, since
# their named sizes need 224-pixel inputs (maxvit_t took 11 minutes here) but share the code.
# Inception v3 without its auxiliary head: that head needs 299-pixel inputs in train mode
# (GoogLeNet covers auxiliary heads; benchmarks/zoo.py runs inception_v3 with it at 299).
FAMILIES: dict[str, tuple[int, object]] = {
    "alexnet": (64, _get("alexnet")),
    "resnet18": (32, _get("resnet18")),
    "resnext50_32x4d": (32, _get("resnext50_32x4d")),
    "vgg11_bn": (32, _get("vgg11_bn")),
    "densenet121": (32, _get("densenet121")),
    "mobilenet_v2": (32, _get("mobilenet_v2")),
    "mobilenet_v3_small": (32, _get("mobilenet_v3_small")),
    "efficientnet_b0": (32, _get("efficientnet_b0")),
    "efficientnet_v2_s": (32, _get("efficientnet_v2_s")),
    "regnet_y_400mf": (32, _get("regnet_y_400mf")),
    "shufflenet_v2_x0_5": (32, _get("shufflenet_v2_x0_5")),
    "squeezenet1_1": (32, _get("squeezenet1_1")),
    "mnasnet0_5": (32, _get("mnasnet0_5")),
    "googlenet": (32, _get("googlenet", init_weights=True)),
    "inception_v3 (no aux)": (80, _get("inception_v3", aux_logits=False, init_weights=True)),
    "convnext_tiny": (32, _get("convnext_tiny")),
    "vit (2 layers)": (32, _vit),
    "swin (2 stages)": (32, lambda: _swin(False)),
    "swin_v2 (2 stages)": (32, lambda: _swin(True)),
    "maxvit (2 stages)": (32, _maxvit),
}


def _build(name: str):
    side, build = FAMILIES[name]
    torch.manual_seed(0)
    model, _ = split_attention(build())  # nn.MultiheadAttention -> separate projections, as recipes do
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    return order_one(model, x), x


@pytest.mark.parametrize("name", list(FAMILIES))
def test_torchvision_family_prunes_in_both_modes(name: str) -> None:
    model, x = _build(name)
    scale = output_scale(model, x)
    assert 1e-2 < scale < 1e5, f"{name}: output scale {scale:.1e} would make the relative check vacuous"
    graph = build_graph(model, x)
    assert graph.train_output_shapes is not None and graph.train_backward, graph.train_note

    exact, _ = verified_plan(model, graph, ratio_plan(graph, 0.3, exact_only=True))
    assert exact.removed, f"{name}: no exact group could be cut"
    pruned, _ = apply_plan(model, graph, exact)
    zeroed = zero_plan(model, graph, exact)
    diff = max(float((a - b).abs().max()) for a, b in zip(outputs(zeroed, x), outputs(pruned, x)))
    assert diff <= 1e-4 * scale, f"{name}: zeroed vs removed differ by {diff / scale:.1e} of the output scale"

    every, _ = verified_plan(model, graph, ratio_plan(graph, 0.3))  # inexact groups too
    small, _ = apply_plan(model, graph, every)
    assert [t.shape for t in outputs(small, x)] == [t.shape for t in outputs(model, x)]
    trained = train_step(small, x)  # fine-tuning's step: aux heads included
    assert [tuple(t.shape) for t in trained] == [tuple(s) for s in graph.train_output_shapes]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
