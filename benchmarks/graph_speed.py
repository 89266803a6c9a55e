"""Graph construction + one 50% magnitude pruning step: prunekit vs Torch-Pruning, same models.

ResNet-50 comes from Hugging Face's ``ResNetConfig()`` defaults (torchvision is not in the main
venv), BERT-base from ``BertConfig()``. Each tool gets a fresh copy of the same model per run;
the median of ``--repeats`` runs is reported with the ratio prunekit / Torch-Pruning.

    .venv/bin/python benchmarks/graph_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from prunekit.dependency import PruningPlan, build_graph
from prunekit.pruning.surgery import apply_plan


class Logits(nn.Module):
    """HF model -> logits tensor, so both tools see a plain tensor output."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.key: x}).logits


def resnet50() -> tuple[nn.Module, torch.Tensor, list[str]]:
    from transformers import ResNetConfig, ResNetForImageClassification

    model = Logits(ResNetForImageClassification(ResNetConfig()).eval(), "pixel_values")
    return model, torch.randn(1, 3, 224, 224), ["model.classifier.1"]


def bert_base() -> tuple[nn.Module, torch.Tensor, list[str]]:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig()
    config._attn_implementation = "eager"
    model = Logits(BertForSequenceClassification(config).eval(), "input_ids")
    return model, torch.randint(0, config.vocab_size, (1, 128)), ["model.classifier"]


def prunekit_step(model: nn.Module, x: torch.Tensor, ratio: float) -> int:
    graph = build_graph(model, x)
    state = dict(model.named_parameters())
    removed = {}
    for group in graph.prunable_groups():  # L2 magnitude of the producing rows, lowest first
        score = torch.zeros(group.size)
        for slot in group.slots_with_role("out"):
            w = state[slot.tensor].detach().movedim(slot.axis, 0)
            w = w.reshape(w.shape[0], -1)
            score += slot.scatter(w.pow(2).sum(1), group.size)
        n = int(ratio * group.size)
        if n and group.size - n >= group.min_units:
            removed[group.id] = tuple(sorted(torch.argsort(score)[:n].tolist()))
    pruned, _ = apply_plan(model, graph, PruningPlan(removed), inplace=True, verify=False)
    return sum(p.numel() for p in pruned.parameters())


def tp_step(model: nn.Module, x: torch.Tensor, ratio: float, ignored: list[str]) -> int:
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=[model.get_submodule(n) for n in ignored])
    pruner.step()
    return sum(p.numel() for p in model.parameters())


def timed(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    times, params = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        params = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'model':10s} {'params':>12s} {'prunekit s':>11s} {'params after':>13s} {'TP s':>8s} "
          f"{'TP params after':>16s} {'prunekit/TP':>12s}")
    for name, factory in (("resnet50", resnet50), ("bert-base", bert_base)):
        torch.manual_seed(0)
        model, x, ignored = factory()
        n = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            pk_t, pk_p = timed(lambda: prunekit_step(copy.deepcopy(model), x, args.ratio), args.repeats)
        try:
            tp_t, tp_p = timed(lambda: tp_step(copy.deepcopy(model), x, args.ratio, ignored), args.repeats)
            ratio = f"{pk_t / tp_t:.2f}x"
        except Exception as exc:  # noqa: BLE001 - report, keep going
            tp_t, tp_p, ratio = float("nan"), 0, f"TP failed: {type(exc).__name__}"
        print(f"{name:10s} {n:>12,} {pk_t:>11.2f} {pk_p:>13,} {tp_t:>8.2f} {tp_p:>16,} {ratio:>12s}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
