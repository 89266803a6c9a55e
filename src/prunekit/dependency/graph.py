"""Build the dependency graph: trace, couple, then gather channel sets into groups."""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.dependency.coupling import CouplingTracer
from prunekit.dependency.rules.common import AttrFix, ConvMode
from prunekit.dependency.groups import ChannelGroup, Slot
from prunekit.errors import InvalidParameterError, PrunekitWarning, TracingError
from prunekit.tracing import iter_tensors, trace_ops


@dataclass
class DependencyGraph:
    """Groups of coupled slots for one model, plus what surgery needs to apply a plan.

    ``slot_roots[(tensor, axis)]`` gives, for every position on that axis, the id of its channel
    set; a group's units are channel sets (``unit_roots``). Built by :func:`build_graph`.
    """

    groups: list[ChannelGroup]
    unit_roots: dict[str, np.ndarray]  # group id -> root id of each unit
    slot_roots: dict[tuple[str, int], np.ndarray]
    fixes: list[AttrFix]
    conv_modes: dict[str, ConvMode]
    aliases: dict[str, list[str]]  # tensor name -> every name of the same tensor (tied weights)
    unknown_ops: dict[str, str]
    output_shapes: list[tuple[int, ...]]
    example_inputs: Any = field(repr=False, default=None)
    root_of: dict[int, int] = field(repr=False, default_factory=dict)  # node -> root, for fixes
    # Train-mode output shapes (None when the model could not run in train mode, see train_note).
    train_output_shapes: list[tuple[int, ...]] | None = None
    train_note: str = ""  # why train mode was not traced or not backpropagated, or ""
    train_backward: bool = False  # the original model backpropagates: verification does it too

    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def group(self, group_id: str) -> ChannelGroup:
        for g in self.groups:
            if g.id == group_id:
                return g
        raise InvalidParameterError(f"unknown group '{group_id}'; list them with graph.groups")

    def groups_of_module(self, module: str) -> list[ChannelGroup]:
        return [g for g in self.groups if any(s.module == module for s in g.slots)]

    def explain(self) -> str:
        lines = [g.describe() for g in self.groups]
        lines += [f"unknown op {where}: {why}" for where, why in self.unknown_ops.items()]
        return "\n".join(lines)


def build_graph(model: nn.Module, example_inputs: Any, *, train_mode: bool = True) -> DependencyGraph:
    """Trace ``model`` on ``example_inputs`` and group every prunable channel axis.

    ``example_inputs`` is a tensor, a tuple of positional tensors, or a dict of keyword tensors.
    The model is run without gradients in eval mode, then in train mode (auxiliary heads and
    other paths taken only when ``self.training``), and the couplings of both runs are joined;
    it is not modified. A model that cannot run in train mode is traced in eval mode only and
    ``train_note`` says why (a :class:`PrunekitWarning` too); ``train_mode=False`` skips that run
    (for models that are never trained again: their train-only paths may break).
    """
    tracer = CouplingTracer(model)
    outputs = _trace_outputs(model, example_inputs, tracer, training=False)
    train_shapes, note, backward = None, "train mode not traced (train_mode=False)", False
    if train_mode:
        try:
            train_outputs = _trace_outputs(model, example_inputs, tracer, training=True)
            train_shapes, note = [tuple(t.shape) for t in train_outputs], ""
            backward, note = _backward_runs(model, train_outputs)
        except TracingError as exc:
            note = f"train mode not traced, the pruned model is checked in eval mode only: {exc}"
            warnings.warn(note, PrunekitWarning, stacklevel=2)
    graph = _assemble(model, tracer, example_inputs, [tuple(t.shape) for t in outputs])
    graph.train_output_shapes, graph.train_note, graph.train_backward = train_shapes, note, backward
    return graph


def _backward_runs(model: nn.Module, outputs: list) -> tuple[bool, str]:
    """Can the original model backpropagate? If not, verification cannot ask it of the pruned one."""
    grads = {p: p.grad for p in model.parameters()}
    try:
        loss = sum((t.float().sum() for t in outputs if t.is_floating_point() and t.requires_grad), torch.zeros(()))
        if not loss.requires_grad:
            return False, "no output needs gradients: the train-mode check runs the forward only"
        loss.backward()
        return True, ""
    except RuntimeError as exc:
        return False, f"the model's backward fails ({str(exc).splitlines()[0]}): the train-mode check runs the forward only"
    finally:
        for p, g in grads.items():
            p.grad = g


