"""int8 vs fp32 on the demo model: size, ONNX Runtime latency (batch 1 and 32) and accuracy per method.

The demo's model: DigitsCNN (width 64) is trained a few epochs, then channel-pruned to half its MACs
as the demo does (L2, global, widths rounded to 8), exported and quantized with each calibration
method. Both models are timed in this one process, alternating run by run, and medians compared.

    .venv/bin/python benchmarks/quantization.py
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from prunekit.data import digits
from prunekit.models import DigitsCNN
from prunekit.pruning.pruner import StructuredPruner
from prunekit.quantization import QuantSpec, onnx_accuracy, quantize_for_deployment


def train(model: torch.nn.Module, loader, epochs: int) -> torch.nn.Module:
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    data = digits()
    dense = train(DigitsCNN(width=64), data.train, epochs=4)
    pruner = StructuredPruner(criterion="l2", ratio=0.5, target="macs", scope="global", round_to=8)
    model = train(pruner.fit(dense, data.example_input).transform(dense), data.train, epochs=1)
    widths = "/".join(str(m.out_channels) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    evaluate = onnx_accuracy(data.test)
    base = QuantSpec()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("minmax", "percentile", "entropy", "mse"):
            result = quantize_for_deployment(model, data.example_input, data.calib, workdir=Path(tmp) / method,
                                             spec=replace(base, method=method), eval_fn=evaluate, repeats=100, threads=1)
            rows.append((method, result))
    print(f"DigitsCNN pruned to 50% MACs (conv widths {widths}), ONNX Runtime 1 thread, QDQ U8S8 per-channel, reduce_range auto; test accuracy")
    print(f"{'method':<11}{'size':>7}{'b1 int8/fp32':>14}{'b32 int8/fp32':>15}{'fp32 acc':>10}{'int8 acc':>10}"
          f"{'delta':>8}  chosen")
    for method, r in rows:
        print(f"{method:<11}{r.size_ratio:>7.3f}{r.speedup(1):>13.2f}x{r.speedup(32):>14.2f}x"
              f"{r.float_score:>10.4f}{r.int8_score:>10.4f}{r.int8_score - r.float_score:>+8.4f}  {r.chosen}")
    r = rows[0][1]
    print(f"fp32 median: b1 {r.latency_s['fp32'][1] * 1e6:.0f} us, b32 {r.latency_s['fp32'][32] * 1e6:.0f} us "
          f"(speed-up = fp32 time / int8 time; > 1 means int8 is faster)")
    for method, r in rows:
        print(f"{method}: {r.reason}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
