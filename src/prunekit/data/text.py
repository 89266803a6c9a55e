"""Text as a DataBundle: strings (and optional labels) tokenized once, batched by length.

Loaders yield ``({"input_ids", "attention_mask"}, targets)``: keyword inputs, the form
``build_graph``, ``collect``, ``finetune`` and the exporters already take. Batches are bucketed
by length (shuffled buckets of similar lengths when training, sorted when evaluating), so a batch
is padded only to its own longest text. Targets depend on the task:

- ``classification``: the class index;
- ``embedding``: the label if the source has one (used by the linear probe), else -1;
- ``causal_lm``: the token ids with padding set to -100 (the language-model loss ignores it).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from prunekit.data.bundle import DataBundle
from prunekit.errors import SourceError

IGNORE_INDEX = -100  # positions the language-model loss skips


@dataclass(frozen=True)
class TextSamples:
    """Raw texts with optional integer labels and optional documents (kept on one side of a split)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...] | None = None
    label_names: tuple[str, ...] | None = None
    documents: tuple[str, ...] | None = None  # e.g. the Brown text a sentence comes from
    name: str = "text"


def read_text_files(path: str | Path) -> TextSamples:
    """One text per non-empty line of a file, or of every ``*.txt`` file in a folder.

    A folder of sub-folders is labelled: each sub-folder's name is a class (``data/sports/a.txt``).
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"text data '{path}' not found; check data.text.files")
    if path.is_file():
        texts = _lines(path)
        if not texts:
            raise SourceError(f"text file '{path}' holds no non-empty line; put one text per line")
        return TextSamples(tuple(texts), name=path.stem)
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if classes:
        texts, labels, docs = [], [], []
        for index, folder in enumerate(classes):
            for file in sorted(folder.glob("*.txt")):
                lines = _lines(file)
                texts += lines
                labels += [index] * len(lines)
                docs += [str(file)] * len(lines)
        if not texts:
            raise SourceError(f"text folder '{path}' has class folders but no *.txt lines in them")
        return TextSamples(tuple(texts), tuple(labels), tuple(p.name for p in classes), tuple(docs), path.name)
    texts, docs = [], []
    for file in sorted(path.glob("*.txt")):
        lines = _lines(file)
        texts += lines
        docs += [str(file)] * len(lines)
    if not texts:
        raise SourceError(f"text folder '{path}' holds no *.txt file with text; put one text per line")
    return TextSamples(tuple(texts), documents=tuple(docs), name=path.name)


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def samples_from_items(items: Iterable[Any], *, name: str) -> TextSamples:
    """Strings, or ``(string, label)`` pairs with integer labels, from a user's factory."""
    texts: list[str] = []
    labels: list[int] = []
    for k, item in enumerate(items):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
            texts.append(item[0])
            try:
                labels.append(int(item[1]))
            except (TypeError, ValueError):
                raise SourceError(f"text factory '{name}' item {k} has label {item[1]!r}; labels must be integers") from None
        else:
            raise SourceError(f"text factory '{name}' item {k} is a {type(item).__name__}; yield strings or "
                              f"(string, integer label) pairs")
    if not texts:
        raise SourceError(f"text factory '{name}' yielded no texts")
    if labels and len(labels) != len(texts):
        raise SourceError(f"text factory '{name}' mixed labelled and unlabelled items; label all or none")
    return TextSamples(tuple(texts), tuple(labels) if labels else None, name=name)


def brown_samples(*, sentences_per_sample: int = 1, samples_per_text: int = 8, min_words: int = 5,
                  seed: int = 0, root: str | None = None) -> TextSamples:
    """Brown corpus passages labelled by genre (15 classes), ``samples_per_text`` from each of 500 texts.

    Each passage is ``sentences_per_sample`` consecutive sentences; sentences shorter than
    ``min_words`` words are skipped. Passages are chosen with ``seed``.
    """
    from prunekit.data.brown import GENRES, load_texts

    genres = sorted(GENRES)
    rng = random.Random(seed)
    texts, labels, docs = [], [], []
    for text in load_texts(Path(root) if root else None):
        sentences = [s for s in text.sentences if len(s.split()) >= min_words]
        starts = list(range(0, max(len(sentences) - sentences_per_sample + 1, 0), sentences_per_sample))
        for start in sorted(rng.sample(starts, min(samples_per_text, len(starts)))):
            texts.append(" ".join(sentences[start:start + sentences_per_sample]))
            labels.append(genres.index(text.genre))
            docs.append(text.id)
    return TextSamples(tuple(texts), tuple(labels), tuple(GENRES[g] for g in genres), tuple(docs), "brown")


