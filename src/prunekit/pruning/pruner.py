"""StructuredPruner: a fit/transform shell over graph -> scores -> allocation -> surgery."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from prunekit import defaults
from prunekit.dependency import DependencyGraph, build_graph
from prunekit.dependency.groups import PruningPlan
from prunekit.errors import InvalidParameterError, NotFittedError, PrunekitWarning, check_ratio
from prunekit.importance import Criterion, collect, make_criterion, score_groups
from prunekit.importance.reduce import get_normalizer, get_reduction
from prunekit.pruning.allocate import TARGETS, allocate
from prunekit.pruning.surgery import PruningVerificationError, SurgeryRecord, apply_plan, drop_unverifiable

Cost = Callable[[nn.Module], float]


class StructuredPruner:
    """Remove whole channels / heads / conv groups, chosen by an importance criterion.

    Parameters
    ----------
    criterion : str or Criterion
        A name from ``prunekit.importance.CRITERIA`` or a criterion object.
    ratio : float in [0, 1)
        Fraction of units (``target="channels"``) or of the model's params / MACs / cost to remove.
        Defaults (here and for every argument) are :mod:`prunekit.defaults`, the same a recipe gets:
        remove 50% of the MACs, global ranking, ``round_to=8``.
    target : {"channels", "params", "macs", "cost"}
        "cost" needs ``cost``, a callable ``cost(model) -> float`` (e.g. measured latency).
    scope : {"local", "global"}
        Same ratio in every group, or one ranking of normalized scores across groups.
    round_to, min_keep, ignore, per_module
        See :mod:`prunekit.pruning.allocate`. ``round_to`` defaults to 8 because odd widths were
        measured slower than the dense model in ONNX Runtime (``benchmarks/vs_torch_pruning.py``);
        ``None`` keeps exact counts.
    reduction : str
        How a criterion combines a group's slots (when given by name and it has slots).
    normalizer : str or callable
        Per-group score normalization for the global ranking.
    loss_fn, batches, cost, seed
        Calibration loss (default cross-entropy; any ``loss_fn(outputs, targets)``, see
        :func:`prunekit.importance.collect`; ``output_sensitivity`` and ``activation`` use none),
        batches to use, custom cost, random seed.
    trace_train_mode : bool
        Also trace a train-mode forward and backward (the default), so branches that run only in
        training (auxiliary heads) are coupled and the pruned model trains. ``False`` traces eval
        mode only, skipping the second trace and its backward (graph building is then the eval
        trace alone), for models that are never trained after the cut.

    Attributes
    ----------
    graph_, scores_, skipped_, plan_ : set by ``fit``; ``skipped_`` maps group id -> why the
        criterion could not score it (those groups are left whole).
    record_ : set by ``transform``: the surgery record of the last pruned model.

    Examples
    --------
    >>> import torch
    >>> from prunekit.models.builtin import MLP
    >>> model = MLP(in_features=8, hidden=(16,), num_classes=3)
    >>> small = StructuredPruner(criterion="l2", ratio=0.5, target="channels", scope="local").fit(model, torch.randn(1, 8)).transform(model)
    >>> small.net[1].out_features
    8
    """

    def __init__(self, *, criterion: str | Criterion = defaults.CRITERION, ratio: float = defaults.PRUNE_RATIO,
                 target: str = defaults.PRUNE_TARGET, scope: str = defaults.PRUNE_SCOPE,
                 round_to: int | None = defaults.ROUND_TO, min_keep: int = defaults.MIN_KEEP,
                 ignore: Sequence[str] = (), per_module: Mapping[str, float] | None = None,
                 reduction: str = "mean", normalizer: str | Callable | None = "mean",
                 loss_fn: Callable | None = None, batches: int | None = None, cost: Cost | None = None,
                 seed: int = 0, trace_train_mode: bool = True) -> None:
        self.criterion = criterion
        self.ratio = ratio
        self.target = target
        self.scope = scope
        self.round_to = round_to
        self.min_keep = min_keep
        self.ignore = ignore
        self.per_module = per_module
        self.reduction = reduction
        self.normalizer = normalizer
        self.loss_fn = loss_fn
        self.batches = batches
        self.cost = cost
        self.seed = seed
        self.trace_train_mode = trace_train_mode

    def _validate(self) -> Criterion:
        name = type(self).__name__
        check_ratio(self.ratio, "ratio", name)
        _one_of(self.target, TARGETS, "target", name)
        _one_of(self.scope, ("local", "global"), "scope", name)
        if self.round_to is not None and (not _is_int(self.round_to) or self.round_to < 1):
            _bad("round_to", name, "None or an int >= 1", self.round_to)
        if not _is_int(self.min_keep) or self.min_keep < 1:
            _bad("min_keep", name, "an int >= 1", self.min_keep)
        if isinstance(self.ignore, str) or not all(isinstance(m, str) for m in self.ignore):
            _bad("ignore", name, "a list of module names or patterns", self.ignore)
        if self.per_module is not None:
            if not isinstance(self.per_module, Mapping):
                _bad("per_module", name, "a mapping of module name -> ratio", self.per_module)
            for module, r in self.per_module.items():
                check_ratio(r, f"per_module[{module!r}]", name)
        if self.batches is not None and (not _is_int(self.batches) or self.batches < 1):
            _bad("batches", name, "None or an int >= 1", self.batches)
        if not isinstance(self.trace_train_mode, bool):
            _bad("trace_train_mode", name, "True or False", self.trace_train_mode)
        if self.target == "cost" and not callable(self.cost):
            _bad("cost", name, "a callable cost(model) -> float when target='cost'", self.cost)
        get_reduction(self.reduction, name)
        get_normalizer(self.normalizer, name)
        return make_criterion(self.criterion, owner=name, reduction=self.reduction,
                              seed=self.seed if self.criterion == "random" else None)

    def fit(self, model: nn.Module, example_inputs: Any, data: Iterable | None = None) -> StructuredPruner:
        """Trace ``model``, score its groups and decide ``plan_``; the model is not modified.

        ``data`` is a loader of ``(inputs, targets)`` for criteria needing gradients or
        activations (``criterion.requires``); weight criteria ignore it.
        """
        criterion = self._validate()
        needs = criterion.requires
        if needs - {"weights"} and data is None:
            raise InvalidParameterError(
                f"criterion {self.criterion!r} needs {sorted(needs - {'weights'})} from calibration data: "
                f"pass data=<loader of (inputs, targets)> to fit"
            )
        self.graph_: DependencyGraph = build_graph(model, example_inputs, train_mode=self.trace_train_mode)
        ctx = collect(model, data, needs=needs, loss_fn=self.loss_fn, batches=self.batches, seed=self.seed,
                      groups=self.graph_.prunable_groups())
        self.scores_, self.skipped_ = score_groups(self.graph_.prunable_groups(), ctx, criterion)
        if self.skipped_:
            warnings.warn(f"{len(self.skipped_)} group(s) left whole, criterion cannot score them: "
                          f"{next(iter(self.skipped_.values()))}", PrunekitWarning, stacklevel=2)
        measure = None if self.target == "channels" else _measure(model, self.graph_, self._cost_fn(example_inputs))
        estimate = None
        if self.target in ("params", "macs"):  # priced from the graph; allocate re-counts the chosen plan
            from prunekit.pruning.cost_model import graph_cost

            estimate = graph_cost(model, self.graph_, self.target, example_inputs)
        plan = allocate(self.graph_.groups, self.scores_, ratio=self.ratio, scope=self.scope, target=self.target,
                        measure=measure, round_to=self.round_to, min_keep=self.min_keep, ignore=tuple(self.ignore),
                        per_module=self.per_module, normalizer=self.normalizer, estimate=estimate)
        self.plan_ = PruningPlan(plan.removed, plan.meta | {"criterion": repr(criterion)})
        return self

    def transform(self, model: nn.Module, inplace: bool = False) -> nn.Module:
        """The pruned model (a copy unless ``inplace``); the surgery record is kept as ``record_``."""
        if not hasattr(self, "plan_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: call fit(model, example_inputs) before transform"
            )
        try:
            pruned, record = apply_plan(model, self.graph_, self.plan_, inplace=inplace)
        except PruningVerificationError:
            # Leave whole the groups whose cut alone breaks the model; say which and why.
            self.plan_, self.dropped_ = drop_unverifiable(model, self.graph_, self.plan_)
            warnings.warn(f"{len(self.dropped_)} group(s) left whole because cutting them breaks the model "
                          f"(first: {next(iter(self.dropped_.items()), ('', ''))}); add their layers to 'ignore' "
                          "to silence this", PrunekitWarning, stacklevel=2)
            pruned, record = apply_plan(model, self.graph_, self.plan_, inplace=inplace)
        self.record_: SurgeryRecord = record
        return pruned

    def fit_transform(self, model: nn.Module, example_inputs: Any, data: Iterable | None = None, *,
                      inplace: bool = False) -> nn.Module:
        return self.fit(model, example_inputs, data).transform(model, inplace=inplace)

    def _cost_fn(self, example_inputs: Any) -> Cost:
        if self.target == "cost":
            return self.cost
        from prunekit.evaluation.complexity import count_macs, count_params

        if self.target == "params":
            return count_params
        return lambda m: count_macs(m, example_inputs).total

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(criterion={self.criterion!r}, ratio={self.ratio!r}, "
                f"target={self.target!r}, scope={self.scope!r})")


def _measure(model: nn.Module, graph: DependencyGraph, cost: Cost) -> Callable[[PruningPlan], float]:
    """Price a plan: prune a copy (no verification run: the chosen plan is verified later)."""
    def measure(plan: PruningPlan) -> float:
        if not plan.removed:
            return float(cost(model))
        pruned, _ = apply_plan(model, graph, plan, verify=False)
        with torch.no_grad():
            return float(cost(pruned))
    return measure


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(param: str, owner: str, rule: str, value: object) -> None:
    raise InvalidParameterError(f"The '{param}' parameter of {owner} must be {rule}. Got {value!r} instead.")


def _one_of(value: object, allowed: Sequence[str], param: str, owner: str) -> None:
    if value not in allowed:
        _bad(param, owner, "one of " + ", ".join(repr(a) for a in allowed), value)
