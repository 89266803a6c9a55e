"""Tiny fixture architectures for the engine tests, one per coupling rule, plus tiny HF configs.

Every model here is small enough to build, trace and prune in well under a second on one core.
``HF_SPECS`` lists Hugging Face families buildable offline from a config: name -> (config
class name, config kwargs, model class name, input kind). ``check_prune`` is the shared proof:
zero the planned slices, remove them, compare outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from prunekit.dependency import build_graph
from prunekit.dependency.graph import DependencyGraph
from prunekit.dependency.groups import PruningPlan
from prunekit.pruning.surgery import apply_plan, zero_plan
from prunekit.tracing import call_model, iter_tensors


# ---------------------------------------------------------------------------------------- rules
class ConvBNResidual(nn.Module):
    """conv -> BN -> ReLU, two convs whose outputs are added (residual) and multiplied (gate)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 1)
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W)
        x = F.relu(self.bn(self.stem(x)))  # (B, c, H, W)
        x = x + self.a(x) * torch.sigmoid(self.b(x))  # residual add and a gate: one channel set
        return self.head(x.mean((2, 3)))  # (B, 5)


class ConcatSplit(nn.Module):
    """Two branches concatenated (offsets), then chunked back and split by a slice."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.mix = nn.Conv2d(10, 8, 1)
        self.left = nn.Conv2d(4, 4, 1)
        self.right = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), F.relu(self.b(x))], dim=1)  # (B, 10, H, W): offsets 0 and 6
        y = self.mix(y)  # (B, 8, H, W)
        l, r = torch.chunk(y, 2, dim=1)  # (B, 4, H, W) each: position i of l couples with i of r
        y = torch.cat([self.left(l), self.right(r)], 1)
        return self.head(y.flatten(2).amax(-1))


class GroupedDepthwise(nn.Module):
    """Depthwise (multiplier 2) and grouped convolutions: the groups attribute must follow."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)  # 2 outputs per input channel
        self.grouped = nn.Conv2d(16, 12, 1, groups=4)
        self.bn = nn.BatchNorm2d(12)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.bn(self.grouped(F.relu(self.dw(x)))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TransposedConv(nn.Module):
    """Encoder-decoder with a transposed convolution (weight is [in, out, k, k])."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.norm = nn.GroupNorm(3, 6)
        self.out = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.norm(self.up(F.relu(self.down(x))))))


class FlattenLinear(nn.Module):
    """Conv features flattened into a linear layer: each channel expands to H*W inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.out = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 8, 8)
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)  # (B, 6, 4, 4)
        x = x.view(x.size(0), -1)  # (B, 96): channel c owns inputs c*16 .. c*16+15
        return self.out(F.relu(self.fc(x)))


class ChannelsLast(nn.Module):
    """ConvNeXt-style block: depthwise conv, permute to (B, H, W, C), LayerNorm, MLP, layer scale."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, stride=2)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)  # layer scale
        self.head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, c, H, W)
        y = self.dw(x).permute(0, 2, 3, 1)  # (B, H, W, c)
        y = self.gamma * self.fc2(F.gelu(self.fc1(self.norm(y))))
        x = x + y.permute(0, 3, 1, 2)  # back to (B, c, H, W)
        return self.head(x.mean((2, 3)))


class TokenModel(nn.Module):
    """ViT-like: patch conv, class token and positional embedding (bare parameters), attention."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 5, dim))
        self.attn = HeadAttention(dim, heads)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 8, 8)
        t = self.patch(x).flatten(2).transpose(1, 2)  # (B, 4, dim)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos  # (B, 5, dim)
        t = t + self.attn(t)
        return self.head(t[:, 0])


class HeadAttention(nn.Module):
    """Multi-head self-attention written the common way: q/k/v/o projections and ``num_heads``."""

    def __init__(self, dim: int, num_heads: int, inner: int | None = None) -> None:
        super().__init__()
        inner = inner or dim
        self.num_heads = num_heads
        self.head_dim = inner // num_heads
        self.q, self.k, self.v = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.o = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, dim)
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, h, T, T)
        y = att.softmax(-1) @ v  # (B, h, T, d)
        return self.o(y.transpose(1, 2).reshape(b, t, -1))


class EmbeddingLM(nn.Module):
    """Token embedding -> RMS-free MLP -> output projection (weights not tied)."""

    def __init__(self, vocab: int = 30, dim: int = 12) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, 2 * dim)
        self.glu_out = nn.Linear(dim, dim)
        self.lm = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids: (B, T)
        h = self.emb(ids)  # (B, T, dim)
        h = h + self.glu_out(F.glu(self.fc(h), dim=-1))  # GLU halves couple
        return self.lm(h)  # (B, T, vocab)


