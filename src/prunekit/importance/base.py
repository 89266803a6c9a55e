"""What every criterion shares: the score context, the requirement tags and the registry.

A criterion is a callable ``criterion(group, ctx) -> scores`` of shape ``(group.size,)``, finite,
higher = more important. It declares ``requires`` (a subset of :data:`REQUIREMENTS`) so the
pruner knows which calibration passes to run (:func:`prunekit.importance.collect.collect`)
before scoring. Criteria never touch the model; they read the tensors held by the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Protocol, runtime_checkable

import torch
from torch import nn

from prunekit.dependency.groups import ChannelGroup, Slot
from prunekit.errors import InvalidParameterError, PrunekitError
from prunekit.registry import Registry

if TYPE_CHECKING:
    from prunekit.importance.gates import GateStats

REQUIREMENTS = frozenset({"weights", "grads", "activations", "hessian", "gates", "gate_hessian", "gate_ggn"})
DATA_DRIVEN = REQUIREMENTS - {"weights"}
ROLES = ("out", "in", "norm", "param")

CRITERIA: Registry = Registry("criterion")


class UnscorableGroupError(PrunekitError):
    """A criterion has nothing to measure on a group (no BatchNorm for bn_scale, no hooks fired...).

    The pruner skips such groups (they keep all their units) and says so in ``skipped_``.
    """


class DegenerateScoresError(PrunekitError):
    """A data-driven criterion gave every unit of a group the same score: it cannot rank them.

    Raised (not skipped) because it means the calibration signal is missing, e.g. a loss whose
    gradient is exactly zero at the dense model (a distance to the model's own output): pruning
    on such scores would silently be arbitrary.
    """


@dataclass
class ActivationStats:
    """Per-unit sums over every calibration element of a group's value where it is consumed.

    Read at the group's gate sites (:mod:`prunekit.importance.gates`): the inputs of its consumer
    modules, i.e. after the norm and nonlinearity that follow the producer.
    """

    count: torch.Tensor  # (units,) float64, elements seen per unit
    nonpositive: torch.Tensor  # (units,) float64, elements <= 0 (zero after a ReLU)
    abs_sum: torch.Tensor  # (units,) float64, sum of |a|
    negative: torch.Tensor | None = None  # (units,) float64, elements < 0 (none after a ReLU)

    @property
    def apoz(self) -> torch.Tensor:
        """Average percentage of zeros after a ReLU, per feature, in [0, 1]."""
        return self.nonpositive / self.count.clamp_min(1)

    @property
    def mean_abs(self) -> torch.Tensor:
        return self.abs_sum / self.count.clamp_min(1)


@dataclass
class ScoreContext:
    """Everything criteria may read, keyed by ``model.state_dict()`` names or module names.

    ``grads`` is the mean over calibration batches of the gradient of the batch-mean loss;
    ``grad_sq`` the mean over batches of its square (empirical Fisher, per batch);
    ``hessian_diag`` the Hutchinson estimate E[v * Hv] (these three per weight tensor);
    ``gates`` per group id the per-sample gate-gradient sums (:class:`GateStats`);
    ``activations`` per group id the statistics of the value its consumers read.
    """

    model: nn.Module | None
    tensors: dict[str, torch.Tensor]
    params: frozenset[str]
    grads: dict[str, torch.Tensor] = field(default_factory=dict)
    grad_sq: dict[str, torch.Tensor] = field(default_factory=dict)
    hessian_diag: dict[str, torch.Tensor] = field(default_factory=dict)
    activations: dict[str, ActivationStats] = field(default_factory=dict)
    gates: dict[str, "GateStats"] = field(default_factory=dict)
    n_batches: int = 0
    n_samples: int = 0
    collected: frozenset[str] = frozenset({"weights"})

    @classmethod
    def from_model(cls, model: nn.Module) -> ScoreContext:
        """A weights-only context: detached state_dict tensors and the parameter names."""
        tensors = {k: v.detach() for k, v in model.state_dict().items()}
        params = frozenset(n for n, _ in model.named_parameters(remove_duplicate=False))
        return cls(model=model, tensors=tensors, params=params)

    def tensor(self, name: str) -> torch.Tensor:
        return _lookup(self.tensors, name, "weights").float()

    def grad(self, name: str) -> torch.Tensor:
        return _lookup(self.grads, name, "grads").float()

    def grad_squared(self, name: str) -> torch.Tensor:
        return _lookup(self.grad_sq, name, "grads").float()

    def hessian(self, name: str) -> torch.Tensor:
        return _lookup(self.hessian_diag, name, "hessian").float()


def _lookup(table: dict[str, torch.Tensor], name: str, need: str) -> torch.Tensor:
    try:
        return table[name]
    except KeyError:
        raise InvalidParameterError(
            f"the score context has no '{need}' entry for tensor '{name}': run "
            f"collect(..., needs={{'{need}'}}) on the model the groups were built from"
        ) from None


@runtime_checkable
class Criterion(Protocol):
    """Scores the units of a group; see the module docstring."""

    requires: frozenset[str]

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor: ...


def check_roles(roles: Iterable[str], owner: str) -> tuple[str, ...]:
    roles = tuple(roles)
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise InvalidParameterError(
            f"The 'roles' parameter of {owner} must be a non-empty subset of {ROLES}. Got {roles!r} instead."
        )
    return roles


def is_bias(name: str) -> bool:
    """``conv.bias``, ``attn.in_proj_bias``: biases carry no fan-in to measure."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf == "bias" or leaf.endswith("_bias")


def param_slots(group: ChannelGroup, ctx: ScoreContext, roles: tuple[str, ...],
                include_bias: bool) -> list[Slot]:
    """Slots of ``group`` on parameters (not buffers such as running_var) with the given roles."""
    return [
        s for s in group.slots
        if s.role in roles and s.tensor in ctx.params and (include_bias or not is_bias(s.tensor))
    ]


def per_position(t: torch.Tensor, axis: int) -> torch.Tensor:
    """Sum over every axis except ``axis``: one value per position along it."""
    return t.movedim(axis, 0).reshape(t.shape[axis], -1).sum(1)  # (t.shape[axis],)


def require_slots(slots: list[Slot], group: ChannelGroup, name: str, what: str) -> list[Slot]:
    if not slots:
        raise UnscorableGroupError(f"criterion '{name}' cannot score group '{group.id}': it has no {what}")
    return slots
