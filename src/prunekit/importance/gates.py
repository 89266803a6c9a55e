"""Per-sample unit gates: where a group's value is consumed, and what calibration reads there.

A *gate* is a ``(N, units)`` tensor of ones multiplied into the input of every module that
consumes the group (its "in" slots: the next conv or linear, the attention output projection for
heads), broadcast along that module's channel axis. Setting a unit's gate to 0 makes every
consumer read 0 for it, which is what removing it does (``zero_plan``) on exact groups: the unit's
value can reach the rest of the network only through its consumers, since norms, activations,
pooling and residual sums act per channel. So ``-dL/dgate`` is the first-order estimate of the
loss change of the removal, and the consumer input is where "the unit's value" is read for
activation statistics (after the norm and the nonlinearity that follow the producer, after the
residual sum in a residual stream, the head's output for attention heads).

Why the consumer and not the producer's output: a gate on the raw conv output, before its
BatchNorm, does not reproduce the removal at 0 (eval-mode BN adds ``beta - gamma * mean / std``);
and gating after a smooth nonlinearity (GELU) keeps the loss linear in the gate up to the
consumer, so the first-order term is the better approximation. Where no consumer module runs as a
module (``nn.MultiheadAttention`` applies ``out_proj`` functionally) or its input width does not
match the slot, the group falls back to its producers' outputs ("out" slot modules), where the
value is the raw producer output (before any norm): documented in ``GateSite.kind``.

Gates are per sample so that ONE backward of the batch loss yields ``dL_n/dg`` for every sample
``n`` (in eval mode samples do not interact). Statistics are sums over samples (and batches), so
memory is bounded by the number of units, not by the number of calibration batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from prunekit.dependency.groups import ChannelGroup


@dataclass(frozen=True)
class GateSite:
    """One place a group's gate multiplies in: the input ("consumer") or output ("producer") of ``module``."""

    group: str
    module: str
    kind: str  # "consumer" (input of an "in" slot module) or "producer" (output of an "out" slot module)
    axis: int  # channel axis of the tensor there (1 for convolutions, -1 otherwise)
    index: torch.Tensor  # (features,) unit of each feature; ``size`` (an always-one column) where not in the group
    size: int


@dataclass
class GateStats:
    """Per-unit sums over calibration samples of one group's gate gradient ``g_n = dL_n/dgate``.

    ``g_n`` is the gradient of sample ``n``'s own loss. ``batch_mean_sq`` sums, over batches, the
    square of the batch-mean gradient (the gradient of the batch-mean loss, Molchanov et al. 2019);
    ``h_sum`` sums Hutchinson estimates of the per-sample gate Hessian diagonal (zero when not asked).
    """

    g_sum: torch.Tensor  # (units,) float64
    g2_sum: torch.Tensor  # (units,) float64
    batch_mean_sq: torch.Tensor  # (units,) float64
    h_sum: torch.Tensor  # (units,) float64
    abs_sum: torch.Tensor | None = None  # (units,) float64, sum of |g_n|
    ggn_sum: torch.Tensor | None = None  # (units,) float64, sum over samples of |dy_n/dgate|^2 (estimate)
    samples: int = 0
    batches: int = 0
    sites: tuple[str, ...] = ()  # "kind:module" of every site that fired
    hessian_exact: bool = False  # h_sum is the exact diagonal (not a Hutchinson estimate)

    @classmethod
    def zeros(cls, size: int) -> GateStats:
        z = lambda: torch.zeros(size, dtype=torch.float64)  # noqa: E731
        return cls(z(), z(), z(), z(), z(), z())

    @property
    def mean(self) -> torch.Tensor:
        return self.g_sum / max(self.samples, 1)

    @property
    def mean_sq(self) -> torch.Tensor:
        return self.g2_sum / max(self.samples, 1)

    @property
    def hessian(self) -> torch.Tensor:
        return self.h_sum / max(self.samples, 1)

    @property
    def output_sensitivity(self) -> torch.Tensor:
        return self.ggn_sum / max(self.samples, 1)


def channel_axis(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.modules.conv._ConvNd) else -1


def _index(unit_of_position, size: int) -> torch.Tensor:
    idx = torch.as_tensor(unit_of_position, dtype=torch.long).clone()
    idx[idx < 0] = size  # the padded always-one column
    return idx


