"""Compare every importance criterion at the same MAC target and the same fine-tuning budget.

One dense DigitsCNN is trained on the built-in digits; each criterion then prunes a copy of it to
the same fraction of MACs removed (global ranking), the copy's BatchNorm statistics are
recalibrated, and it is fine-tuned for the same number of epochs. Test accuracy is printed right
after the cut (after BN recalibration) and after fine-tuning, with the random baseline beside it.

    python benchmarks/criteria.py [--ratio 0.9] [--epochs 1] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from prunekit.data import digits
from prunekit.evaluation.complexity import count_macs
from prunekit.evaluation.metrics import evaluate, torch_predictor
from prunekit.importance import CRITERIA
from prunekit.models import DigitsCNN
from prunekit.pruning.pruner import StructuredPruner
from prunekit.training import FinetuneConfig, finetune, recalibrate_batchnorm


def accuracy(model, loader) -> float:
    return evaluate(torch_predictor(model), loader, task="classification", num_classes=10)["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.9, help="fraction of MACs removed")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs after the cut")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--criteria", nargs="*", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    names = args.criteria or [n for n in CRITERIA.names() if n not in ("heads",)]  # no attention here
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    dense_acc = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        bundle = digits(seed=seed)
        dense = DigitsCNN()
        finetune(dense, bundle.train, bundle.val, config=FinetuneConfig(
            epochs=8, lr=0.05, optimizer="sgd", weight_decay=5e-4, seed=seed), task="classification")
        dense.eval()
        dense_acc.append(accuracy(dense, bundle.test))
        x = bundle.example_input
        for name in names:
            t = time.perf_counter()
            pruner = StructuredPruner(criterion=name, ratio=args.ratio, target="macs", scope="global",
                                      round_to=None, seed=seed, batches=8)
            small = pruner.fit(dense, x, bundle.calib).transform(dense)
            recalibrate_batchnorm(small, bundle.train, batches=20)
            cut = accuracy(small, bundle.test)
            finetune(small, bundle.train, bundle.val, config=FinetuneConfig(
                epochs=args.epochs, lr=0.01, optimizer="sgd", weight_decay=5e-4, seed=seed), task="classification")
            tuned = accuracy(small, bundle.test)
            removed = 1 - count_macs(small, x).total / count_macs(dense, x).total
            results[name].append((cut, tuned))
            print(f"seed {seed} {name:20s} removed {removed:.3f} MACs  cut {cut:.4f}  tuned {tuned:.4f}  "
                  f"({time.perf_counter() - t:.1f}s)", flush=True)

    random_tuned = statistics.median(t for _, t in results["random"]) if "random" in results else None
    table = Table(title=f"criteria at {args.ratio:.0%} of MACs removed, {args.epochs} fine-tune epochs, "
                        f"median over seeds {args.seeds} (dense {statistics.median(dense_acc):.4f})")
    for col in ("criterion", "after cut + BN recal", "after fine-tune", "vs random"):
        table.add_column(col, justify="right" if col != "criterion" else "left")
    order = sorted(names, key=lambda n: -statistics.median(t for _, t in results[n]))
    for name in order:
        cut = statistics.median(c for c, _ in results[name])
        tuned = statistics.median(t for _, t in results[name])
        delta = f"{100 * (tuned - random_tuned):+.2f} pts" if random_tuned is not None else "-"
        table.add_row(name, f"{cut:.4f}", f"{tuned:.4f}", delta)
    Console().print(table)


if __name__ == "__main__":
    main()
