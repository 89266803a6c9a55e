"""The whole recipe under torchrun with 2 CPU processes gives the single-process result.

An MLP (no BatchNorm, whose per-rank statistics would legitimately differ) is trained, pruned
with a plan decided on rank 0, recovered and evaluated. DDP's gradient average over the two
slices of each batch equals the single-process mean up to float summation order (~1e-8 per
step, see tests/training/test_distributed.py), so the pruned architecture must be identical
and the test accuracy equal to within one test sample.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from prunekit.recipes.loader import dump_recipe, recipe_from_dict
from prunekit.recipes.runner import run_recipe

RECIPE = {
    "name": "mlp-ddp",
    "seed": 0,
    "model": {"builtin": "mlp", "kwargs": {"in_features": 64, "hidden": [64, 32], "num_classes": 10},
              "train_baseline": {"epochs": 2, "lr": 0.05}},
    "data": {"builtin": "digits", "batch_size": 64},
    "pruning": {"criterion": "l2", "target": {"metric": "macs", "ratio": 0.5}, "round_to": 1},
    "recovery": {"epochs": 1, "lr": 0.01},
    "quantization": {"enabled": False},
    "evaluation": {"batch_sizes": [1], "latency_runs": 3, "warmup_runs": 1, "energy": False, "memory": False,
                   "pytorch_latency": False, "max_accuracy_drop": None},
}


@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_recipe_matches_single_process(tmp_path):
    single = run_recipe(recipe_from_dict({**RECIPE, "output_dir": str(tmp_path / "single")}))

    path = tmp_path / "recipe.yaml"
    dump_recipe(recipe_from_dict({**RECIPE, "output_dir": str(tmp_path / "ddp")}), path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "prunekit.cli.main", "run", str(path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "report.json").read_text())

    assert ddp["compressed"]["macs"] == single.compressed.macs
    assert ddp["compressed"]["params"] == single.compressed.params
    assert [r["after"] for r in ddp["layers"]] == [r["after"] for r in single.layers]
    n_test = 359  # digits test split
    assert abs(ddp["compressed"]["accuracy"] - single.compressed.accuracy) <= 1 / n_test + 1e-9
    assert abs(ddp["dense"]["accuracy"] - single.dense.accuracy) <= 1 / n_test + 1e-9
