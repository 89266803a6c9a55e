"""prunekit vs Torch-Pruning 1.6 at the same MAC target on Fashion-MNIST: accuracy and ORT latency.

One dense ResNet8 is trained once. Each tool then prunes a copy of it to the same fraction of MACs
removed (L2 magnitude, global ranking in both), and every pruned copy gets the same fine-tuning
budget. Torch-Pruning is used as its README shows (MagnitudePruner + the user's own training
loop); prunekit as its pipeline does it (BN recalibration, distillation from the dense model,
channel counts rounded to multiples of 8). Extra rows: Torch-Pruning with
its own ``round_to=8`` (not its default), and prunekit without distillation, which separate what
the widths and what recovery are worth. Latency: ONNX Runtime, all models in one
process, alternating, medians.

    apt-get install dataset-fashion-mnist
    python benchmarks/vs_torch_pruning.py [--ratio 0.5] [--epochs 4] [--train-limit 20000]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from prunekit.data.builtin import fashion_mnist
from prunekit.evaluation.complexity import count_macs, count_params
from prunekit.evaluation.latency import onnx_latency
from prunekit.evaluation.metrics import evaluate, torch_predictor
from prunekit.export.onnx import export_onnx
from prunekit.models.builtin import ResNet8
from prunekit.pruning.pruner import StructuredPruner
from prunekit.training import FinetuneConfig, finetune, recalibrate_batchnorm


def accuracy(model, loader) -> float:
    return evaluate(torch_predictor(model), loader, task="classification", num_classes=10)["accuracy"]


def torch_pruning_to_macs(dense, x, target: float, round_to: int | None = None):
    """Torch-Pruning's MagnitudePruner, with its channel ratio bisected to remove ``target`` of the MACs."""
    import torch_pruning as tp

    base = count_macs(dense, x).total
    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        ratio = (lo + hi) / 2
        model = copy.deepcopy(dense)
        pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=ratio, global_pruning=True,
                                           ignored_layers=[model.head[2]], round_to=round_to)
        pruner.step()
        removed = 1 - count_macs(model, x).total / base
        if removed >= target:
            hi, best = ratio, model
        else:
            lo = ratio
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of MACs removed")
    parser.add_argument("--epochs", type=int, default=4, help="dense training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    bundle = fashion_mnist(train_limit=args.train_limit, seed=0)
    x = bundle.example_input
    t = time.perf_counter()
    dense = ResNet8(width=args.width)
    finetune(dense, bundle.train, bundle.val, config=FinetuneConfig(
        epochs=args.epochs, lr=0.05, optimizer="sgd", weight_decay=5e-4, seed=0, progress=True))
    dense.eval()
    print(f"dense trained in {time.perf_counter() - t:.0f}s: accuracy {accuracy(dense, bundle.test):.4f}")
    tune = FinetuneConfig(epochs=args.finetune_epochs, lr=0.01, optimizer="sgd", weight_decay=5e-4, seed=0,
                          progress=True)

    models, cut = {"dense": dense}, {}
    for name, round_to in (("torch-pruning", None), ("torch-pruning round_to=8", 8)):
        tp_model = torch_pruning_to_macs(dense, x, args.ratio, round_to)
        cut[name] = accuracy(tp_model, bundle.test)
        finetune(tp_model, bundle.train, bundle.val, config=tune)
        models[name] = tp_model.eval()

    for name, teacher in (("prunekit", dense), ("prunekit (no distillation)", None)):
        pruner = StructuredPruner(criterion="l2", ratio=args.ratio, target="macs", scope="global", round_to=8)
        small = pruner.fit(dense, x).transform(dense)
        recalibrate_batchnorm(small, bundle.train, batches=20)
        cut[name] = accuracy(small, bundle.test)
        cfg = FinetuneConfig(**{**tune.to_dict(), "alpha": 0.7, "temperature": 4.0})
        finetune(small, bundle.train, bundle.val, config=cfg, teacher=teacher)
        models[name] = small.eval()

    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: export_onnx(m, x, Path(tmp) / f"{i}.onnx") for i, (n, m) in enumerate(models.items())}
        timings = onnx_latency(paths, input_shape=tuple(x.shape[1:]), batch_sizes=(1, 32), runs=args.runs)

    table = Table(title=f"Fashion-MNIST ResNet8(width={args.width}), {args.ratio:.0%} of MACs removed, "
                        f"{args.finetune_epochs} fine-tune epochs each; ORT latency ratios vs dense")
    for col in ("model", "accuracy", "after cut", "MACs", "params", "widths", "b1 speed-up", "b32 speed-up"):
        table.add_column(col, justify="left" if col in ("model", "widths") else "right")
    d = timings["dense"]
    for name, m in models.items():
        widths = "/".join(str(mod.out_channels) for mod in m.modules() if isinstance(mod, torch.nn.Conv2d))
        table.add_row(
            name, f"{accuracy(m, bundle.test):.4f}", f"{cut[name]:.4f}" if name in cut else "-",
            f"{count_macs(m, x).total / 1e6:.2f}M", f"{count_params(m):,}", widths,
            f"{d[1]['p50_ms'] / timings[name][1]['p50_ms']:.2f}x", f"{d[32]['p50_ms'] / timings[name][32]['p50_ms']:.2f}x")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