class TokenizedText(Dataset):
    """Token id lists (unpadded) and one integer target per text."""

    def __init__(self, ids: list[list[int]], targets: list[int]) -> None:
        self.ids, self.targets = ids, targets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.ids[index], self.targets[index]


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length: shuffled buckets of ``bucket`` batches, sorted inside, when training.

    Without shuffling every batch is cut from the texts sorted by length (least padding, fixed order).
    ``generator`` drives the shuffle, so a seeded run repeats exactly. A lone text left at the end
    of a bucket joins the batch before it: objectives that contrast a batch's texts need two.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                 bucket: int = 50) -> None:
        self.lengths, self.batch_size, self.shuffle, self.bucket = list(lengths), batch_size, shuffle, bucket
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            yield from self._cut(sorted(range(n), key=lambda i: (self.lengths[i], i)))
            return
        perm = torch.randperm(n, generator=self.generator).tolist()
        batches, start = [], 0
        for size in self._spans():
            batches += self._cut(sorted(perm[start:start + size], key=lambda i: self.lengths[i]))
            start += size
        for k in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[k]

    def _cut(self, order: list[int]) -> list[list[int]]:
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            lone = batches.pop()
            batches[-1] = batches[-1] + lone
        return batches

    def _spans(self) -> list[int]:
        """Bucket sizes: ``batch_size * bucket`` each, a lone last text added to the bucket before."""
        n, span = len(self.lengths), self.batch_size * self.bucket
        sizes = [min(span, n - s) for s in range(0, n, span)]
        if len(sizes) > 1 and sizes[-1] == 1:
            sizes[-2] += sizes.pop()
        return sizes

    def __len__(self) -> int:
        b = self.batch_size
        spans = [len(self.lengths)] if not self.shuffle else self._spans()
        return sum(-(-m // b) - (1 if m > b and m % b == 1 else 0) for m in spans)


class PadCollate:
    """Pad a batch to its longest text; targets per the task (see the module docstring)."""

    def __init__(self, pad_id: int, task: str) -> None:
        self.pad_id, self.task = pad_id, task

    def __call__(self, items: list[tuple[list[int], int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        width = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ids, _) in enumerate(items):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, :len(ids)] = 1
        if self.task == "causal_lm":
            targets = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
        else:
            targets = torch.tensor([t for _, t in items], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": mask}, targets


def tokenize(tokenizer: Any, texts: Sequence[str], *, max_length: int) -> list[list[int]]:
    """Token ids of each text (with the tokenizer's special tokens), truncated to ``max_length``."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return [list(ids) for ids in encoded["input_ids"]]


def text_bundle(samples: TextSamples, tokenizer: Any, *, task: str, max_length: int = 128, batch_size: int = 32,
                val_fraction: float = 0.15, test_fraction: float = 0.2, calib_samples: int = 256,
                seed: int = 0, train_texts: TextSamples | None = None) -> DataBundle:
    """Tokenize, split (whole documents go to one side when known) and batch ``samples``.

    ``train_texts`` trains on more text without moving the held-out sets: ``samples`` decides the
    split, then the train loader holds every text of ``train_texts`` whose document is not on the
    validation or test side (calibration still draws from ``samples``' train texts). So a run can
    distil on thousands more sentences and still be scored on exactly the same held-out texts.

    Raises
    ------
    SourceError
        A classification task without labels, too few texts to split, or ``train_texts`` without
        documents to keep the held-out ones out.
    """
    if task == "classification" and samples.labels is None:
        raise SourceError(f"text data '{samples.name}' has no labels but data.task is classification; "
                          f"label the texts (class sub-folders or (text, label) pairs) or use task: embedding")
    train_idx, val_idx, test_idx = _split(samples, val_fraction, test_fraction, seed)
    ids = tokenize(tokenizer, samples.texts, max_length=max_length)
    labels = list(samples.labels) if samples.labels is not None else [-1] * len(ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    collate = PadCollate(pad_id, task)

    def loader(idx: list[int], shuffle: bool, offset: int = 1) -> DataLoader:
        data = TokenizedText([ids[i] for i in idx], [labels[i] for i in idx])
        sampler = BucketBatchSampler([len(ids[i]) for i in idx], batch_size, shuffle=shuffle,
                                     generator=torch.Generator().manual_seed(seed + offset))
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate)

    calib_idx = train_idx[:calib_samples]
    example = collate([(ids[train_idx[0]], labels[train_idx[0]])])[0]
    num_classes = (max(labels) + 1) if samples.labels is not None else None
    train = loader(train_idx, True)
    if train_texts is not None:
        train = _extra_train_loader(samples, train_texts, held_out=val_idx + test_idx, tokenizer=tokenizer,
                                    task=task, max_length=max_length, batch_size=batch_size, seed=seed)
    return DataBundle(train=train, val=loader(val_idx, False), test=loader(test_idx, False),
                      calib=loader(calib_idx, False), num_classes=num_classes, task=task,  # type: ignore[arg-type]
                      example_input=example, name=samples.name)


def _extra_train_loader(samples: TextSamples, train_texts: TextSamples, *, held_out: list[int], tokenizer: Any,
                        task: str, max_length: int, batch_size: int, seed: int) -> DataLoader:
    """The texts of ``train_texts`` from documents outside ``samples``' held-out splits, shuffled in length buckets."""
    if samples.documents is None or train_texts.documents is None:
        raise SourceError(f"train_texts '{train_texts.name}' need documents, and so does '{samples.name}': without them "
                          f"held-out texts could leak into training; give both TextSamples their documents")
    held_docs = {samples.documents[i] for i in held_out}
    keep = [i for i, d in enumerate(train_texts.documents) if d not in held_docs]
    if not keep:
        raise SourceError(f"train_texts '{train_texts.name}' hold no text outside the held-out documents; "
                          f"give texts from the training documents")
    ids = tokenize(tokenizer, [train_texts.texts[i] for i in keep], max_length=max_length)
    labels = [train_texts.labels[i] for i in keep] if train_texts.labels is not None else [-1] * len(keep)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sampler = BucketBatchSampler([len(x) for x in ids], batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(seed + 1))
    return DataLoader(TokenizedText(ids, labels), batch_sampler=sampler, collate_fn=PadCollate(pad_id, task))


def _split(samples: TextSamples, val_fraction: float, test_fraction: float, seed: int) -> tuple[list[int], ...]:
    n = len(samples.texts)
    rng = random.Random(seed)
    if samples.documents is not None and len(set(samples.documents)) >= 3:
        docs = sorted(set(samples.documents))
        rng.shuffle(docs)
        n_test, n_val = max(1, round(len(docs) * test_fraction)), max(1, round(len(docs) * val_fraction))
        side = {d: 2 if k < n_test else 1 if k < n_test + n_val else 0 for k, d in enumerate(docs)}
        parts: list[list[int]] = [[], [], []]
        for i, d in enumerate(samples.documents):
            parts[side[d]].append(i)
        rng.shuffle(parts[0])
        return parts[0], parts[1], parts[2]
    if n < 3:
        raise SourceError(f"text data '{samples.name}' has {n} texts; need at least 3 to split train/val/test")
    order = list(range(n))
    rng.shuffle(order)
    n_test, n_val = max(1, round(n * test_fraction)), max(1, round(n * val_fraction))
    if n - n_test - n_val < 1:
        raise SourceError(f"text data '{samples.name}' has only {n} texts: too few for these split fractions")
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]
