"""Recovery after pruning: fine-tuning, distillation, BN recalibration, sparsity penalties,
checkpoints with exact resume, and DistributedDataParallel under torchrun."""

from __future__ import annotations

from prunekit.training.bn_recalibration import recalibrate_batchnorm
from prunekit.training.checkpoint import (
    Checkpoint, capture_rng_state, latest_checkpoint, list_checkpoints, load_checkpoint, restore_rng_state,
    save_checkpoint,
)
from prunekit.training.distill import FeatureMatcher, distillation_loss, regression_distillation_loss
from prunekit.training.distributed import (
    DistributedContext, ShardedBatchSampler, all_reduce_metrics, broadcast_object, distributed_context, shard_loader,
    unwrap, wrap_ddp,
)
from prunekit.training.evaluate import evaluate
from prunekit.training.finetune import EpochStats, FinetuneConfig, FinetuneResult, finetune
from prunekit.training.regularize import bn_scale_penalty, group_lasso_penalty, l1_penalty, l2_penalty

__all__ = [
    "Checkpoint", "DistributedContext", "EpochStats", "FeatureMatcher", "FinetuneConfig", "FinetuneResult",
    "ShardedBatchSampler", "all_reduce_metrics", "bn_scale_penalty", "broadcast_object", "capture_rng_state",
    "distillation_loss", "distributed_context", "evaluate", "finetune", "group_lasso_penalty", "l1_penalty",
    "l2_penalty", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "recalibrate_batchnorm",
    "regression_distillation_loss", "restore_rng_state", "save_checkpoint", "shard_loader", "unwrap", "wrap_ddp",
]
