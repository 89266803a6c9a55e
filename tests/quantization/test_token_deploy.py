"""Int8 deployment of token models: int64 inputs, dynamic batch and sequence axes, fidelity checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytestmark = pytest.mark.transformers
torch.set_num_threads(1)

from hf_tiny import VOCAB, prune_tiny_bert, tiny_bert  # noqa: E402
from prunekit.export.hf import TokenModel, random_token_inputs  # noqa: E402
from prunekit.quantization.deploy import quantize_for_deployment, token_axes  # noqa: E402

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def _run(path: Path, feed: dict[str, torch.Tensor]) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path)).run(None, {k: v.numpy() for k, v in feed.items()})[0]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_token_axes_follow_inputs_and_output_rank() -> None:
    example = random_token_inputs(NAMES, 1, 12, vocab_size=VOCAB)
    hidden = token_axes(TokenModel(tiny_bert()), example)
    assert hidden["input_ids"] == {0: "batch", 1: "sequence"} and hidden["output"] == {0: "batch", 1: "sequence"}
    pooled = token_axes(TokenModel(tiny_bert(), "sentence_embedding"), example)
    assert pooled["output"] == {0: "batch"}
    assert token_axes(torch.nn.Linear(3, 3), torch.randn(1, 3)) is None
    assert token_axes(torch.nn.Identity(), {"x": torch.randn(2, 3)}) is None  # float inputs are not token ids


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_pruned_bert_int8_runs_at_any_batch_and_length(tmp_path: Path, mode: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # ORT's failed symbolic shape inference used to leave files here
    pruned, _ = prune_tiny_bert(tiny_bert())
    model = TokenModel(pruned, "sentence_embedding")
    example = random_token_inputs(NAMES, 1, 12, vocab_size=VOCAB)
    calib = [random_token_inputs(NAMES, 4, seq, vocab_size=VOCAB, seed=seq, pad=True) for seq in (9, 20, 31)]
    result = quantize_for_deployment(model, example, calib if mode == "static" else None, workdir=tmp_path / "work",
                                     mode=mode, batch_sizes=(1, 4), repeats=3)
    assert set(result.latency_s["int8"]) == {1, 4}
    if mode == "dynamic":  # static QDQ keeps the embedding tables float and adds scales: bigger on a tiny model
        assert result.int8_bytes < result.fp32_bytes
    for batch, seq in ((1, 7), (5, 40)):  # neither is the export shape (1, 12)
        feed = random_token_inputs(NAMES, batch, seq, vocab_size=VOCAB, seed=batch, pad=True)
        with torch.no_grad():
            expected = model(**feed).numpy()
        np.testing.assert_allclose(_run(result.fp32_path, feed), expected, atol=1e-5)
        int8 = _run(result.int8_path, feed)
        assert int8.shape == (batch, 32)
        assert _cosines(int8, expected).min() > 0.98
    assert list(cwd.iterdir()) == []
