"""Text sources, length bucketing, padding and splits."""

from __future__ import annotations

import pytest
import torch

from prunekit.data.text import (
    IGNORE_INDEX, BucketBatchSampler, PadCollate, TextSamples, read_text_files, samples_from_items, text_bundle,
)
from prunekit.errors import SourceError


def test_read_text_file_one_text_per_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first text\n\n  second text  \nthird\n")
    samples = read_text_files(path)
    assert samples.texts == ("first text", "second text", "third")
    assert samples.labels is None


def test_class_folders_give_labels_and_documents(tmp_path):
    for name, lines in (("b_sport", "goal\nmatch\n"), ("a_news", "vote\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.txt").write_text(lines)
    samples = read_text_files(tmp_path)
    assert samples.texts == ("vote", "goal", "match")
    assert samples.labels == (0, 1, 1)
    assert samples.label_names == ("a_news", "b_sport")
    assert samples.documents[1] == samples.documents[2] != samples.documents[0]


def test_missing_text_path_is_one_line_error(tmp_path):
    with pytest.raises(SourceError, match=r"text data '.*nope' not found; check data.text.files"):
        read_text_files(tmp_path / "nope")


def test_factory_items_strings_or_pairs():
    assert samples_from_items(["a b", "c"], name="f").labels is None
    assert samples_from_items([("a", 1), ("b", 0)], name="f").labels == (1, 0)
    with pytest.raises(SourceError, match="item 1 is a int; yield strings"):
        samples_from_items(["a", 3], name="f")
    with pytest.raises(SourceError, match="mixed labelled and unlabelled items"):
        samples_from_items([("a", 1), "b"], name="f")
    with pytest.raises(SourceError, match="has label 'x'; labels must be integers"):
        samples_from_items([("a", "x")], name="f")


def test_bucketing_without_shuffle_sorts_by_length_and_covers_everything():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    batches = list(BucketBatchSampler(lengths, 3, shuffle=False))
    assert batches == [[1, 5, 3], [0, 4, 6, 2]]  # lengths (1,2,3), (5,7,8) + the lone (9) joins
    assert len(BucketBatchSampler(lengths, 3, shuffle=False)) == 2
    assert list(BucketBatchSampler(lengths[:6], 3, shuffle=False)) == [[1, 5, 3], [0, 4, 2]]


def test_shuffled_buckets_are_seeded_and_each_batch_comes_from_one_bucket():
    g = torch.Generator().manual_seed(0)
    lengths = list(torch.randint(1, 100, (200,), generator=g).tolist())
    sampler = BucketBatchSampler(lengths, 8, shuffle=True, generator=torch.Generator().manual_seed(3), bucket=5)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert len(batches) == len(sampler)
    for n, expected in ((81, 10), (89, 11)):  # buckets of 40: a lone 81st text joins the 2nd bucket
        odd = BucketBatchSampler(lengths[:n], 8, shuffle=True, generator=torch.Generator().manual_seed(3), bucket=5)
        got = list(odd)
        assert len(got) == len(odd) == expected and min(len(b) for b in got) >= 2
        assert sorted(i for b in got for i in b) == list(range(n))
    # padding waste: a batch's spread is far below a random batch's
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 40
    again = list(BucketBatchSampler(lengths, 8, shuffle=True, generator=torch.Generator().manual_seed(3), bucket=5))
    assert again == batches


def test_pad_collate_masks_and_lm_targets():
    inputs, targets = PadCollate(pad_id=0, task="causal_lm")([([5, 6, 7], -1), ([8], -1)])
    assert inputs["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert targets.tolist() == [[5, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    _, labels = PadCollate(pad_id=0, task="embedding")([([5], 2), ([6, 7], -1)])
    assert labels.tolist() == [2, -1]


class _WordTokenizer:
    """Whitespace tokenizer: id = word length + 10, [CLS]=1 ... [SEP]=2, pad 0."""

    pad_token_id = 0

    def __call__(self, texts, *, truncation, max_length, padding):
        ids = [[1] + [len(w) + 10 for w in t.split()][: max_length - 2] + [2] for t in texts]
        return {"input_ids": ids}


def test_text_bundle_keeps_documents_on_one_side_and_truncates():
    texts = tuple(f"w{'x' * (k % 7)} " * (1 + k % 20) for k in range(60))
    docs = tuple(f"doc{k // 6}" for k in range(60))  # 10 documents of 6 texts
    samples = TextSamples(texts, tuple(k % 2 for k in range(60)), documents=docs)
    bundle = text_bundle(samples, _WordTokenizer(), task="embedding", max_length=8, batch_size=4, seed=1)
    sides = []
    for loader in (bundle.train, bundle.val, bundle.test):
        for inputs, _ in loader:
            assert inputs["input_ids"].shape[1] <= 8
        sides.append(len(loader.dataset))
    assert sum(sides) == 60 and all(n % 6 == 0 for n in sides)  # whole documents only
    assert bundle.num_classes == 2 and bundle.task == "embedding"
    assert set(bundle.example_input) == {"input_ids", "attention_mask"}


def _doc_texts(per_doc: int, tag: str) -> TextSamples:
    """10 documents; each text's first word has ``doc + 1`` letters, so its second token id names the document."""
    texts = tuple(f"{'d' * (k // per_doc + 1)} {tag} " + "w " * (k % 5) for k in range(10 * per_doc))
    return TextSamples(texts, documents=tuple(f"doc{k // per_doc}" for k in range(10 * per_doc)))


def _doc_ids(loader) -> set[int]:
    return {ids[1] - 11 for ids, _ in loader.dataset}


def test_train_texts_add_training_text_and_leave_held_out_sets_unchanged():
    samples, more = _doc_texts(6, "x"), _doc_texts(20, "yy")
    plain = text_bundle(samples, _WordTokenizer(), task="embedding", max_length=16, batch_size=4, seed=3)
    bundle = text_bundle(samples, _WordTokenizer(), task="embedding", max_length=16, batch_size=4, seed=3,
                         train_texts=more)
    for split in ("val", "test", "calib"):
        assert getattr(bundle, split).dataset.ids == getattr(plain, split).dataset.ids
    held = _doc_ids(plain.val) | _doc_ids(plain.test)
    assert _doc_ids(bundle.train) == _doc_ids(plain.train) == set(range(10)) - held
    assert len(bundle.train.dataset) == 20 * len(_doc_ids(plain.train))
    assert all(ids[2] == 12 for ids, _ in bundle.train.dataset)  # every text comes from train_texts
    assert sum(len(x["input_ids"]) for x, _ in bundle.train) == len(bundle.train.dataset)


def test_train_texts_without_documents_are_refused():
    samples = _doc_texts(6, "x")
    with pytest.raises(SourceError, match="need documents"):
        text_bundle(samples, _WordTokenizer(), task="embedding", train_texts=TextSamples(("a b", "c d")))


def test_classification_needs_labels():
    with pytest.raises(SourceError, match="has no labels but data.task is classification"):
        text_bundle(TextSamples(("a", "b", "c")), _WordTokenizer(), task="classification")


def test_brown_passages_are_labelled_by_genre():
    from prunekit.data import brown

    if not brown.available():
        pytest.skip("Brown corpus not fetched (python -m prunekit.data.brown --fetch)")
    from prunekit.data.text import brown_samples

    samples = brown_samples(samples_per_text=1, seed=0)
    assert len(samples.texts) == 500 and len(set(samples.documents)) == 500
    assert len(samples.label_names) == 15 and set(samples.labels) == set(range(15))
    assert all(len(t.split()) >= 5 for t in samples.texts)
