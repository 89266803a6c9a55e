"""Two CPU processes under torchrun follow the single-process run step for step.

Each rank takes its slice of every global batch and the loss is weighted by the slice's share,
so DDP's gradient average equals the single-process mean over the same global batch. The only
difference is float summation order (two partial sums, then the all-reduce), about 1 ulp per
step; over 21 SGD steps with momentum we measured a largest weight difference of 3e-8. We allow
1e-5 absolute (values are O(0.1-1)), which still fails on any real difference: a wrong shard,
a wrong loss weight or a missed sample moves the weights by 1e-3 or more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunekit.training import all_reduce_metrics, broadcast_object, shard_loader
from prunekit.training.distributed import ShardedBatchSampler

from . import _ddp_job

JOB = Path(__file__).with_name("_ddp_job.py")


@pytest.mark.distributed
def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(JOB), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "rank1_plan.json").read_text()) == {"decided_on": 0, "keep": [1, 2]}
    ddp = json.loads((tmp_path / "result.json").read_text())
    assert ddp["world"] == 2
    assert ddp["live_ddp_after_finetune"] == 0  # freed before the group goes, not at interpreter exit (SIGABRT)
    ddp_weights = load_file(str(tmp_path / "weights.safetensors"))

    model, single = _ddp_job.run()
    initial, _, _ = _ddp_job.build()
    for name, value in model.state_dict().items():
        assert torch.allclose(ddp_weights[name], value, atol=1e-5, rtol=0), name
        assert (value - initial.state_dict()[name]).abs().max() > 1e-2  # training really moved it
    for got, want in zip(ddp["history"], single.history):
        assert got["train_loss"] == pytest.approx(want.train_loss, abs=1e-5)
        assert got["val_loss"] == pytest.approx(want.val_loss, abs=1e-5)
        assert got["val_accuracy"] == pytest.approx(want.val_accuracy, abs=1e-9)


def test_sharded_batches_partition_each_global_batch() -> None:
    _, train, _ = _ddp_job.build()
    train.generator.manual_seed(5)
    single = [list(b) for b in train.batch_sampler]
    shards = []
    for rank in range(3):
        train.generator.manual_seed(5)
        shards.append(list(ShardedBatchSampler(train.batch_sampler, rank=rank, world_size=3)))
    for i, batch in enumerate(single):
        parts = [shards[r][i] for r in range(3)]
        assert sum(parts, []) == batch
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_single_process_helpers_are_identity() -> None:
    _, train, _ = _ddp_job.build()
    assert shard_loader(train) is train
    assert broadcast_object({"a": 1}) == {"a": 1}
    assert all_reduce_metrics({"loss": 2.0}, op="mean") == {"loss": 2.0}
