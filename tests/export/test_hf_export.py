"""Pruned HF token models export with dynamic batch and sequence axes, checked at other shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytestmark = pytest.mark.transformers
torch.set_num_threads(1)

from hf_tiny import VOCAB, prune_tiny_bert, tiny_bert  # noqa: E402
from prunekit.errors import ExportError, InvalidParameterError  # noqa: E402
from prunekit.export.hf import (TokenModel, export_token_model, mean_pool, random_token_inputs,  # noqa: E402
                                token_input_names, verify_token_model)
from prunekit.export.onnx import export_onnx  # noqa: E402


def _dims(path: Path) -> dict[str, list]:
    import onnx

    graph = onnx.load(str(path)).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.input) + list(graph.output)}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_pruned_bert_exports_with_dynamic_batch_and_sequence(tmp_path: Path, attn: str) -> None:
    pruned, _ = prune_tiny_bert(tiny_bert(attn=attn))
    assert [layer.attention.self.num_attention_heads for layer in pruned.encoder.layer] == [3, 2]
    result = export_token_model(pruned, tmp_path / "bert.onnx", check_shapes=((1, 1), (1, 7), (3, 33), (8, 128)))
    assert result.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert set(result.max_abs_diff) == {(1, 1), (1, 7), (3, 33), (8, 128)}  # none is the (2, 16) export shape
    assert max(result.max_abs_diff.values()) <= 1e-4
    dims = _dims(result.path)
    assert dims["input_ids"] == ["batch", "sequence"] and dims["token_type_ids"] == ["batch", "sequence"]
    assert dims["last_hidden_state"] == ["batch", "sequence", 32]


def test_sentence_embedding_output_is_pooled_over_unpadded_tokens(tmp_path: Path) -> None:
    pruned, _ = prune_tiny_bert(tiny_bert())
    result = export_token_model(pruned, tmp_path / "emb.onnx", output="sentence_embedding",
                                check_shapes=((1, 5), (4, 40)))
    assert _dims(result.path)["sentence_embedding"][0] == "batch"
    import onnxruntime as ort

    feed = random_token_inputs(result.input_names, 2, 10, vocab_size=VOCAB, pad=True, seed=3)
    emb = ort.InferenceSession(str(result.path)).run(None, {k: v.numpy() for k, v in feed.items()})[0]
    with torch.no_grad():  # by hand: row 0 keeps 5 tokens, so its embedding is the first 5 alone
        alone = pruned(input_ids=feed["input_ids"][:1, :5]).last_hidden_state[0].mean(0)
    np.testing.assert_allclose(emb[0], (alone / alone.norm()).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), [1.0, 1.0], atol=1e-6)


def test_mean_pool_matches_hand_computation() -> None:
    hidden = torch.tensor([[[3.0, 4.0], [100.0, 100.0]], [[1.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[1, 0], [1, 1]])
    out = mean_pool(hidden, mask)
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [2 ** -0.5, 2 ** -0.5]]))


def test_fixed_sequence_export_is_caught(tmp_path: Path) -> None:
    model = TokenModel(tiny_bert())
    example = random_token_inputs(("input_ids", "attention_mask", "token_type_ids"), 2, 16, vocab_size=VOCAB, pad=True)
    path = export_onnx(model, example, tmp_path / "fixed.onnx", input_names=tuple(example),
                       output_names=("last_hidden_state",),
                       dynamic_axes={n: {0: "batch"} for n in (*example, "last_hidden_state")})  # sequence fixed
    with pytest.raises(ExportError, match=r"fails at \(batch, seq\)=\(1, 7\)"):
        verify_token_model(model, path, check_shapes=((1, 7),))
    assert verify_token_model(model, path, check_shapes=((3, 16),))[(3, 16)] <= 1e-4


def test_dynamic_axes_must_name_inputs_or_outputs(tmp_path: Path) -> None:
    model = TokenModel(tiny_bert())
    example = random_token_inputs(("input_ids", "attention_mask"), 1, 4, vocab_size=VOCAB)
    with pytest.raises(ExportError, match=r"dynamic_axes names \['ids'\]"):
        export_onnx(model, example, tmp_path / "x.onnx", dynamic_axes={"ids": {0: "batch"}})


def test_token_inputs_follow_the_model() -> None:
    from transformers import DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

    roberta = RobertaModel(RobertaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=16, type_vocab_size=1))
    distil = DistilBertModel(DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=1, n_heads=2, hidden_dim=16))
    assert token_input_names(tiny_bert()) == ("input_ids", "attention_mask", "token_type_ids")
    assert token_input_names(roberta) == ("input_ids", "attention_mask")
    assert token_input_names(distil) == ("input_ids", "attention_mask")
    with pytest.raises(InvalidParameterError, match="takes no 'input_ids'"):
        token_input_names(torch.nn.Linear(2, 2))
    with pytest.raises(InvalidParameterError, match="'output' parameter of TokenModel"):
        TokenModel(tiny_bert(), output="pooler")  # type: ignore[arg-type]


def test_distilbert_exports_without_token_types(tmp_path: Path) -> None:
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    model = DistilBertModel(DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=1, n_heads=2, hidden_dim=16)).eval()
    result = export_token_model(model, tmp_path / "d.onnx", check_shapes=((1, 3), (5, 21)))
    assert result.input_names == ("input_ids", "attention_mask")
    assert max(result.max_abs_diff.values()) <= 1e-4


def test_keyword_inputs_in_tokenizer_order_keep_their_names(tmp_path: Path) -> None:
    """A tokenizer yields input_ids, token_type_ids, attention_mask; the forward takes another order."""
    model = TokenModel(tiny_bert(), "sentence_embedding")
    ordered = random_token_inputs(("input_ids", "attention_mask", "token_type_ids"), 2, 10, vocab_size=VOCAB, pad=True)
    example = {k: ordered[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    path = export_onnx(model, example, tmp_path / "tok.onnx", output_names=("sentence_embedding",),
                       dynamic_axes={n: {0: "batch", 1: "sequence"} for n in example})
    assert verify_token_model(model, path, check_shapes=((3, 12),))[(3, 12)] <= 1e-4


def test_export_onnx_gives_token_dicts_a_sequence_axis_by_default(tmp_path: Path) -> None:
    model = TokenModel(tiny_bert())
    example = random_token_inputs(("input_ids", "attention_mask"), 1, 6, vocab_size=VOCAB, pad=True)
    path = export_onnx(model, example, tmp_path / "auto.onnx", output_names=("last_hidden_state",))
    assert _dims(path)["attention_mask"] == ["batch", "sequence"]
    assert _dims(path)["last_hidden_state"][:2] == ["batch", "sequence"]
    assert max(verify_token_model(model, path, check_shapes=((4, 19), (1, 2))).values()) <= 1e-4
