"""Where ResNet-8's one-shot cut loses its accuracy: the residual stream or the blocks' insides.

The ResNet-8 of ``benchmarks/criteria_oracle.py`` (width 16, Fashion-MNIST, same training and
samples for a seed) is cut to 50% of the units of (a) its residual-stream groups only (channels
shared by a stage's producer and its block's last conv), (b) the groups inside the blocks only,
(c) all groups (the benchmark's local 50% cut); BatchNorm recalibrated, no fine-tuning. Each
criterion is compared with several draws of ``random`` and with the single-unit oracle itself
used as scores (the signed loss increase, and its absolute value): if even the oracle does not
beat random, no criterion that estimates single-unit costs can. Last, the share of each group
that the global cut removes (does it take a group whole?).

    python benchmarks/criteria_oracle.py   # the table
    python benchmarks/resnet_stream_cut.py [--seed 0] [--draws 8]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from criteria_oracle import _loader, _split, accuracy, fashion_case, oracle
from prunekit.dependency import build_graph
from prunekit.dependency.groups import PruningPlan
from prunekit.importance import collect, make_criterion
from prunekit.importance.score import score_groups
from prunekit.pruning.allocate import allocate
from prunekit.pruning.surgery import apply_plan
from prunekit.training import recalibrate_batchnorm

CRITERIA = ["l2", "taylor", "obd", "output_sensitivity", "activation"]
PARTS = ("stream", "inner", "all")


def cut(model, graph, groups, scores, part, stream, train_data, test_data, ratio=0.5) -> float:
    """Accuracy after removing the lowest-scored ``ratio`` of every group in ``part``."""
    removed = {}
    for g in groups:
        if (part == "stream" and g.id not in stream) or (part == "inner" and g.id in stream):
            continue
        keep = set(torch.argsort(scores[g.id], descending=True)[: round(g.size * (1 - ratio))].tolist())
        removed[g.id] = tuple(u for u in range(g.size) if u not in keep)
    small, _ = apply_plan(model, graph, PruningPlan(removed))
    recalibrate_batchnorm(small, train_data, batches=20)
    return accuracy(small, test_data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--constant-lr", action="store_true", help="train at a constant rate (the first tables' protocol)")
    parser.add_argument("--draws", type=int, default=8, help="random rankings to compare with")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    case = fashion_case(argparse.Namespace(seed=args.seed, quick=False, fashion_width=16, constant_lr=args.constant_lr))
    model, (x, y) = case["model"], case["train"]
    (xo, yo), (xc, yc) = _split(x, y, 512, 512, args.seed)
    train_data, test_data = _loader(x, y, 32, shuffle=True, seed=args.seed), _loader(*case["test"], 250)
    graph = build_graph(model, case["example"])
    groups = graph.prunable_groups()
    stream = {g.id for g in groups if len({s.module for s in g.slots if s.role == "out"}) > 1}
    ctx = collect(model, _loader(xc, yc, 64), needs={"gates", "gate_hessian", "gate_ggn", "activations"},
                  groups=groups, seed=args.seed)
    truth = {gid: m.mean(1) for gid, m in oracle(model, graph, groups, _loader(xo, yo, 256)).items()}
    rankings = {"oracle (signed)": {g: torch.from_numpy(t) for g, t in truth.items()},
                "oracle (absolute)": {g: torch.from_numpy(np.abs(t)) for g, t in truth.items()}}
    for name in CRITERIA:
        rankings[name] = score_groups(groups, ctx, make_criterion(name))[0]
    for draw in range(args.draws):
        rankings[f"random draw {draw}"] = score_groups(groups, ctx, make_criterion("random", seed=args.seed + draw))[0]
    print(f"dense {accuracy(model, test_data):.3f}; stream groups {sorted(stream)}")
    print("units whose removal lowers the training loss (oracle < 0): "
          + ", ".join(f"{gid} {int((t < 0).sum())}/{len(t)}" for gid, t in truth.items()))
    print("| ranking | " + " | ".join(f"50% of {p}" for p in PARTS) + " |\n|---" * 1 + "|---" * len(PARTS) + "|")
    results = {}
    for name, scores in rankings.items():
        results[name] = [cut(model, graph, groups, scores, p, stream, train_data, test_data) for p in PARTS]
        if not name.startswith("random"):
            print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in results[name]) + " |", flush=True)
    draws = np.array([v for k, v in results.items() if k.startswith("random")])  # (draws, parts)
    print(f"| random, {len(draws)} draws: mean ± sd (min-max) | " + " | ".join(
        f"{d.mean():.3f} ± {d.std(ddof=1):.3f} ({d.min():.3f}-{d.max():.3f})" for d in draws.T) + " |")
    print("\nShare of each group the global 50% cut (mean-normalized scores) removes:")
    print("| ranking | " + " | ".join(f"{g.id} ({g.size})" for g in groups) + " |\n" + "|---" * (len(groups) + 1) + "|")
    for name, scores in rankings.items():
        if name.startswith("random") and name != "random draw 0":
            continue
        plan = allocate(graph.groups, scores, ratio=0.5, scope="global", target="channels", round_to=None)
        print(f"| {name} | " + " | ".join(f"{len(plan.removed.get(g.id, ())) / g.size:.2f}" for g in groups) + " |")


if __name__ == "__main__":
    main()