def candidate_sites(model: nn.Module, groups: Iterable[ChannelGroup]) -> dict[str, list[GateSite]]:
    """Consumer sites of every group, then producer sites (used only where no consumer fires)."""
    modules = dict(model.named_modules())
    sites: dict[str, list[GateSite]] = {}
    for group in groups:
        found: list[GateSite] = []
        for kind, role in (("consumer", "in"), ("producer", "out")):
            seen = set()
            for slot in group.slots_with_role(role):
                module = modules.get(slot.module)
                if module is None or slot.module in seen:
                    continue
                seen.add(slot.module)
                found.append(GateSite(group.id, slot.module, kind, channel_axis(module),
                                      _index(slot.unit_of_position, group.size), group.size))
        sites[group.id] = found
    return sites


@dataclass
class GateRecorder:
    """Forward hooks that apply the gates and accumulate activation statistics at the sites.

    ``gates[group]`` is created at the first site of the group to fire in a batch, with that
    site's batch size; ``fired`` records which sites ran with a matching shape (the probe pass).
    """

    sites: list[GateSite]
    want_gates: bool = True
    want_activations: bool = False
    gates: dict[str, torch.Tensor] = field(default_factory=dict)
    activations: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    fired: set[tuple[str, str, str]] = field(default_factory=set)
    probing: bool = False

    def install(self, model: nn.Module) -> list:
        modules = dict(model.named_modules())
        by_module: dict[tuple[str, str], list[GateSite]] = {}
        for site in self.sites:
            by_module.setdefault((site.module, site.kind), []).append(site)
        handles = []
        for (name, kind), sites in by_module.items():
            module = modules[name]
            if kind == "consumer":
                handles.append(module.register_forward_pre_hook(self._pre_hook(sites), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(self._post_hook(sites)))
        return handles

    def _pre_hook(self, sites: list[GateSite]) -> Callable:
        def hook(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
            if not args or not isinstance(args[0], torch.Tensor):
                return None
            return (self._apply(sites, args[0]), *args[1:]), kwargs
        return hook

    def _post_hook(self, sites: list[GateSite]) -> Callable:
        def hook(mod: nn.Module, args: tuple, output: Any) -> Any:
            if isinstance(output, torch.Tensor):
                return self._apply(sites, output)
            if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                return (self._apply(sites, output[0]), *output[1:])
            return None
        return hook

    def _apply(self, sites: list[GateSite], a: torch.Tensor) -> torch.Tensor:
        if not a.is_floating_point() or a.dim() < 2:
            return a
        for site in sites:
            if a.shape[site.axis] != len(site.index):
                continue
            self.fired.add((site.group, site.kind, site.module))
            if self.probing:
                continue
            if self.want_activations:
                self._accumulate(site, a.detach())
            if self.want_gates:
                gate = self.gates.get(site.group)
                if gate is None:
                    gate = torch.ones(a.shape[0], site.size, dtype=a.dtype, device=a.device, requires_grad=True)
                    self.gates[site.group] = gate
                if gate.shape[0] != a.shape[0]:
                    continue
                padded = torch.cat([gate, gate.new_ones(gate.shape[0], 1)], 1)  # (N, units + 1)
                per_feature = padded[:, site.index.to(a.device)]  # (N, features)
                shape = [a.shape[0]] + [1] * (a.dim() - 1)
                shape[site.axis] = len(site.index)
                a = a * per_feature.view(shape)
        return a

    def _accumulate(self, site: GateSite, a: torch.Tensor) -> None:
        flat = a.movedim(site.axis, -1).reshape(-1, a.shape[site.axis]).double()  # (elements, features)
        per_feature = torch.stack([
            torch.full((flat.shape[1],), float(flat.shape[0]), dtype=torch.float64),
            (flat <= 0).sum(0).double(),
            flat.abs().sum(0),
            (flat < 0).sum(0).double(),
        ])  # (4, features)
        per_unit = torch.zeros(4, site.size + 1, dtype=torch.float64).index_add_(1, site.index, per_feature.cpu())
        acc = self.activations.get(site.group)
        if acc is None:
            self.activations[site.group] = [per_unit[:, : site.size]]
        else:
            acc[0] += per_unit[:, : site.size]


def choose_sites(candidates: dict[str, list[GateSite]], fired: set[tuple[str, str, str]]) -> list[GateSite]:
    """Per group: the consumer sites that fired; else the producer sites that fired."""
    chosen = []
    for sites in candidates.values():
        ran = [s for s in sites if (s.group, s.kind, s.module) in fired]
        consumers = [s for s in ran if s.kind == "consumer"]
        chosen += consumers or [s for s in ran if s.kind == "producer"]
    return chosen
