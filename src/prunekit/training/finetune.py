"""Fine-tuning that brings a pruned model's accuracy back: one loop for every recovery option.

Optional pieces switch on from the config and arguments: a teacher (distillation), feature
matching, sparsity penalties, masks that keep pruned weights at zero, early stopping, per-epoch
checkpoints with exact resume, AMP on CUDA, and DistributedDataParallel under torchrun.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from prunekit import defaults
from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import InvalidParameterError, PrunekitError, PrunekitWarning
from prunekit.training import _setup
from prunekit.training._batch import batch_size, call_model, check_task, split_batch, task_loss, to_device
from prunekit.training.checkpoint import (
    capture_rng_state, latest_checkpoint, load_checkpoint, restore_rng_state, save_checkpoint,
)
from prunekit.training.distill import FeatureMatcher, distillation_loss, regression_distillation_loss
from prunekit.training.distributed import (
    DistributedContext, ShardedBatchSampler, all_reduce_metrics, barrier, distributed_context, shard_loader, wrap_ddp,
)
from prunekit.training.evaluate import evaluate
from prunekit.training.objectives import cosine_distance, lm_distillation_loss
from prunekit.training.regularize import bn_scale_penalty, group_lasso_penalty, l1_penalty, l2_penalty


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides a fine-tune's numbers (validated on construction)."""

    epochs: int = 5
    # optimizer, lr, momentum, weight decay, scheduler and distillation default to prunekit.defaults,
    # the values a recipe's recovery section gets
    lr: float = defaults.LR
    optimizer: Literal["sgd", "adam", "adamw"] = defaults.OPTIMIZER
    momentum: float = defaults.MOMENTUM  # SGD only
    weight_decay: float = defaults.WEIGHT_DECAY
    scheduler: Literal["cosine", "step", "onecycle", "constant"] = defaults.SCHEDULER  # stepped every batch
    warmup: float = 0.0  # fraction of all steps spent ramping the rate up linearly first (not with "onecycle")
    step_size: int = 1  # epochs between decays, "step" only
    gamma: float = 0.1  # decay factor, "step" only
    grad_clip: float | None = None  # max global gradient norm
    early_stopping_patience: int | None = None  # epochs without a lower val loss before stopping
    l1: float = 0.0  # weights of the penalties added to the loss
    l2: float = 0.0
    bn_scale: float = 0.0
    group_lasso: float = 0.0  # needs groups=
    temperature: float = defaults.DISTILL_TEMPERATURE  # distillation, used when a teacher is given
    alpha: float = defaults.DISTILL_ALPHA  # weight of the teacher term
    feature_weight: float = 1.0  # weight of feature matching, used with feature_layers=
    amp: bool = False  # float16 autocast + grad scaling; only when the model is on CUDA
    seed: int = 0
    checkpoint_dir: str | None = None
    progress: bool = False  # rich progress bar per epoch (rank 0 only)
    lr_key: str | None = None  # how the caller names the learning rate (a recipe key), for error messages

    def __post_init__(self) -> None:
        for f in fields(self):
            rule = _RULES.get(f.name)
            value = getattr(self, f.name)
            if rule is not None and not rule[0](value):
                raise InvalidParameterError(
                    f"The '{f.name}' parameter of FinetuneConfig must be {rule[1]}. Got {value!r} instead."
                )
        if self.warmup > 0 and self.scheduler == "onecycle":
            raise InvalidParameterError("FinetuneConfig: warmup with scheduler 'onecycle' would warm up twice; "
                                        "use scheduler 'cosine' or 'constant', or warmup 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: _int(v) and v >= 1, "an int >= 1"),
    "lr": (lambda v: _num(v) and v > 0, "a float > 0"),
    "optimizer": (lambda v: v in ("sgd", "adam", "adamw"), "one of 'sgd', 'adam', 'adamw'"),
    "momentum": (lambda v: _num(v) and 0 <= v < 1, "a float in [0, 1)"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "a float >= 0"),
    "scheduler": (lambda v: v in ("cosine", "step", "onecycle", "constant"),
                  "one of 'cosine', 'step', 'onecycle', 'constant'"),
    "warmup": (lambda v: _num(v) and 0 <= v < 1, "a fraction in [0, 1)"),
    "step_size": (lambda v: _int(v) and v >= 1, "an int >= 1"),
    "gamma": (lambda v: _num(v) and 0 < v <= 1, "a float in (0, 1]"),
    "grad_clip": (lambda v: v is None or (_num(v) and v > 0), "None or a float > 0"),
    "early_stopping_patience": (lambda v: v is None or (_int(v) and v >= 1), "None or an int >= 1"),
    "l1": (lambda v: _num(v) and v >= 0, "a float >= 0"),
    "l2": (lambda v: _num(v) and v >= 0, "a float >= 0"),
    "bn_scale": (lambda v: _num(v) and v >= 0, "a float >= 0"),
    "group_lasso": (lambda v: _num(v) and v >= 0, "a float >= 0"),
    "temperature": (lambda v: _num(v) and v > 0, "a float > 0"),
    "alpha": (lambda v: _num(v) and 0 <= v <= 1, "a float in [0, 1]"),
    "feature_weight": (lambda v: _num(v) and v >= 0, "a float >= 0"),
    "amp": (lambda v: isinstance(v, bool), "a bool"),
    "seed": (lambda v: _int(v) and v >= 0, "an int >= 0"),
    "checkpoint_dir": (lambda v: v is None or isinstance(v, str), "None or a path string"),
    "progress": (lambda v: isinstance(v, bool), "a bool"),
    "lr_key": (lambda v: v is None or isinstance(v, str), "None or a string"),
}


