"""Metrics that mean something for text models without class outputs.

An embedding model is judged by how close its embeddings stay to the dense model's (mean cosine
on held-out text) and by what they are for: a downstream linear probe (logistic regression on the
embeddings, trained on the train split, scored on the test split). A language model is judged by
perplexity on held-out text. Both work on any predictor, PyTorch or ONNX Runtime.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from prunekit.errors import InvalidParameterError, SourceError

IGNORE_INDEX = -100


def predict_all(predict: Callable[[Any], torch.Tensor], loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and targets of every batch, in the loader's order: ``(N, H)`` and ``(N,)``."""
    outputs, targets = [], []
    for inputs, target in loader:
        outputs.append(torch.as_tensor(predict(inputs)).detach().float().cpu())
        targets.append(torch.as_tensor(target).detach().cpu())
    if not outputs:
        raise SourceError("got an empty loader: it yielded no (inputs, targets) batch; check the data split")
    return torch.cat(outputs), torch.cat(targets)


def cosine_fidelity(embeddings: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Mean, 5th percentile and minimum cosine similarity of matching rows."""
    if embeddings.shape != reference.shape:
        raise InvalidParameterError(f"cosine_fidelity needs embeddings of one shape; got {tuple(embeddings.shape)} "
                                    f"and {tuple(reference.shape)}")
    cos = F.cosine_similarity(embeddings.double(), reference.double(), dim=-1)
    return {"cosine_mean": float(cos.mean()), "cosine_p5": float(torch.quantile(cos, 0.05)),
            "cosine_min": float(cos.min())}


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 c: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Accuracy and macro F1 of a logistic regression trained on ``train_x`` embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    keep_train, keep_test = train_y >= 0, test_y >= 0
    if int(keep_train.sum()) < 2 or len(set(train_y[keep_train].tolist())) < 2 or int(keep_test.sum()) == 0:
        raise InvalidParameterError("linear_probe needs labelled train texts of at least 2 classes and labelled test texts")
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(train_x[keep_train].numpy(), train_y[keep_train].numpy())
    pred = clf.predict(test_x[keep_test].numpy())
    truth = test_y[keep_test].numpy()
    return {"probe_accuracy": float(accuracy_score(truth, pred)),
            "probe_f1_macro": float(f1_score(truth, pred, average="macro", zero_division=0))}


def lm_token_sums(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy (position t predicts t+1, -100 skipped) and tokens scored."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    target = labels[:, 1:].reshape(-1).long()
    total = F.cross_entropy(shifted, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return float(total), int((target != IGNORE_INDEX).sum())


def perplexity(predict: Callable[[Any], torch.Tensor], loader: Iterable) -> dict[str, float]:
    """``exp`` of the mean next-token loss over every real token of ``loader``."""
    total, tokens = 0.0, 0
    for inputs, labels in loader:
        t, n = lm_token_sums(torch.as_tensor(predict(inputs)), torch.as_tensor(labels))
        total, tokens = total + t, tokens + n
    if tokens == 0:
        raise SourceError("perplexity got no scored tokens: the texts are empty or one token long")
    return {"loss": total / tokens, "perplexity": math.exp(total / tokens), "tokens": float(tokens)}


def embedding_metrics(predict: Callable[[Any], torch.Tensor], test: Iterable, *, reference: torch.Tensor | None = None,
                      probe_train: tuple[torch.Tensor, torch.Tensor] | None = None,
                      probe_predict: Callable[[Any], torch.Tensor] | None = None,
                      train: Iterable | None = None) -> dict[str, float]:
    """Fidelity to ``reference`` (the dense test embeddings) and the linear probe's test scores.

    The probe is trained on ``probe_train`` (embeddings, labels) or, when ``train`` is given, on
    this predictor's own embeddings of ``train`` (each model gets its own probe, as a user would fit).
    """
    emb, labels = predict_all(predict, test)
    out: dict[str, float] = {"n": float(len(emb))}
    if reference is not None:
        out.update(cosine_fidelity(emb, reference))
    if probe_train is None and train is not None:
        probe_train = predict_all(probe_predict or predict, train)
    if probe_train is not None and bool((labels >= 0).any()):
        out.update(linear_probe(probe_train[0], probe_train[1], emb, labels))
    return out
