"""What the runner does differently for a Hugging Face text model: metrics, objectives, ONNX and latency.

- Metrics by task: classification as usual (accuracy, F1); ``embedding``: mean cosine to the dense
  model's embeddings of the same held-out texts, and a linear probe (logistic regression on each
  model's own train-split embeddings, scored on the test split) when the texts are labelled;
  ``causal_lm``: perplexity. Parameters are split into the embedding tables and the rest.
- Export with dynamic batch and sequence axes, verified against PyTorch at several shapes, and
  ONNX Runtime latency on token ids at (batch, sequence) shapes (``prunekit.export.hf``,
  ``prunekit.evaluation.token_latency``).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from prunekit.evaluation.text_metrics import embedding_metrics, perplexity, predict_all

Predictor = Callable[[Any], torch.Tensor]
LATENCY_SEQUENCE = 32  # tokens per text for the latency table (batch sizes come from the recipe)


class TextMeasure:
    """Task metrics of any predictor, with the dense model's outputs cached as the reference."""

    def __init__(self, bundle: Any, dense: nn.Module) -> None:
        from prunekit.evaluation.metrics import torch_predictor

        self.bundle, self.dense_predict = bundle, torch_predictor(dense)
        self._reference: dict[int, torch.Tensor] = {}
        self.test_cosines: list[float] = []  # every PyTorch evaluation on the test split, in order

    def reference(self, loader: Any) -> torch.Tensor:
        if id(loader) not in self._reference:
            self._reference[id(loader)] = predict_all(self.dense_predict, loader)[0]
        return self._reference[id(loader)]

    def metrics(self, predict: Predictor, loader: Any, *, log_test: bool = False) -> dict[str, Any]:
        """Task metrics; ``log_test`` keeps the test split's cosine in ``test_cosines`` (recovery notes)."""
        task = self.bundle.task
        if task == "classification":
            from prunekit.evaluation.metrics import evaluate

            return evaluate(predict, loader, task="classification", num_classes=self.bundle.num_classes)
        if task == "causal_lm":
            return {**perplexity(predict, loader), "accuracy": None}
        labelled = self.bundle.num_classes is not None
        out: dict[str, Any] = embedding_metrics(predict, loader, reference=self.reference(loader),
                                                train=self.bundle.train if labelled else None)
        out["loss"] = 1.0 - out["cosine_mean"]
        if log_test and loader is self.bundle.test:
            self.test_cosines.append(out["cosine_mean"])
        out["accuracy"] = out.pop("probe_accuracy", None)
        out["f1_macro"] = out.pop("probe_f1_macro", None)
        return out


def task_metric_names(task: str) -> tuple[str, ...]:
    """The extra numbers of each task that go into the report's table."""
    return {"embedding": ("cosine_mean", "cosine_p5", "cosine_min"), "causal_lm": ("perplexity",),
            "classification": ("precision_macro", "recall_macro", "f1_weighted")}.get(task, ())


def text_deploy(run: Any, dense: nn.Module, compressed: nn.Module) -> tuple[list, Any, dict[str, str]]:
    """Export both models (dynamic axes, verified), int8 if asked, time them on token ids, score both files."""
    from prunekit.evaluation.complexity import count_macs
    from prunekit.evaluation.token_latency import onnx_token_latency, shape_label
    from prunekit.export.hf import export_token_model, vocab_size_of
    from prunekit.export.onnx import onnx_size_bytes
    from prunekit.models.hf import parameter_breakdown
    from prunekit.reporting.report import ModelMetrics

    r = run.recipe
    run.stage("exporting to ONNX (dynamic batch and sequence axes, checked against PyTorch)")
    longest = int(getattr(dense.config, "max_position_embeddings", 128) or 128)
    checks = tuple((b, min(s, longest)) for b, s in ((1, 1), (1, 7), (3, 33), (8, 128)))
    paths = {name: export_token_model(model, run.work / f"{name}.onnx", opset=r.export.opset,
                                      example_shape=(2, min(16, longest)), check_shapes=checks).path
             for name, model in (("dense", dense), ("compressed", compressed))}
    quant_info = None
    if r.quantization is not None and r.quantization.enabled:
        paths["compressed"], quant_info = run.quantize(compressed)
    shapes = [(b, LATENCY_SEQUENCE) for b in r.evaluation.batch_sizes]
    run.stage(f"measuring ONNX Runtime latency on token ids {', '.join(shape_label(s) for s in shapes)} "
              f"(dense and compressed alternating, {r.evaluation.latency_runs} runs)")
    timings = onnx_token_latency(paths, vocab_size=vocab_size_of(dense), shapes=shapes,
                                 runs=r.evaluation.latency_runs, warmup=r.evaluation.warmup_runs)
    run.stage("evaluating both exported models on the held-out test split")
    results = []
    for name, model in (("dense", dense), ("compressed", compressed)):
        m = run.onnx_metrics(paths[name], run.bundle.test)
        parts = parameter_breakdown(model)
        extra = {k: float(m[k]) for k in task_metric_names(run.bundle.task) if isinstance(m.get(k), (int, float))}
        extra |= {"embedding_params": float(parts["embedding"]), "encoder_params": float(parts["encoder"])}
        results.append(ModelMetrics(
            params=parts["total"], macs=count_macs(model, run.example).total, accuracy=m.get("accuracy"),
            f1_macro=m.get("f1_macro"), file_size_bytes=onnx_size_bytes(paths[name]),
            latency_ms={b: timings[name][shape_label((b, LATENCY_SEQUENCE))]["p50_ms"] for b in r.evaluation.batch_sizes},
            task_metrics=extra))
    run.deployment = [{"model": name, "runtime": "onnxruntime", "batch": b, "sequence": LATENCY_SEQUENCE,
                       "p50_ms": round(timings[name][shape_label((b, LATENCY_SEQUENCE))]["p50_ms"], 4),
                       "p95_ms": round(timings[name][shape_label((b, LATENCY_SEQUENCE))]["p95_ms"], 4)}
                      for name in paths for b in r.evaluation.batch_sizes]
    if run.bundle.task == "embedding" and run.bundle.num_classes is not None:
        run.notes.append("accuracy and macro F1 of an embedding model are those of a linear probe: logistic "
                         "regression fitted on each model's own train-split embeddings, predicting the text labels "
                         f"({run.bundle.num_classes} classes) of the test split")
    cosines = run.text.test_cosines
    if len(cosines) >= 2:
        run.notes.append(f"mean cosine to the dense embeddings on the test split: right after the cut "
                         f"{cosines[0]:.4f}, after recovery {cosines[-1]:.4f}")
    artifacts = {"dense_onnx": Path(paths["dense"]).name, "compressed_onnx": Path(paths["compressed"]).name,
                 "compressed_weights": "compressed/model.safetensors", "tokenizer": "compressed/tokenizer"}
    if (run.work / "compressed" / "pruning_record.json").is_file():
        artifacts["pruning_record"] = "compressed/pruning_record.json"
    return results, quant_info, artifacts


