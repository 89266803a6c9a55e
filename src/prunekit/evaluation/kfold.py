"""K-fold cross-validation: a compressed model's score with a spread, not one lucky split."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold
from torch.utils.data import DataLoader, TensorDataset

from prunekit.errors import InvalidParameterError
from prunekit.evaluation.metrics import Predictor, Task, evaluate

FitFn = Callable[[DataLoader, DataLoader], Predictor]


def kfold_indices(n: int, k: int, *, seed: int, y: np.ndarray | torch.Tensor | None = None
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled ``(train_idx, val_idx)`` pairs; each sample is in exactly one validation fold.

    Parameters
    ----------
    n : int
        Number of samples.
    k : int
        Number of folds, ``2 <= k <= n``.
    seed : int
        Shuffling seed, so folds are the same on every run.
    y : array of class indices, optional
        When given, folds are stratified (each keeps the class proportions), which needs at
        least ``k`` samples in every class.
    """
    _check_k(n, k)
    if y is not None:
        labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        present = np.bincount(labels.astype(np.int64).ravel())
        smallest = int(present[present > 0].min())
        if smallest < k:
            raise InvalidParameterError(
                f"The 'k' parameter of kfold_indices must be at most the smallest class count ({smallest}) "
                f"for stratified folds. Got {k} instead."
            )
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(tr, va) for tr, va in splitter.split(np.zeros((n, 1)), labels)]
    splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in splitter.split(np.zeros((n, 1)))]


def cross_validate(x: torch.Tensor, y: torch.Tensor, *, k: int, seed: int, fit: FitFn, task: Task,
                   num_classes: int | None = None, batch_size: int = 64) -> dict:
    """Train with ``fit`` on K-1 folds, score on the held-out fold, K times.

    Parameters
    ----------
    x, y : torch.Tensor
        All inputs ``(n, ...)`` and targets ``(n, ...)``.
    k, seed : int
        Folds and their seed; classification folds are stratified when every class has >= k samples.
    fit : callable
        ``fit(train_loader, val_loader) -> predictor``; builds a fresh model per fold so no
        fold sees another's weights.
    task, num_classes
        As in :func:`prunekit.evaluation.evaluate`.
    batch_size : int
        Batch size of both loaders; the training loader shuffles with a seeded generator.

    Returns
    -------
    dict
        ``folds`` (list of per-fold metric dicts), ``mean`` and ``std`` (population std) over folds
        for every scalar metric, and ``k``.
    """
    if len(x) != len(y):
        raise InvalidParameterError(f"cross_validate got {len(x)} inputs but {len(y)} targets: they must match")
    n = len(x)
    _check_k(n, k)
    stratify = None
    if task == "classification":
        counts = np.bincount(y.detach().cpu().numpy().astype(np.int64).ravel())
        if counts[counts > 0].min() >= k:
            stratify = y
    folds = []
    for i, (train_idx, val_idx) in enumerate(kfold_indices(n, k, seed=seed, y=stratify)):
        gen = torch.Generator().manual_seed(seed + i)
        tr, va = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
        train_loader = DataLoader(TensorDataset(x[tr], y[tr]), batch_size=batch_size, shuffle=True, generator=gen)
        val_loader = DataLoader(TensorDataset(x[va], y[va]), batch_size=batch_size)
        predictor = fit(train_loader, val_loader)
        folds.append(evaluate(predictor, val_loader, task=task, num_classes=num_classes))
    scalars = [key for key, value in folds[0].items() if isinstance(value, float)]
    mean = {key: float(np.mean([f[key] for f in folds])) for key in scalars}
    std = {key: float(np.std([f[key] for f in folds])) for key in scalars}
    return {"folds": folds, "mean": mean, "std": std, "k": k}


def _check_k(n: int, k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 2 or k > n:
        raise InvalidParameterError(
            f"The 'k' parameter of K-fold must be an int in [2, n={n}]. Got {k!r} instead."
        )