_RESUME_FREE = ("checkpoint_dir", "progress", "lr_key")  # may differ between a run and its resume


@dataclass(frozen=True)
class EpochStats:
    """One epoch's numbers. ``train_loss`` is the per-sample mean task (or distillation) loss,
    penalties excluded; ``lr`` is the rate at the epoch's first step."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float


@dataclass(frozen=True)
class FinetuneResult:
    """Per-epoch history, the epoch with the lowest validation loss, and whether training stopped early."""

    history: tuple[EpochStats, ...]
    best_epoch: int | None
    early_stopped: bool
    resumed_from: int | None = None  # epochs already done when a resume picked up

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EpochCallback = Callable[[int, EpochStats], None]


def finetune(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: Iterable | None,
    *,
    config: FinetuneConfig | None = None,
    task: str = "classification",
    teacher: nn.Module | None = None,
    groups: Sequence[ChannelGroup] | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    feature_layers: Mapping[str, str] | None = None,
    on_epoch_end: EpochCallback | None = None,
    resume: bool = False,
) -> FinetuneResult:
    """Train ``model`` in place and return its history.

    Parameters
    ----------
    model : nn.Module
        Trained in place. Modules pruned with ``torch.nn.utils.prune`` keep their hooks and masks.
    train_loader, val_loader : DataLoader of (inputs, targets)
        ``val_loader`` may be None (then no early stopping). Under torchrun both are sharded.
    config : FinetuneConfig
    task : "classification" | "regression" | "embedding" | "causal_lm"
        Cross-entropy, mean squared error, cosine distance to the teacher's embeddings (needs a
        teacher), or the next-token loss (KL to the teacher's token distribution with a teacher).
    teacher : nn.Module, optional
        Distil from it (``distillation_loss`` with ``config.temperature``/``alpha``; for
        regression ``alpha * MSE(s, t) + (1 - alpha) * MSE(s, y)``). Kept in eval mode.
    groups : ChannelGroups for the group-lasso penalty (needed when ``config.group_lasso > 0``).
    masks : {parameter name: 0/1 tensor}
        Re-applied after every optimizer step so pruned weights stay exactly zero.
    feature_layers : {student module: teacher module}
        Adds ``config.feature_weight * FeatureMatcher.loss()``; needs a teacher.
    on_epoch_end : callable(epoch, EpochStats)
        Called on every rank after validation, before the epoch's checkpoint.
    resume : bool
        Continue from the newest complete checkpoint in ``config.checkpoint_dir`` (start fresh
        when there is none). The same data, model and config give the uninterrupted result.
    """
    config = config if config is not None else FinetuneConfig()
    check_task(task, "finetune")
    if not isinstance(config, FinetuneConfig):
        raise InvalidParameterError(f"The 'config' parameter of finetune must be a FinetuneConfig. Got {type(config).__name__} instead.")
    if config.group_lasso > 0 and not groups:
        raise InvalidParameterError("finetune: config.group_lasso > 0 needs groups= (ChannelGroups from build_graph)")
    if resume and config.checkpoint_dir is None:
        raise InvalidParameterError("finetune: resume=True needs config.checkpoint_dir to read checkpoints from")
    if config.early_stopping_patience is not None and val_loader is None:
        raise InvalidParameterError("finetune: early_stopping_patience needs a val_loader to watch")
    if feature_layers and teacher is None:
        raise InvalidParameterError("finetune: feature_layers needs a teacher to match features against")
    if len(train_loader) == 0:
        raise InvalidParameterError("finetune: train_loader yields no batches; give it at least one")
    if task == "embedding" and teacher is None:
        raise InvalidParameterError("finetune: task 'embedding' has no labels to train on; pass teacher= (the dense "
                                    "model) to distil its embeddings")
    with distributed_context() as ctx:
        run = _Run(model, train_loader, val_loader, config, task, teacher, groups, masks, feature_layers,
                   on_epoch_end, ctx)
        try:
            return run.run(resume)
        finally:
            if ctx.enabled:  # the DDP wrapper sits in a reference cycle that holds the process group:
                run.net = None  # free it now, while the group is alive, not at interpreter exit
                gc.collect()


class _Run:
    """One fine-tune's mutable state; ``finetune`` is its only user."""

    def __init__(self, model: nn.Module, train_loader: DataLoader, val_loader: Iterable | None,
                 config: FinetuneConfig, task: str, teacher: nn.Module | None,
                 groups: Sequence[ChannelGroup] | None, masks: Mapping[str, torch.Tensor] | None,
                 feature_layers: Mapping[str, str] | None, on_epoch_end: EpochCallback | None,
                 ctx: DistributedContext) -> None:
        self.model, self.config, self.task, self.ctx = model, config, task, ctx
        self.teacher, self.groups, self.on_epoch_end = teacher, groups, on_epoch_end
        self.masks, self.feature_layers = masks, feature_layers
        self.train_loader, self.val_loader = train_loader, val_loader

    def run(self, resume: bool) -> FinetuneResult:
        cfg, ctx, model = self.config, self.ctx, self.model
        if ctx.enabled and ctx.device.type == "cuda":
            model.to(ctx.device)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.device = device
        self.use_amp = cfg.amp and device.type == "cuda"
        if cfg.amp and not self.use_amp:
            warnings.warn("FinetuneConfig.amp is ignored: the model is not on a CUDA device", PrunekitWarning, stacklevel=3)
        if self.teacher is not None:
            self.teacher.to(device).eval()
        _setup.seed_everything(cfg.seed)
        self.generators = _setup.loader_generators(self.train_loader)
        for k, gen in enumerate(self.generators):
            gen.manual_seed(cfg.seed + k)
        self.mask_pairs = _setup.prepare_masks(model, self.masks)
        _setup.apply_masks(self.mask_pairs)
        self.matcher = self._build_matcher()
        train = shard_loader(self.train_loader, context=ctx)
        val = shard_loader(self.val_loader, context=ctx) if isinstance(self.val_loader, DataLoader) else self.val_loader
        self.net = wrap_ddp(model, context=ctx)
        extra = list(self.matcher.parameters()) if self.matcher is not None else []
        self.optimizer = _setup.make_optimizer(list(model.parameters()) + extra, name=cfg.optimizer, lr=cfg.lr,
                                               momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        steps = len(train)
        self.scheduler = _setup.make_scheduler(self.optimizer, name=cfg.scheduler, lr=cfg.lr, total_steps=cfg.epochs * steps,
                                               steps_per_epoch=steps, step_size=cfg.step_size, gamma=cfg.gamma,
                                               warmup_steps=round(cfg.warmup * cfg.epochs * steps))
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self.history: list[EpochStats] = []
        self.best_epoch: int | None = None
        self.best_loss: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs, self.early_stopped, start, resumed_from = 0, False, 0, None
        if resume and (path := latest_checkpoint(cfg.checkpoint_dir)) is not None:
            start = resumed_from = self._restore(path)
        progress = _progress(cfg.progress and ctx.is_main)
        try:
            for epoch in range(start, cfg.epochs):
                if self.early_stopped:
                    break
                self._epoch(epoch, train, val, progress)
        finally:
            if progress is not None:
                progress.stop()
        if self.early_stopped and self.best_state is not None:
            model.load_state_dict(self.best_state)
        if self.matcher is not None:
            self.matcher.detach()
        return FinetuneResult(tuple(self.history), self.best_epoch, self.early_stopped, resumed_from)

    def _build_matcher(self) -> FeatureMatcher | None:
        if not self.feature_layers:
            return None
        loader = self.train_loader
        if getattr(loader, "batch_sampler", None) is not None:  # one sample, without touching the shuffler
            example = split_batch(loader.collate_fn([loader.dataset[0]]))[0]
        else:
            example = split_batch(next(iter(loader)))[0]
        return FeatureMatcher(self.model, self.teacher, self.feature_layers).build(example)

    def _epoch(self, epoch: int, train: DataLoader, val: Iterable | None, progress: Any) -> None:
        cfg, net = self.config, self.net
        sampler = getattr(train, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # a caller's own DistributedSampler
        net.train()
        if self.teacher is not None:
            self.teacher.eval()
        lr = float(self.optimizer.param_groups[0]["lr"])
        began = time.perf_counter()
        task_id = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(train)) if progress else None
        loss_sum, seen = 0.0, 0
        for step, batch in enumerate(train):
            data_loss, n = self._step(step, batch, train)
            loss_sum, seen = loss_sum + data_loss * n, seen + n
            if progress:
                progress.update(task_id, advance=1, description=f"epoch {epoch + 1}/{cfg.epochs} loss {data_loss:.4f}")
        totals = all_reduce_metrics({"loss": loss_sum, "n": float(seen)}, op="sum")
        train_loss = totals["loss"] / max(totals["n"], 1.0)
        val_loss = val_acc = None
        if val is not None:
            scores = evaluate(self.model, val, task=self.task, teacher=self.teacher)
            val_loss, val_acc = scores["loss"], scores["accuracy"]
            self._track_best(epoch, val_loss)
        stats = EpochStats(epoch, train_loss, val_loss, val_acc, lr, time.perf_counter() - began)
        self.history.append(stats)
        if progress:
            extra = f" val loss {val_loss:.4f}" if val_loss is not None else ""
            extra += f" acc {val_acc:.3f}" if val_acc is not None else ""
            progress.update(task_id, description=f"epoch {epoch + 1}/{cfg.epochs} loss {train_loss:.4f}{extra}")
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, stats)
        patience = cfg.early_stopping_patience
        self.early_stopped = patience is not None and self.bad_epochs >= patience
        if cfg.checkpoint_dir is not None:
            if self.ctx.is_main:
                self._save(epoch + 1)
            barrier()

    def _step(self, step: int, batch: Any, train: DataLoader) -> tuple[float, int]:
        cfg, model = self.config, self.model
        inputs, targets = split_batch(batch)
        inputs, targets = to_device(inputs, self.device), to_device(targets, self.device)
        n = batch_size(inputs)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            outputs = call_model(self.net, inputs)
            teacher_out = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_out = call_model(self.teacher, inputs)
            data_loss = self._data_loss(outputs, targets, teacher_out) if n > 0 else outputs.sum() * 0.0
            if self.matcher is not None and n > 0:
                data_loss = data_loss + cfg.feature_weight * self.matcher.loss()
        scale = 1.0
        if isinstance(train.batch_sampler, ShardedBatchSampler):
            # DDP averages gradients over ranks; weigh each rank by its share of the global batch
            # so the average equals the single-process mean over that batch.
            scale = n * self.ctx.world_size / train.batch_sampler.global_sizes[step]
        loss = data_loss.float() * scale + self._penalties()
        if not torch.isfinite(loss):
            lr_name = cfg.lr_key or "FinetuneConfig.lr"
            clip = "" if cfg.lr_key else " or set FinetuneConfig.grad_clip"
            raise PrunekitError(f"{cfg.lr_key.rsplit('.', 1)[0] if cfg.lr_key else 'finetune'}: the loss became "
                                f"{loss.item()} at step {step}; lower {lr_name} (now {cfg.lr:g})"
                                f"{clip}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.optimizer.step()
        self.scheduler.step()
        _setup.apply_masks(self.mask_pairs)
        return float(data_loss.detach()), n

    def _data_loss(self, outputs: torch.Tensor, targets: torch.Tensor, teacher_out: torch.Tensor | None) -> torch.Tensor:
        cfg = self.config
        if teacher_out is None:
            return task_loss(outputs, targets, self.task)
        if self.task == "classification":
            return distillation_loss(outputs, teacher_out, targets, temperature=cfg.temperature, alpha=cfg.alpha)
        if self.task == "embedding":  # no labels: the dense model's embeddings are the target
            return cosine_distance(outputs, teacher_out)
        if self.task == "causal_lm":
            return lm_distillation_loss(outputs, teacher_out, targets, temperature=cfg.temperature, alpha=cfg.alpha)
        return regression_distillation_loss(outputs, teacher_out, targets, alpha=cfg.alpha)

    def _penalties(self) -> torch.Tensor | float:
        cfg, model = self.config, self.model
        total: torch.Tensor | float = 0.0
        if cfg.l1 > 0:
            total = total + l1_penalty(model, weight=cfg.l1)
        if cfg.l2 > 0:
            total = total + l2_penalty(model, weight=cfg.l2)
        if cfg.bn_scale > 0:
            total = total + bn_scale_penalty(model, cfg.bn_scale)
        if cfg.group_lasso > 0:
            total = total + group_lasso_penalty(model, self.groups, cfg.group_lasso)
        return total

    def _track_best(self, epoch: int, val_loss: float) -> None:
        if self.best_loss is None or val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            if self.config.early_stopping_patience is not None:
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_epochs += 1

    def _save(self, epochs_done: int) -> None:
        train_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "matcher": self.matcher.state_dict() if self.matcher is not None else {},
            "rng": capture_rng_state(),
            "generators": [g.get_state() for g in self.generators],
        }
        meta = {
            "history": [asdict(h) for h in self.history], "best_epoch": self.best_epoch, "best_loss": self.best_loss,
            "bad_epochs": self.bad_epochs, "early_stopped": self.early_stopped, "config": self.config.to_dict(),
        }
        save_checkpoint(self.config.checkpoint_dir, epoch=epochs_done, model_state=self.model.state_dict(),
                        train_state=train_state, meta=meta, best_state=self.best_state)

    def _restore(self, path: Any) -> int:
        ckpt = load_checkpoint(path)
        saved = ckpt.meta.get("config") or {}
        current = self.config.to_dict()
        changed = [f"{k} {saved[k]!r} -> {current[k]!r}" for k in sorted(current)
                   if k in saved and k not in _RESUME_FREE and saved[k] != current[k]]
        if changed:
            raise InvalidParameterError(
                f"checkpoint '{path}' was written by a fine-tune with other settings ({', '.join(changed[:4])}): "
                f"resume with the same settings, or start fresh without resume"
            )
        self.model.load_state_dict(ckpt.model_state)
        state = ckpt.train_state
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.matcher is not None and state["matcher"]:
            self.matcher.load_state_dict(state["matcher"])
        if len(state["generators"]) != len(self.generators):
            raise InvalidParameterError(
                f"checkpoint '{path}' saved {len(state['generators'])} loader generators, the train_loader has "
                f"{len(self.generators)}: resume with the loader the run started with"
            )
        for gen, saved in zip(self.generators, state["generators"]):
            gen.set_state(saved)
        restore_rng_state(state["rng"])
        meta = ckpt.meta
        self.history = [EpochStats(**h) for h in meta["history"]]
        self.best_epoch, self.best_loss = meta["best_epoch"], meta["best_loss"]
        self.bad_epochs, self.early_stopped = meta["bad_epochs"], meta["early_stopped"]
        if ckpt.best_state is not None:
            self.best_state = {k: v.to(self.device) for k, v in ckpt.best_state.items()}
        _setup.apply_masks(self.mask_pairs)
        return int(meta["epoch"])


def _progress(enabled: bool) -> Any:
    """A started rich Progress, or None."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    progress.start()
    return progress
