"""A small fine-tune used by the kill-and-resume test, runnable as a script in a subprocess.

``python _resume_job.py CKPT_DIR HANG_EPOCH HANG_STEP`` prints HANGING when it reaches that step
(after the first checkpoint exists) and then sleeps until the parent SIGKILLs it.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.training import FinetuneConfig, FinetuneResult, finetune


def build() -> tuple[nn.Module, DataLoader, DataLoader]:
    """Model with dropout and BatchNorm (both use state the resume must restore), and data."""
    torch.manual_seed(0)
    x = torch.randn(256, 12)  # (N, F)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()  # 3 classes
    model = nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    train = DataLoader(TensorDataset(x[:192], y[:192]), batch_size=24, shuffle=True, generator=torch.Generator())
    val = DataLoader(TensorDataset(x[192:], y[192:]), batch_size=32)
    return model, train, val


def config(checkpoint_dir: str | None) -> FinetuneConfig:
    return FinetuneConfig(epochs=3, lr=1e-2, optimizer="adam", scheduler="cosine", seed=7,
                          early_stopping_patience=5, checkpoint_dir=checkpoint_dir)


def run(checkpoint_dir: str | None, *, resume: bool = False) -> tuple[nn.Module, FinetuneResult]:
    torch.set_num_threads(1)
    model, train, val = build()
    return model, finetune(model, train, val, config=config(checkpoint_dir), resume=resume)


def _hang_at(epoch: int, step: int) -> None:
    model, train, val = build()
    calls = {"epoch": 0, "step": 0}

    def on_epoch_end(e: int, _stats: object) -> None:
        calls["epoch"], calls["step"] = e + 1, 0

    def hook(_m: nn.Module, _inputs: object) -> None:
        if model.training:
            if calls["epoch"] == epoch and calls["step"] == step:
                print("HANGING", flush=True)
                time.sleep(120)
            calls["step"] += 1

    model.register_forward_pre_hook(hook)
    torch.set_num_threads(1)
    finetune(model, train, val, config=config(sys.argv[1]), on_epoch_end=on_epoch_end)


if __name__ == "__main__":
    _hang_at(int(sys.argv[2]), int(sys.argv[3]))
