"""One-shot LLM pruning on a small LLaMA-style model trained on Brown: perplexity, time, memory.

Dense vs magnitude vs Wanda vs SparseGPT at 50% and 70% unstructured, 2:4 and 4:8 sparsity of
every linear layer in the blocks, and structured removal of FFN channels (and heads) scored by
aggregated |W|·||X|| ("wanda-sp") vs plain |W| ("magnitude-sp"). Perplexity is on held-out Brown texts (every 10th text; fixed
128-token windows); calibration is 32 windows of 128 tokens from the training texts. Each
configuration runs in its own fresh process (one thread), so its time and its peak memory are its
own: ``prune s`` is the wall time of the pruning call (calibration passes included), ``held MiB``
is what the engine holds at its peak (one block's hidden states + that block's statistics), and
``RSS +MiB`` is how much the process's resident memory grew at peak during the pruning call
(structured pruning deep-copies the model twice: once to silence units, once in the surgery).

    python benchmarks/llm_oneshot.py [--eval-tokens 65536] [--calib 32] [--only wanda-50%]

The first run trains the model (about 15 minutes on a shared 2-core CPU) and caches it under
``benchmarks/.cache/``; later runs take a few minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CONFIGS = {  # name -> (kind, kwargs)
    "dense": ("dense", {}),
    "magnitude 50%": ("oneshot", {"method": "magnitude", "sparsity": 0.5}),
    "wanda 50%": ("oneshot", {"method": "wanda", "sparsity": 0.5}),
    "sparsegpt 50%": ("oneshot", {"method": "sparsegpt", "sparsity": 0.5}),
    "magnitude 2:4": ("oneshot", {"method": "magnitude", "nm": (2, 4)}),
    "wanda 2:4": ("oneshot", {"method": "wanda", "nm": (2, 4)}),
    "sparsegpt 2:4": ("oneshot", {"method": "sparsegpt", "nm": (2, 4)}),
    "magnitude 4:8": ("oneshot", {"method": "magnitude", "nm": (4, 8)}),
    "wanda 4:8": ("oneshot", {"method": "wanda", "nm": (4, 8)}),
    "sparsegpt 4:8": ("oneshot", {"method": "sparsegpt", "nm": (4, 8)}),
    "magnitude 70%": ("oneshot", {"method": "magnitude", "sparsity": 0.7}),
    "wanda 70%": ("oneshot", {"method": "wanda", "sparsity": 0.7}),
    "sparsegpt 70%": ("oneshot", {"method": "sparsegpt", "sparsity": 0.7}),
    "magnitude-sp FFN 30%": ("structured", {"channel_ratio": 0.3, "score": "magnitude"}),
    "wanda-sp FFN 30%": ("structured", {"channel_ratio": 0.3, "score": "wanda"}),
    "magnitude-sp FFN 30% + heads 25%": ("structured", {"channel_ratio": 0.3, "head_ratio": 0.25, "score": "magnitude"}),
    "wanda-sp FFN 30% + heads 25%": ("structured", {"channel_ratio": 0.3, "head_ratio": 0.25, "score": "wanda"}),
    # the consumers (down_proj, o_proj) refit by least squares on the calibration tokens (reconstruct.py)
    "wanda-sp FFN 30% + LS": ("structured", {"channel_ratio": 0.3, "score": "wanda", "reconstruct": "least_squares"}),
    "wanda-sp FFN 30% + heads 25% + LS": ("structured", {"channel_ratio": 0.3, "head_ratio": 0.25, "score": "wanda",
                                                         "reconstruct": "least_squares"}),
    "wanda-sp FFN 50% + heads 50%": ("structured", {"channel_ratio": 0.5, "head_ratio": 0.5, "score": "wanda"}),
    "wanda-sp FFN 50% + heads 50% + LS": ("structured", {"channel_ratio": 0.5, "head_ratio": 0.5, "score": "wanda",
                                                         "reconstruct": "least_squares"}),
}


class RssGrowth:
    """Peak growth of this process's resident memory while the block runs, sampled every 2 ms from
    /proc/self/statm (the process-lifetime peak ``ru_maxrss`` is already set by loading the model)."""

    def __enter__(self) -> "RssGrowth":
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.start) / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()


def calibration_batches(train: torch.Tensor, seq: int, calib: int) -> list[torch.Tensor]:
    """``calib`` random training windows of ``seq`` tokens, in batches of 8 (seeded)."""
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, train.numel() - seq, (calib,), generator=g).tolist()
    return list(torch.stack([train[s:s + seq] for s in starts]).split(8))


def outlier_ratios(model, batches) -> list[float]:
    """Per linear layer in the blocks: largest / median input-feature norm over the calibration
    tokens. Wanda's edge over magnitude comes from a few input features far louder than the rest."""
    from prunekit.pruning.oneshot.blocks import linear_layers
    from prunekit.pruning.oneshot.stats import collect_inputs

    layers = {f"{i}.{n}": m for i, block in enumerate(model.model.layers) for n, m in linear_layers(block).items()}
    with torch.no_grad(), collect_inputs(layers, hessian=False,
                                         in_features={k: m.in_features for k, m in layers.items()}) as stats:
        for batch in batches:
            model(batch)
    return [float(s.norms().max() / s.norms().median()) for s in stats.values()]