class TorchMHA(nn.Module):
    """nn.MultiheadAttention (packed in_proj_weight), as torchvision's ViT uses it."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(6, dim)
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, 6)
        h = self.inp(x)
        h = h + self.mha(h, h, h, need_weights=False)[0]
        return self.out(h)


class Opaque(nn.Module):
    """Calls an op the engine does not know (an FFT) on a channel axis: must be refused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.fft.fft(self.conv(x), dim=1).real  # mixes channels
        return self.head(y.mean((2, 3)))


class AuxHead(nn.Module):
    """An auxiliary head on the first conv's pooled output, returned only in train mode (GoogLeNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.fc, self.aux = nn.Linear(16, 10), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor):
        a = F.relu(self.c1(x))
        out = self.fc(F.relu(self.c2(a)).mean((2, 3)))
        if self.training:
            return out, self.aux(a.mean((2, 3)))
        return out


def train_step(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
    """One train-mode forward and backward (as fine-tuning runs it); every output tensor.

    BatchNorm reads its running statistics (``training_mode``), so a batch of one works.
    """
    from prunekit.tracing import training_mode

    with training_mode(model), torch.enable_grad():
        out = list(iter_tensors(call_model(model, inputs)))
        sum(t.float().sum() for t in out if t.is_floating_point() and t.requires_grad).backward()
    return out


RULE_MODELS: dict[str, tuple[type[nn.Module], tuple[int, ...], str]] = {
    # name -> (class, input shape, input kind: "float" or "ids")
    "conv_bn_residual": (ConvBNResidual, (2, 3, 8, 8), "float"),
    "concat_split": (ConcatSplit, (2, 3, 8, 8), "float"),
    "grouped_depthwise": (GroupedDepthwise, (2, 3, 8, 8), "float"),
    "transposed_conv": (TransposedConv, (2, 3, 8, 8), "float"),
    "flatten_linear": (FlattenLinear, (2, 1, 8, 8), "float"),
    "channels_last": (ChannelsLast, (2, 3, 8, 8), "float"),
    "tokens_attention": (TokenModel, (2, 3, 8, 8), "float"),
    "embedding_glu": (EmbeddingLM, (2, 7), "ids"),
    "torch_mha": (TorchMHA, (2, 5, 6), "float"),
}


def make_input(shape: tuple[int, ...], kind: str, *, vocab: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "ids":
        return torch.randint(0, vocab, shape, generator=g)
    return torch.randn(shape, generator=g)


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norm layers non-trivial statistics and affines so equivalence tests see them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            for name in ("weight", "bias"):
                p = getattr(m, name, None)
                if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)) and isinstance(p, torch.Tensor):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if name == "weight" else 0.0))
    return model


# ---------------------------------------------------------------------------------------- proof
@dataclass
class PruneCheck:
    graph: DependencyGraph
    plan: PruningPlan
    pruned: nn.Module
    max_diff: float  # zeroed vs pruned, over all outputs (nan when not compared)
    exact: bool  # every group in the plan is exact
    params_before: int
    params_after: int
    scale: float = 1.0  # largest |output| of the zeroed model, for a relative float32 tolerance

    @property
    def relative_diff(self) -> float:
        """max |zeroed - pruned| / max |output|: relative to the output's own scale, however small.

        With the old ``max(1, scale)`` an output of 1e-8 made any tolerance vacuous; here a tiny
        output gives a large ratio unless the difference is tinier still. Pair it with
        :func:`order_one` so outputs are of order one and float32 rounding stays near 1e-7.
        """
        return self.max_diff / self.scale if self.scale > 0 else (0.0 if self.max_diff == 0 else math.inf)


def outputs(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return [t.float() for t in iter_tensors(call_model(model, inputs)) if t.is_floating_point()]


def ratio_plan(graph: DependencyGraph, ratio: float, *, seed: int = 0, exact_only: bool = False,
               groups: list[str] | None = None) -> PruningPlan:
    """Remove ``floor(ratio * size)`` random units of every prunable group (min_units respected)."""
    rng = np.random.default_rng(seed)
    removed: dict[str, tuple[int, ...]] = {}
    for g in graph.prunable_groups():
        if (exact_only and not g.exact) or (groups is not None and g.id not in groups):
            continue
        n = min(int(math.floor(ratio * g.size)), g.size - g.min_units)
        if n > 0:
            removed[g.id] = tuple(sorted(rng.choice(g.size, size=n, replace=False).tolist()))
    return PruningPlan(removed)


def check_prune(model: nn.Module, inputs: Any, ratio: float = 0.3, *, seed: int = 0,
                exact_only: bool = False, graph: DependencyGraph | None = None,
                only: set[str] | None = None) -> PruneCheck:
    """Prune ``model`` at ``ratio`` and compare the zeroed model with the physically pruned one.

    ``only`` restricts the plan to those group ids.
    """
    model.eval()
    graph = graph or build_graph(model, inputs)
    plan = ratio_plan(graph, ratio, seed=seed, exact_only=exact_only)
    if only is not None:
        plan = PruningPlan({g: u for g, u in plan.removed.items() if g in only}, plan.meta)
    pruned, _ = apply_plan(model, graph, plan)
    exact = all(graph.group(gid).exact for gid in plan.removed)
    zeroed = zero_plan(model, graph, plan)
    a, b = outputs(zeroed, inputs), outputs(pruned, inputs)
    assert [t.shape for t in a] == [t.shape for t in b]
    diff = max((float((x - y).abs().max()) for x, y in zip(a, b) if x.numel()), default=0.0)
    scale = max((float(x.abs().max()) for x in a if x.numel() and x.is_floating_point()), default=1.0)
    return PruneCheck(graph, plan, pruned, diff, exact, _count(model), _count(pruned), scale)


def order_one(model: nn.Module, example: Any, *, batches: int = 2, seed: int = 0) -> nn.Module:
    """Make a random-weight model's outputs of order one, so a relative tolerance means something.

    Random-init deep nets shrink or blow up their activations (torchvision EfficientNet: outputs
    of 1e-14; ViT's head is zero-initialised; tiny HF text classifiers with std-0.02 weights give
    1e-2). Linear layers and zero-initialised convs get N(0, 1/fan_in) weights, and BatchNorm
    running statistics are recomputed on random inputs like ``example``, so every BN normalises
    what it sees. Returns the model in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and (isinstance(m, nn.Linear) or not m.weight.any()):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(batches if norms else 0):
            call_model(model, _random_like(example, g))
        for m in norms:
            m.momentum = 0.1
    return model.eval()


