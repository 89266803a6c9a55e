"""The fine-tune the distributed test runs, both under torchrun and in one process.

``python -m torch.distributed.run --nproc_per_node=2 --standalone _ddp_job.py OUT_DIR``: rank 0
writes the trained weights and history to OUT_DIR.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.training import FinetuneConfig, FinetuneResult, broadcast_object, finetune
from prunekit.training.distributed import distributed_context


def build() -> tuple[nn.Module, DataLoader, DataLoader]:
    """A tiny MLP (no BatchNorm: its statistics are per rank) and 203 samples: the last global
    batch of 11 splits 6/5 over two ranks, exercising the uneven-shard loss weighting."""
    torch.manual_seed(0)
    x = torch.randn(253, 10)  # (N, F)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long()
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 2))
    train = DataLoader(TensorDataset(x[:203], y[:203]), batch_size=32, shuffle=True, generator=torch.Generator())
    val = DataLoader(TensorDataset(x[203:], y[203:]), batch_size=16)
    return model, train, val


CONFIG = FinetuneConfig(epochs=3, lr=0.05, optimizer="sgd", momentum=0.9, scheduler="cosine", seed=3, l2=1e-3)


def run() -> tuple[nn.Module, FinetuneResult]:
    torch.set_num_threads(1)
    model, train, val = build()
    return model, finetune(model, train, val, config=CONFIG)


def live_ddp_wrappers() -> int:
    """DistributedDataParallel objects still alive: each holds the process group's gloo threads."""
    return sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())


if __name__ == "__main__":
    out = Path(sys.argv[1])
    gc.disable()  # so only finetune's own clean-up can free its DDP wrapper (it sits in a reference cycle)
    with distributed_context() as ctx:
        plan = broadcast_object({"decided_on": ctx.rank, "keep": [1, 2]} if ctx.rank == 0 else None)
        model, result = run()
        leftover = live_ddp_wrappers()
        if ctx.rank == 1:
            (out / "rank1_plan.json").write_text(json.dumps(plan))
        if ctx.rank == 0:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "weights.safetensors"))
            (out / "result.json").write_text(json.dumps({"world": ctx.world_size, "live_ddp_after_finetune": leftover, **result.to_dict()}))