def worker(name: str, eval_tokens: int, calib: int) -> dict:
    """Prune one configuration and measure it (runs in its own process)."""
    from tiny_lm import load_or_train

    from prunekit.evaluation.perplexity import perplexity
    from prunekit.pruning.oneshot import prune_oneshot, prune_structured

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _, train, test, info = load_or_train(log=lambda *_: None)
    seq = info["settings"]["seq_len"]
    batches = calibration_batches(train, seq, calib)
    kind, kwargs = CONFIGS[name]
    params = sum(p.numel() for p in model.parameters())
    started = time.perf_counter()
    held = 0
    with RssGrowth() as rss:
        if kind == "oneshot":
            model, result = prune_oneshot(model, batches, inplace=True, **kwargs)
            held = result.peak_held_bytes
        elif kind == "structured":
            model, result = prune_structured(model, batches, **kwargs)
            held = result.peak_held_bytes
    seconds = time.perf_counter() - started
    grown = rss.mib
    blocks = [p for n, p in model.named_parameters() if ".layers." in n and p.dim() == 2]
    zeros = sum(int((p == 0).sum()) for p in blocks) / sum(p.numel() for p in blocks)
    ppl = perplexity(model, test[:eval_tokens], seq_len=seq, batch_size=8)
    return {"name": name, "ppl": ppl, "seconds": seconds if kind != "dense" else 0.0, "held_mib": held / 2**20,
            "rss_mib": grown, "block_zeros": zeros, "params": sum(p.numel() for p in model.parameters()),
            "dense_params": params, "cached_ppl": info.get("test_perplexity"), "info": info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-tokens", type=int, default=65536, help="held-out tokens scored (0: all)")
    parser.add_argument("--calib", type=int, default=32, help="calibration windows of 128 tokens")
    parser.add_argument("--only", nargs="*", default=None, help="configuration names (default: all)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    eval_tokens = args.eval_tokens or 10**12
    if args.worker:
        print(json.dumps(worker(args.worker, eval_tokens, args.calib)))
        return
    from tiny_lm import load_or_train

    model, _, train, test, info = load_or_train()  # trains and caches once, before the workers start
    ratios = sorted(outlier_ratios(model, calibration_batches(train, info["settings"]["seq_len"], args.calib)))
    print(f"model: LLaMA-style, {info['params']:,} parameters, {info['settings']['layers']} blocks, hidden "
          f"{info['settings']['hidden']}, FFN {info['settings']['intermediate']}, BPE vocab {info['settings']['vocab']}; "
          f"trained {info['settings']['steps']} steps ({info['train_seconds']} s); "
          f"held-out tokens scored: {min(eval_tokens, int(test.numel())):,}; calibration {args.calib} x 128 tokens")
    print(f"largest / median input-feature norm of the {len(ratios)} block layers: median {ratios[len(ratios) // 2]:.1f}, "
          f"max {ratios[-1]:.1f}")
    names = args.only or list(CONFIGS)
    rows = []
    for name in names:
        done = subprocess.run([sys.executable, __file__, "--worker", name, "--eval-tokens", str(eval_tokens),
                               "--calib", str(args.calib)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {name}: perplexity {row['ppl']:.2f} ({row['seconds']:.1f} s)", flush=True)
    dense = next((r["ppl"] for r in rows if r["name"] == "dense"), None)
    print()
    print("| configuration | perplexity | vs dense | zeros in blocks | parameters | prune s | held MiB | RSS +MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['ppl'] / dense:.2f}x" if dense else ""
        print(f"| {r['name']} | {r['ppl']:.2f} | {ratio} | {r['block_zeros']:.1%} | {r['params']:,} | "
              f"{r['seconds']:.1f} | {r['held_mib']:.1f} | {r['rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