def _random_like(example: Any, g: torch.Generator) -> Any:
    """Random inputs shaped like ``example`` (a batch of at least 4: BatchNorm statistics need it)."""
    if isinstance(example, dict):
        return {k: _random_like(v, g) for k, v in example.items()}
    shape = (max(4, example.shape[0]),) + tuple(example.shape[1:])
    if example.is_floating_point():
        return torch.randn(shape, generator=g)
    return torch.randint(0, int(example.max()) + 1, shape, generator=g)


def output_scale(model: nn.Module, inputs: Any) -> float:
    return max(float(t.abs().max()) for t in outputs(model, inputs))


def verified_plan(model: nn.Module, graph: DependencyGraph, plan: PruningPlan) -> tuple[PruningPlan, dict[str, str]]:
    """``plan`` without the groups whose cut alone fails verification, as StructuredPruner does."""
    from prunekit.pruning.surgery import PruningVerificationError, drop_unverifiable

    try:
        apply_plan(model, graph, plan)
        return plan, {}
    except PruningVerificationError:
        return drop_unverifiable(model, graph, plan)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------- HF zoo
_TEXT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=32)
_DEC = dict(_TEXT, num_key_value_heads=2)
_VIS = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
            num_attention_heads=4, intermediate_size=48)

# name -> (config class, config kwargs, model class, input kind, input shape)
HF_SPECS: dict[str, tuple[str, dict, str, str, tuple[int, ...]]] = {
    "resnet": ("ResNetConfig", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck"),
               "ResNetForImageClassification", "pixels", (1, 3, 32, 32)),
    "convnext": ("ConvNextConfig", dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
                 "ConvNextForImageClassification", "pixels", (1, 3, 32, 32)),
    "convnextv2": ("ConvNextV2Config", dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
                   "ConvNextV2ForImageClassification", "pixels", (1, 3, 32, 32)),
    "vit": ("ViTConfig", _VIS, "ViTForImageClassification", "pixels", (1, 3, 32, 32)),
    "deit": ("DeiTConfig", _VIS, "DeiTForImageClassificationWithTeacher", "pixels", (1, 3, 32, 32)),
    "beit": ("BeitConfig", dict(_VIS, use_mean_pooling=True), "BeitForImageClassification", "pixels", (1, 3, 32, 32)),
    "dinov2": ("Dinov2Config", _VIS, "Dinov2ForImageClassification", "pixels", (1, 3, 32, 32)),
    "swin": ("SwinConfig", dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4),
             "SwinForImageClassification", "pixels", (1, 3, 32, 32)),
    "mobilenet_v2": ("MobileNetV2Config", dict(image_size=32, depth_multiplier=0.25),
                     "MobileNetV2ForImageClassification", "pixels", (1, 3, 32, 32)),
    "mobilenet_v1": ("MobileNetV1Config", dict(image_size=32, depth_multiplier=0.25),
                     "MobileNetV1ForImageClassification", "pixels", (1, 3, 32, 32)),
    "efficientnet": ("EfficientNetConfig", dict(image_size=32, width_coefficient=0.25, depth_coefficient=0.2,
                                                hidden_dim=320),
                     "EfficientNetForImageClassification", "pixels", (1, 3, 32, 32)),
    "regnet": ("RegNetConfig", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=4),
               "RegNetForImageClassification", "pixels", (1, 3, 32, 32)),
    "mobilevit": ("MobileViTConfig", dict(image_size=32, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32],
                                          num_attention_heads=2),
                  "MobileViTForImageClassification", "pixels", (1, 3, 32, 32)),
    "levit": ("LevitConfig", dict(image_size=32, hidden_sizes=[16, 32, 48], num_attention_heads=[1, 2, 3], depths=[1, 1, 1],
                                  key_dim=[8, 8, 8]),
              "LevitForImageClassification", "pixels", (1, 3, 32, 32)),
    "bert": ("BertConfig", _TEXT, "BertForSequenceClassification", "ids", (1, 8)),
    "distilbert": ("DistilBertConfig", dict(vocab_size=64, dim=32, n_layers=1, n_heads=4, hidden_dim=48,
                                            max_position_embeddings=32),
                   "DistilBertForSequenceClassification", "ids", (1, 8)),
    "roberta": ("RobertaConfig", _TEXT, "RobertaForSequenceClassification", "ids", (1, 8)),
    "albert": ("AlbertConfig", dict(_TEXT, embedding_size=16), "AlbertForSequenceClassification", "ids", (1, 8)),
    "electra": ("ElectraConfig", dict(_TEXT, embedding_size=16), "ElectraForSequenceClassification", "ids", (1, 8)),
    "gpt2": ("GPT2Config", dict(vocab_size=64, n_embd=32, n_layer=1, n_head=4, n_positions=32), "GPT2LMHeadModel",
             "ids", (1, 8)),
    "gpt_neo": ("GPTNeoConfig", dict(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=32,
                                     attention_types=[[["global", "local"], 1]], window_size=4),
                "GPTNeoForCausalLM", "ids", (1, 8)),
    "opt": ("OPTConfig", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, ffn_dim=48,
                              max_position_embeddings=32, word_embed_proj_dim=32),
            "OPTForCausalLM", "ids", (1, 8)),
    "llama": ("LlamaConfig", _DEC, "LlamaForCausalLM", "ids", (1, 8)),
    "mistral": ("MistralConfig", _DEC, "MistralForCausalLM", "ids", (1, 8)),
    "qwen2": ("Qwen2Config", _DEC, "Qwen2ForCausalLM", "ids", (1, 8)),
    "phi": ("PhiConfig", dict(_TEXT, partial_rotary_factor=0.5), "PhiForCausalLM", "ids", (1, 8)),
    "falcon": ("FalconConfig", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                    new_decoder_architecture=False, multi_query=True),
               "FalconForCausalLM", "ids", (1, 8)),
    "gemma": ("GemmaConfig", dict(_DEC, head_dim=8), "GemmaForCausalLM", "ids", (1, 8)),
    "t5": ("T5Config", dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4),
           "T5ForConditionalGeneration", "seq2seq", (1, 8)),
    "bart": ("BartConfig", dict(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                                decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=32),
             "BartForConditionalGeneration", "seq2seq", (1, 8)),
}


def build_hf(name: str, *, seed: int = 0) -> tuple[nn.Module, Any]:
    """Build the tiny HF model ``name`` with random weights and its example inputs."""
    import transformers

    config_cls, kwargs, model_cls, kind, shape = HF_SPECS[name]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**kwargs)
    if hasattr(config, "num_labels") and "Classification" in model_cls:
        config.num_labels = 3
    config._attn_implementation = "eager"
    model = getattr(transformers, model_cls)(config).eval()
    randomize_norms(model, seed)
    g = torch.Generator().manual_seed(seed)
    if kind == "pixels":
        inputs: Any = {"pixel_values": torch.randn(shape, generator=g)}
    elif kind == "seq2seq":
        inputs = {"input_ids": torch.randint(0, 64, shape, generator=g),
                  "decoder_input_ids": torch.randint(0, 64, shape, generator=g)}
    else:
        inputs = {"input_ids": torch.randint(0, 64, shape, generator=g)}
    return model, inputs
