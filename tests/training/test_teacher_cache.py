"""TeacherCache: a text's cached outputs equal the teacher run on that text alone, whatever batch it lands in."""

from __future__ import annotations

import pytest
import torch

from prunekit.data.text import PadCollate, tokenize
from prunekit.errors import InvalidParameterError
from prunekit.models.hf import load_hf
from prunekit.training._batch import call_model
from prunekit.training.teacher_cache import TeacherCache, capture_outputs, masked_feature_mse
from tests.hf_text import sentences, tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    model, tokenizer = load_hf(str(tiny_checkpoint(tmp_path_factory.mktemp("bert"))), "embedding")
    texts = tokenize(tokenizer, [t for t, _ in sentences(11, seed=4)], max_length=32)
    return model.eval(), texts, PadCollate(tokenizer.pad_token_id, "embedding")


def _alone(model: torch.nn.Module, ids: list[int], collate: PadCollate) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher on one unpadded text: its output and its layers' hidden states (T, layers, H)."""
    hidden, handles = capture_outputs(list(model.model.encoder.layer))
    with torch.no_grad():
        out = call_model(model, collate([(ids, 0)])[0])
    for handle in handles:
        handle.remove()
    return out[0], torch.stack([hidden[k][0] for k in range(len(hidden))], dim=1)


def test_cached_targets_equal_each_text_run_alone(tiny) -> None:  # noqa: ANN001
    model, texts, collate = tiny
    assert len({len(t) for t in texts}) > 1, "the texts must differ in length for padding to matter"
    cache = TeacherCache.build(model, texts, collate, list(model.model.encoder.layer), batch_size=4,
                               dtype=torch.float32)
    index = [7, 0, 3]  # an arbitrary order, padded to the widest of them plus two
    width = max(len(texts[i]) for i in index) + 2
    outputs, features = cache.targets(index, width)
    assert features.shape == (3, width, 2, 32)
    for row, i in enumerate(index):
        out, hidden = _alone(model, texts[i], collate)
        torch.testing.assert_close(outputs[row], out, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(features[row, :len(texts[i])], hidden, atol=1e-5, rtol=1e-4)
        assert features[row, len(texts[i]):].abs().sum() == 0  # padding is zero
    assert cache.features.shape[0] == sum(len(t) for t in texts)


def test_float16_cache_is_close_and_half_the_memory(tiny) -> None:  # noqa: ANN001
    model, texts, collate = tiny
    layers = list(model.model.encoder.layer)
    full = TeacherCache.build(model, texts, collate, layers, dtype=torch.float32)
    half = TeacherCache.build(model, texts, collate, layers)
    assert half.features.dtype == torch.float16
    assert half.features.element_size() * 2 == full.features.element_size()
    torch.testing.assert_close(half.features.float(), full.features, atol=5e-3, rtol=1e-3)


def test_build_leaves_the_teacher_as_it_was(tiny) -> None:  # noqa: ANN001
    model, texts, collate = tiny
    model.train()
    layers = list(model.model.encoder.layer)
    TeacherCache.build(model, texts[:3], collate, layers)
    assert model.training
    assert all(not layer._forward_hooks for layer in layers)
    model.eval()


def test_build_and_targets_reject_bad_input(tiny) -> None:  # noqa: ANN001
    model, texts, collate = tiny
    layers = list(model.model.encoder.layer)
    with pytest.raises(InvalidParameterError, match="got no texts"):
        TeacherCache.build(model, [], collate, layers)
    with pytest.raises(InvalidParameterError, match="got no layers"):
        TeacherCache.build(model, texts, collate, [])
    cache = TeacherCache.build(model, texts[:2], collate, layers)
    with pytest.raises(InvalidParameterError, match=f"text 0 has {len(texts[0])} tokens but the batch is 2 wide"):
        cache.targets([0], 2)


def test_masked_feature_mse_counts_real_tokens_only() -> None:
    student = torch.zeros(2, 3, 1)
    teacher = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [50.0], [60.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # real tokens: 1, 3 and 2 -> (1 + 9 + 4) / 3
    assert masked_feature_mse(student, teacher, mask).item() == pytest.approx(14 / 3)
    with pytest.raises(InvalidParameterError, match="no real token"):
        masked_feature_mse(student, teacher, torch.zeros(2, 3))