def _trace_outputs(model: nn.Module, example_inputs: Any, tracer: CouplingTracer, *, training: bool) -> list:
    output = trace_ops(model, example_inputs, tracer, training=training)
    tracer._op, tracer._module = "output", "<model output>" + (" in train mode" if training else "")
    outputs = list(iter_tensors(output))
    for t in outputs:
        for nodes in tracer.get(t):
            tracer.freeze(nodes, "model output keeps its shape")
    return outputs


def _assemble(model: nn.Module, tracer: CouplingTracer, example_inputs: Any,
              output_shapes: list[tuple[int, ...]]) -> DependencyGraph:
    sets = tracer.sets
    frozen, inexact, head = sets.root_flags()
    group_kind = {sets.find(n) for n in tracer.group_kind}
    slot_list = sorted(tracer.slots.values(), key=lambda s: (s.tensor, s.axis))
    slot_roots = {(s.tensor, s.axis): sets.roots(s.nodes) for s in slot_list}

    # Which slots does each channel set appear in? Sets with the same slot signature form a group.
    members: dict[int, set[int]] = defaultdict(set)
    first_seen: dict[int, tuple[int, int]] = {}
    for index, slot in enumerate(slot_list):
        for position, root in enumerate(slot_roots[(slot.tensor, slot.axis)].tolist()):
            members[root].add(index)
            first_seen.setdefault(root, (index, position))
    signature_roots: dict[tuple, list[int]] = defaultdict(list)
    for root, slot_ids in members.items():
        signature_roots[(tuple(sorted(slot_ids)), root in frozen)].append(root)

    groups: list[ChannelGroup] = []
    unit_roots: dict[str, np.ndarray] = {}
    used_ids: set[str] = set()
    for (slot_ids, is_frozen), roots in sorted(signature_roots.items(), key=lambda kv: min(first_seen[r] for r in kv[1])):
        roots = sorted(roots, key=lambda r: first_seen[r])
        unit_index = {r: u for u, r in enumerate(roots)}
        slots = []
        for i in slot_ids:
            rec = slot_list[i]
            r = slot_roots[(rec.tensor, rec.axis)]
            units = np.array([unit_index.get(x, -1) for x in r.tolist()], dtype=np.int64)
            slots.append(Slot(rec.tensor, rec.axis, units, rec.role, rec.module))
        slots.sort(key=lambda s: ({"out": 0, "norm": 1, "param": 2, "in": 3}[s.role], not s.tensor.endswith("weight"), s.tensor))
        gid = _group_id(slots, used_ids)
        reason = ""
        if is_frozen:
            reason = frozen[roots[0]]
        elif not any(s.role == "out" for s in slots):
            reason = "no layer produces these channels (model input or private axis)"
        kind = "head" if roots[0] in head else "group" if roots[0] in group_kind else "channel"
        groups.append(ChannelGroup(
            id=gid, size=len(roots), slots=tuple(slots), unit=kind, prunable=not reason, reason=reason,
            exact=not any(r in inexact for r in roots),
            inexact_reason=next((inexact[r] for r in roots if r in inexact), ""),
        ))
        unit_roots[gid] = np.array(roots, dtype=np.int64)

    aliases: dict[str, list[str]] = {}
    for names in tracer.tensor_names.values():
        for n in names:
            aliases[n] = names
    all_fix_nodes = np.concatenate([f.nodes for f in tracer.fixes]) if tracer.fixes else np.zeros(0, np.int64)
    root_of = {int(n): sets.find(int(n)) for n in all_fix_nodes.tolist()}
    return DependencyGraph(
        groups=groups, unit_roots=unit_roots, slot_roots=slot_roots, fixes=tracer.fixes,
        conv_modes=tracer.conv_modes, aliases=aliases, unknown_ops=tracer.unknown_ops,
        output_shapes=output_shapes, example_inputs=example_inputs, root_of=root_of,
    )


def _group_id(slots: list[Slot], used: set[str]) -> str:
    base = f"{slots[0].tensor}:{slots[0].axis}"
    gid, n = base, 1
    while gid in used:
        n += 1
        gid = f"{base}#{n}"
    used.add(gid)
    return gid
