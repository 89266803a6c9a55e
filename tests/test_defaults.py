"""The API and recipes agree on every default they share (prunekit.defaults is the one source)."""

from __future__ import annotations

from prunekit import defaults
from prunekit.pruning.pruner import StructuredPruner
from prunekit.recipes.schema import DistillSpec, PruningSpec, RecoverySpec
from prunekit.training import FinetuneConfig


def test_pruner_and_recipe_pruning_defaults_agree():
    pruner, spec = StructuredPruner(), PruningSpec()
    assert (pruner.criterion, pruner.ratio, pruner.target, pruner.scope, pruner.round_to, pruner.min_keep) == (
        spec.criterion, spec.target.ratio, spec.target.metric, spec.scope, spec.round_to, spec.min_keep)
    assert (pruner.target, pruner.scope, pruner.ratio) == ("macs", "global", 0.5)


def test_finetune_and_recipe_recovery_defaults_agree():
    config, rec, distill = FinetuneConfig(), RecoverySpec(), DistillSpec()
    assert (config.optimizer, config.lr, config.momentum, config.weight_decay, config.scheduler) == (
        rec.optimizer, rec.lr, rec.momentum, rec.weight_decay, rec.scheduler)
    assert (config.alpha, config.temperature) == (distill.alpha, distill.temperature) == (
        defaults.DISTILL_ALPHA, defaults.DISTILL_TEMPERATURE)
    assert (config.optimizer, config.lr, config.alpha) == ("sgd", 0.01, 0.7)
