"""Run the same fine-tuning code under ``torchrun --nproc_per_node=N`` with no change to the caller.

Each rank sees a contiguous slice of every *global* batch the caller's loader would have made
(same sampler, same seed on every rank), and the loss is rescaled so DistributedDataParallel's
gradient average equals the single-process mean over the global batch. A 2-process run therefore
follows the single-process run step for step, up to float summation order.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from prunekit.dependency.groups import PruningPlan
from prunekit.errors import InvalidParameterError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size, its local GPU index and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidParameterError(f"environment variable {name} must be an integer. Got {raw!r} instead.") from None


def world_size() -> int:
    """The world size: from the process group when one is up, else from WORLD_SIZE (default 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's rank: from the process group when one is up, else from RANK (default 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


@contextmanager
def distributed_context(*, backend: str | None = None) -> Iterator[DistributedContext]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), and leave it after.

    Without WORLD_SIZE (or with 1) nothing is initialised and a single-process context is
    yielded. The backend defaults to NCCL when CUDA is available, gloo otherwise. Re-entrant: a
    group that is already up is used as is and left up on exit.
    """
    size, local_rank = _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1)) if cuda else torch.device("cpu")
    if size <= 1:
        yield DistributedContext(rank=0, world_size=1, local_rank=0, device=device)
        return
    owns = not dist.is_initialized()
    if owns:
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
    failed = False
    try:
        yield DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                                 local_rank=local_rank, device=device)
    except BaseException:
        failed = True
        raise
    finally:
        if owns and dist.is_initialized():
            _leave_group(wait_for_peers=not failed)


def _leave_group(*, wait_for_peers: bool) -> None:
    """Tear the process group down while the interpreter is fully alive.

    A ``DistributedDataParallel`` wrapper caught in a reference cycle keeps the group's gloo
    worker threads referenced until the garbage collector runs; if that is interpreter exit,
    after ``destroy_process_group``, the process aborts ("terminate called without an active
    exception", SIGABRT, seen intermittently on a loaded 2-core machine). So: wait until every
    rank is done with its collectives (only on a clean exit: after an error a peer may never
    arrive), collect such wrappers now, then destroy.
    """
    if wait_for_peers:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


class ShardedBatchSampler(Sampler[list[int]]):
    """Yield this rank's slice of each global batch drawn by ``batch_sampler``.

    Every rank iterates the same (identically seeded) sampler, so the union of the slices over
    ranks is exactly the batch a single process would have drawn. A global batch of ``b``
    samples is cut like ``torch.tensor_split`` into ``world_size`` near-equal parts.
    """

    def __init__(self, batch_sampler: Any, *, rank: int, world_size: int) -> None:
        self.batch_sampler = batch_sampler
        self.rank = rank
        self.world_size = world_size
        self.global_sizes: list[int] = []  # sizes of the global batches drawn so far this epoch

    def __iter__(self) -> Iterator[list[int]]:
        self.global_sizes = []
        for indices in self.batch_sampler:
            indices = list(indices)
            b, w = len(indices), self.world_size
            start = self.rank * (b // w) + min(self.rank, b % w)
            stop = start + b // w + (1 if self.rank < b % w else 0)
            self.global_sizes.append(b)
            yield indices[start:stop]

    def __len__(self) -> int:
        return len(self.batch_sampler)


def shard_loader(loader: DataLoader, *, context: DistributedContext | None = None) -> DataLoader:
    """A loader yielding this rank's share of each of ``loader``'s batches (``loader`` itself if alone).

    The caller's ``batch_size`` stays the global batch size, so learning rates mean the same at
    any world size. The shuffling generator is shared with ``loader`` (same object), so seeding
    and checkpointing it works unchanged.
    """
    size = context.world_size if context is not None else world_size()
    if size <= 1:
        return loader
    if loader.batch_sampler is None:
        raise InvalidParameterError(
            "shard_loader needs a map-style loader with a batch sampler; an IterableDataset loader "
            "must shard itself (read torch.utils.data.get_worker_info and the rank)"
        )
    sampler = ShardedBatchSampler(loader.batch_sampler, rank=context.rank if context else rank(), world_size=size)
    return DataLoader(
        loader.dataset, batch_sampler=sampler, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn, generator=loader.generator,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )


def wrap_ddp(model: nn.Module, *, context: DistributedContext | None = None) -> nn.Module:
    """``DistributedDataParallel(model)`` when several ranks run, else ``model`` unchanged.

    Wrapping broadcasts rank 0's parameters and buffers, so every rank starts from one state.
    """
    size = context.world_size if context is not None else world_size()
    if size <= 1:
        return model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send ``obj`` from rank ``src`` to every rank and return it (``obj`` itself when alone).

    So a pruning plan decided once on rank 0 is applied identically everywhere. Carried as JSON,
    not pickle, so nothing received is ever unpickled: ``obj`` must be JSON-serialisable or a
    ``PruningPlan``. Other ranks may pass ``None``.
    """
    if world_size() <= 1 or not dist.is_initialized():
        return obj
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    if dist.get_rank() == src:
        if isinstance(obj, PruningPlan):
            text = json.dumps({"kind": "PruningPlan", "value": obj.to_json()})
        else:
            try:
                text = json.dumps({"kind": "json", "value": obj})
            except TypeError as err:
                raise InvalidParameterError(
                    f"broadcast_object carries JSON values or a PruningPlan. Got {type(obj).__name__}: {err}"
                ) from None
        payload = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).to(device)
        length = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    else:
        length = torch.zeros(1, dtype=torch.int64, device=device)
    dist.broadcast(length, src=src)
    if dist.get_rank() != src:
        payload = torch.empty(int(length.item()), dtype=torch.uint8, device=device)
    dist.broadcast(payload, src=src)
    message = json.loads(bytes(payload.cpu().tolist()).decode("utf-8"))
    if message["kind"] == "PruningPlan":
        return PruningPlan.from_json(message["value"])
    return message["value"]


def all_reduce_metrics(metrics: Mapping[str, float], *, op: str = "sum") -> dict[str, float]:
    """Sum (``op="sum"``) or average (``op="mean"``) scalar metrics over ranks; identity when alone.

    Reduce sums and counts, then divide, to get exact global means from uneven shards.
    """
    if op not in ("sum", "mean"):
        raise InvalidParameterError(f"The 'op' parameter of all_reduce_metrics must be 'sum' or 'mean'. Got {op!r} instead.")
    if world_size() <= 1 or not dist.is_initialized() or not metrics:
        return {k: float(v) for k, v in metrics.items()}
    keys = sorted(metrics)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)  # (K,)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    if op == "mean":
        values /= dist.get_world_size()
    return dict(zip(keys, values.cpu().tolist()))


def barrier() -> None:
    """Wait for every rank (no-op when alone)."""
    if world_size() > 1 and dist.is_initialized():
        dist.barrier()