def layerwise_pairs(model: nn.Module) -> dict[str, str]:
    """Every transformer layer paired with itself in the teacher (residual widths are never pruned)."""
    layers = getattr(getattr(getattr(model, "model", None), "encoder", None), "layer", None)
    if layers is None:
        layers = getattr(getattr(getattr(model, "model", None), "model", None), "layers", None)
        prefix = "model.model.layers"
    else:
        prefix = "model.encoder.layer"
    return {f"{prefix}.{i}": f"{prefix}.{i}" for i in range(len(layers))} if layers is not None else {}


@contextmanager
def frozen_input_embeddings(model: nn.Module) -> Iterator[nn.Parameter]:
    """Keep a Hugging Face model's vocabulary table fixed inside the block (``recovery.freeze_embeddings``).

    On a small encoder the table holds half the parameters (MiniLM: 11.7M of 22.7M), and recovery on a
    few thousand sentences updates only the rows of tokens it sees, moving them away from the rows it
    never sees. Frozen, it costs no gradient and no optimizer state. A tied output head (causal LMs)
    is the same tensor and stays fixed too. The previous ``requires_grad`` comes back after the block.

    Raises
    ------
    SourceError
        The model exposes no input embeddings (``get_input_embeddings``).
    """
    from prunekit.errors import SourceError

    inner = getattr(model, "model", model)
    table = inner.get_input_embeddings() if hasattr(inner, "get_input_embeddings") else None
    if table is None or not isinstance(getattr(table, "weight", None), nn.Parameter):
        raise SourceError(f"recovery.freeze_embeddings: {type(inner).__name__} has no input embedding table "
                          f"(get_input_embeddings); use it with a model.hf checkpoint or set it to false")
    before = table.weight.requires_grad
    table.weight.requires_grad_(False)
    try:
        yield table.weight
    finally:
        table.weight.requires_grad_(before)


def scan_evaluator(dense: nn.Module, bundle: Any) -> Callable[[nn.Module, Any], tuple[float, float]] | None:
    """``(loss, score)`` of a pruned copy for sensitivity scans; None keeps cross-entropy/accuracy.

    ``embedding``: ``(1 - mean cosine, mean cosine)`` to the dense model's embeddings of the same
    texts; ``causal_lm``: ``(next-token loss, exp(-loss))`` (the geometric-mean token probability).
    """
    import math

    from prunekit.evaluation.metrics import torch_predictor
    from prunekit.evaluation.text_metrics import cosine_fidelity

    if bundle.task == "embedding":
        cache: dict[int, torch.Tensor] = {}

        def fidelity(model: nn.Module, loader: Any) -> tuple[float, float]:
            if id(loader) not in cache:
                cache[id(loader)] = predict_all(torch_predictor(dense), loader)[0]
            cos = cosine_fidelity(predict_all(torch_predictor(model), loader)[0], cache[id(loader)])["cosine_mean"]
            return 1.0 - cos, cos

        return fidelity
    if bundle.task == "causal_lm":
        def lm(model: nn.Module, loader: Any) -> tuple[float, float]:
            loss = perplexity(torch_predictor(model), loader)["loss"]
            return loss, math.exp(-loss)

        return lm
    return None


def shrink_vocabulary(model: nn.Module, train: Any, tokenizer: Any) -> str:
    """Keep the embedding rows of the tokens in the training text (others read [UNK]); a note saying so."""
    from prunekit.models.vocab import corpus_token_ids, prune_vocabulary

    fallback = tokenizer.unk_token_id
    if fallback is None:
        from prunekit.errors import RecipeError

        raise RecipeError("pruning.vocabulary: corpus needs a tokenizer with an unknown token for unseen ids; "
                          "set pruning.vocabulary: keep")
    kept = corpus_token_ids(train, tokenizer)
    size = model.config.vocab_size
    prune_vocabulary(model, kept, fallback_id=fallback)
    return (f"vocabulary pruned to the {len(kept):,} of {size:,} tokens seen in the training text "
            f"({len(kept) / size:.1%}); other tokens read the [UNK] row. Kept ids: compressed/vocabulary.json "
            f"(prunekit.models.vocab.load_vocabulary rebuilds the table)")

