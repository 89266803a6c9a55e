"""The one shape data takes inside prunekit: loaders for each split plus what the task is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import DataLoader, TensorDataset

from prunekit.errors import SourceError


@dataclass
class DataBundle:
    """Train/val/test/calibration loaders yielding ``(inputs, targets)``.

    The test split is held apart from calibration and validation; ``calib`` is drawn from the
    training data so range calibration never sees test examples.
    """

    train: DataLoader
    val: DataLoader
    test: DataLoader
    calib: DataLoader
    num_classes: int | None
    task: Literal["classification", "regression", "embedding", "causal_lm"]  # the last two: text (data/text.py)
    example_input: torch.Tensor  # one sample with batch dimension 1 (a dict of tensors for text)
    name: str = "data"
    val_source: str = ""  # where validation came from, for the report (e.g. "x_val/y_val in the .npz")


def split_tensors(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    name: str,
    task: Literal["classification", "regression"] = "classification",
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    calib_samples: int = 256,
    batch_size: int = 64,
    seed: int = 0,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DataBundle:
    """Shuffle once with ``seed`` and cut into train/val/test; calib is a slice of train.

    With ``test=(x_test, y_test)`` the given test split is used as is and ``x``/``y`` are cut into
    train and validation only. With ``val=(x_val, y_val)`` validation is that data (never seen in
    training) and nothing of ``x`` is carved for it (``val_fraction`` is ignored).
    """
    if len(x) == 0:
        raise SourceError(f"data set '{name}' is empty: give at least one sample per split")
    if len(x) != len(y):
        raise SourceError(f"data set '{name}' has {len(x)} inputs but {len(y)} targets: they must match")
    n = len(x)
    n_test = 0 if test is not None else max(1, int(round(n * test_fraction)))
    n_val = 0 if val is not None else max(1, int(round(n * val_fraction)))
    if n - n_test - n_val < 1:
        raise SourceError(f"data set '{name}' has only {n} samples: need at least 3 to split")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]

    def loader(idx: torch.Tensor, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(seed + 1)
        return DataLoader(TensorDataset(x[idx], y[idx]), batch_size=batch_size, shuffle=shuffle, generator=gen)

    calib_idx = train_idx[: min(calib_samples, len(train_idx))]
    num_classes = int(y.max().item()) + 1 if task == "classification" else None
    if test is not None:
        if len(test[0]) == 0:
            raise SourceError(f"test split of data set '{name}' is empty: give at least one test sample")
        test_loader = DataLoader(TensorDataset(*test), batch_size=batch_size, shuffle=False)
    else:
        test_loader = loader(test_idx, False)
    if val is not None:
        if len(val[0]) == 0 or len(val[0]) != len(val[1]):
            raise SourceError(f"validation split of data set '{name}' has {len(val[0])} inputs and {len(val[1])} "
                              f"targets: give the same number, at least one")
        val_loader = DataLoader(TensorDataset(*val), batch_size=batch_size, shuffle=False)
        val_source = "given explicitly (never used for training)"
    else:
        val_loader = loader(val_idx, False)
        val_source = f"{n_val} samples carved from the training data (val_fraction {val_fraction:g}) before training"
    return DataBundle(
        train=loader(train_idx, True),
        val=val_loader,
        test=test_loader,
        calib=loader(calib_idx, False),
        num_classes=num_classes,
        task=task,
        example_input=x[:1].clone(),
        name=name,
        val_source=val_source,
    )
