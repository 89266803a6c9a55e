"""Physical removal: turn a PruningPlan into a smaller plain nn.Module with dense tensors.

The plan is first turned into a ``SurgeryRecord`` (kept indices per tensor axis, new module
attribute values) that is pure JSON; applying a record needs no graph, so a pruned model can be
rebuilt from the original factory plus ``record.json`` plus safetensors weights, without pickle.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.dependency.graph import DependencyGraph
from prunekit.dependency.groups import PruningPlan
from prunekit.errors import InvalidParameterError, SourceError, UnsupportedLayerError
from prunekit.tracing import call_model, iter_tensors, training_mode


class PruningVerificationError(UnsupportedLayerError):
    """The pruned model did not run, or changed its output shape: nothing was modified."""


@dataclass
class SurgeryRecord:
    """What a structural edit did, as data: kept indices per tensor axis, new attribute values."""

    kept: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    bypassed: dict[str, int | None] = field(default_factory=dict)  # depth pruning: block -> tuple_len
    split_attention: list[str] = field(default_factory=list)  # nn.MultiheadAttention modules split first

    def to_json(self) -> str:
        return json.dumps({"kept": {t: {str(a): i for a, i in ax.items()} for t, ax in self.kept.items()},
                           "attributes": self.attributes, "bypassed": self.bypassed,
                           "split_attention": self.split_attention})

    @classmethod
    def from_json(cls, text: str) -> "SurgeryRecord":
        data = json.loads(text)
        kept = {t: {int(a): list(map(int, i)) for a, i in ax.items()} for t, ax in data["kept"].items()}
        attrs = {m: {k: tuple(v) if isinstance(v, list) else v for k, v in a.items()} for m, a in data["attributes"].items()}
        return cls(kept, attrs, dict(data.get("bypassed", {})), list(data.get("split_attention", [])))

    def merged(self, later: "SurgeryRecord") -> "SurgeryRecord":
        """Compose two successive edits into one record relative to the original model."""
        kept = {t: dict(ax) for t, ax in self.kept.items()}
        for t, axes in later.kept.items():
            for axis, idx in axes.items():
                base = kept.setdefault(t, {}).get(axis)
                kept[t][axis] = [base[i] for i in idx] if base is not None else list(idx)
        attrs = {m: dict(a) for m, a in self.attributes.items()}
        for m, a in later.attributes.items():
            attrs.setdefault(m, {}).update(a)
        return SurgeryRecord(kept, attrs, {**self.bypassed, **later.bypassed},
                             self.split_attention + [n for n in later.split_attention if n not in self.split_attention])


def plan_to_record(model: nn.Module, graph: DependencyGraph, plan: PruningPlan) -> SurgeryRecord:
    """Validate ``plan`` against ``graph`` and compute the kept indices and new attributes."""
    removed_roots: set[int] = set()
    for gid, units in plan.removed.items():
        group = graph.group(gid)
        if not units:
            continue
        if not group.prunable:
            raise InvalidParameterError(f"group '{gid}' is not prunable: {group.reason}")
        idx = np.asarray(units, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= group.size or len(set(idx.tolist())) != len(idx):
            raise InvalidParameterError(
                f"plan for group '{gid}' must list distinct units in [0, {group.size}). Got {list(units)[:8]} instead.")
        if group.size - len(idx) < group.min_units:
            raise InvalidParameterError(
                f"plan removes {len(idx)} of {group.size} units of group '{gid}'; at least {group.min_units} must stay")
        removed_roots.update(graph.unit_roots[gid][idx].tolist())

    record = SurgeryRecord()
    removed = np.fromiter(removed_roots, dtype=np.int64, count=len(removed_roots))
    top = max((int(r.max()) for r in graph.slot_roots.values() if r.size), default=0)
    is_removed = np.zeros(max(top, int(removed.max(initial=0))) + 1, dtype=bool)  # root -> removed, O(1) lookups
    is_removed[removed] = True
    new_len: dict[tuple[str, int], int] = {}
    for (tensor, axis), roots in graph.slot_roots.items():
        keep = ~is_removed[roots]
        new_len[(tensor, axis)] = int(keep.sum())
        if not keep.all():
            record.kept.setdefault(tensor, {})[axis] = np.flatnonzero(keep).tolist()
    record.attributes = _new_attributes(model, graph, record, removed_roots)
    return record


def _new_attributes(model: nn.Module, graph: DependencyGraph, record: SurgeryRecord,
                    removed_roots: set[int]) -> dict[str, dict[str, Any]]:
    attrs: dict[str, dict[str, Any]] = {}
    state = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))

    def new_size(tensor: str, axis: int) -> int:
        kept = record.kept.get(tensor, {}).get(axis)
        return len(kept) if kept is not None else state[tensor].shape[axis]

    touched_modules = {t.rsplit(".", 1)[0] if "." in t else "" for t in record.kept}
    for path in sorted(touched_modules):
        module = model.get_submodule(path)
        changes: dict[str, Any] = {}
        w = f"{path}.weight" if path else "weight"
        if isinstance(module, nn.modules.conv._ConvNd):
            mode = graph.conv_modes.get(w)
            out_ch = new_size(w, 0)
            if module.transposed:
                changes.update(in_channels=new_size(w, 0), out_channels=new_size(w, 1) * module.groups)
            elif mode is not None and mode.kind == "depthwise":
                groups = out_ch // mode.multiplier
                changes.update(out_channels=out_ch, in_channels=groups, groups=groups)
            else:
                changes.update(out_channels=out_ch, in_channels=new_size(w, 1) * module.groups)
        elif isinstance(module, nn.Linear):
            changes.update(out_features=new_size(w, 0), in_features=new_size(w, 1))
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            ref = w if module.affine else (f"{path}.running_mean" if path else "running_mean")
            changes["num_features"] = new_size(ref, 0)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            changes["normalized_shape"] = (new_size(w, 0),) + tuple(module.normalized_shape[1:])
        elif isinstance(module, nn.GroupNorm) and module.affine:
            changes["num_channels"] = new_size(w, 0)
        elif isinstance(module, nn.Embedding):
            changes["embedding_dim"] = new_size(w, 1)
        elif isinstance(module, nn.PReLU):
            changes["num_parameters"] = new_size(w, 0)
        elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # Hugging Face GPT-2
            changes["nf"] = new_size(w, 1)
        elif hasattr(nn, "RMSNorm") and isinstance(module, nn.RMSNorm) and module.weight is not None:
            changes["normalized_shape"] = (new_size(w, 0),)
        if changes:
            attrs[path] = changes
    for fix in graph.fixes:
        survivors = sum(1 for n in fix.nodes.tolist() if graph.root_of[int(n)] not in removed_roots)
        if survivors == len(fix.nodes):
            continue
        module = model.get_submodule(fix.module)
        current = getattr(module, fix.attr)
        value = survivors * fix.multiplier
        attrs.setdefault(fix.module, {})[fix.attr] = tuple([value]) if isinstance(current, tuple) else value
    return attrs


def apply_record(model: nn.Module, record: SurgeryRecord) -> nn.Module:
    """Slice ``model``'s tensors and set attributes as ``record`` says (in place); returns it.

    Tied tensors (one Parameter under several names) are sliced once and stay tied. Split
    attention modules and bypassed blocks (depth pruning) are replaced first, so the tensor names
    that follow are theirs.
    """
    if record.split_attention:
        from prunekit.models.attention import SplitMultiheadAttention

        for name in record.split_attention:
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent)
            setattr(owner, child, SplitMultiheadAttention.from_torch(getattr(owner, child)))
    if record.bypassed:
        from prunekit.pruning.depth import Bypass

        for name, tuple_len in record.bypassed.items():
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, Bypass(tuple_len=tuple_len, removed=name))
    by_name = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    owners: dict[int, list[str]] = {}
    for name, t in by_name.items():
        owners.setdefault(id(t), []).append(name)
    done: set[int] = set()
    for tensor_name, axes in record.kept.items():
        if tensor_name not in by_name:
            raise SourceError(f"pruning record names tensor '{tensor_name}' that the model does not have; "
                              "build the model from the same factory and arguments as the original")
        old = by_name[tensor_name]
        if id(old) in done:
            continue
        done.add(id(old))
        new = old.detach()
        for axis, idx in sorted(axes.items()):
            new = new.index_select(axis, torch.as_tensor(idx, dtype=torch.long, device=new.device))
        new = new.clone()
        replacement = nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new
        for name in owners[id(old)]:
            path, _, attr = name.rpartition(".")
            owner = model.get_submodule(path)
            if isinstance(old, nn.Parameter):
                owner._parameters[attr] = replacement
            else:
                owner._buffers[attr] = replacement
    for path, changes in record.attributes.items():
        module = model.get_submodule(path)
        for attr, value in changes.items():
            setattr(module, attr, tuple(value) if isinstance(getattr(module, attr, None), tuple) else value)
    touched = {t.rpartition(".")[0] for t in record.kept} | set(record.attributes)
    _drop_caches(model, touched)
    return model


def _drop_caches(model: nn.Module, touched: set[str]) -> None:
    """Forget tensors a module cached from its old weights (LeViT's attention-bias cache).

    Such caches are plain dict attributes of tensors, not buffers, so slicing cannot reach them;
    emptying them makes the module recompute from the sliced weights on the next call.
    """
    for path in touched:
        module = model.get_submodule(path)
        for name, value in list(vars(module).items()):
            if name.startswith("_") or not isinstance(value, dict) or not value:
                continue
            if all(isinstance(v, torch.Tensor) for v in value.values()):
                value.clear()


def apply_plan(model: nn.Module, graph: DependencyGraph, plan: PruningPlan, *, inplace: bool = False,
               verify: bool = True) -> tuple[nn.Module, SurgeryRecord]:
    """Remove the planned units; returns ``(pruned_model, record)``.

    The edit is transactional: surgery happens on a copy, the copy is run on the graph's example
    inputs and must keep every output shape; only then is it returned (or, with ``inplace``, the
    same record replayed onto ``model``). On failure :class:`PruningVerificationError` is raised and
    ``model`` is unchanged.
    """
    record = plan_to_record(model, graph, plan)
    pruned = apply_record(copy.deepcopy(model), record)
    if verify:
        verify_pruned(pruned, graph)
    if inplace:
        return apply_record(model, record), record
    return pruned, record


def drop_unverifiable(model: nn.Module, graph: DependencyGraph, plan: PruningPlan
                      ) -> tuple[PruningPlan, dict[str, str]]:
    """The plan without the groups whose cut alone breaks the model, and why each was dropped.

    Code the trace cannot see through (a reshape whose sizes come from another tensor's width, as
    in torchvision's Swin attention) makes some cuts fail verification. Each planned group is
    tried alone on a copy; those that fail are left whole, so the rest of the plan still applies.
    """
    dropped: dict[str, str] = {}
    for gid, units in plan.removed.items():
        if not units:
            continue
        try:
            apply_plan(model, graph, PruningPlan({gid: units}))
        except PruningVerificationError as exc:
            dropped[gid] = str(exc).split(";")[0]
    kept = {gid: units for gid, units in plan.removed.items() if gid not in dropped}
    return PruningPlan(kept, {**plan.meta, "dropped_unverifiable": sorted(dropped)}), dropped


def verify_pruned(pruned: nn.Module, graph: DependencyGraph) -> None:
    """Run ``pruned`` on the graph's example inputs: eval forward, then train forward + backward.

    Each must run and keep the original output shapes of its mode: the fine-tune stage trains the
    pruned model, so a train-only path (an auxiliary head) must survive the cut too. The model's
    modes, buffers (BatchNorm statistics), gradients and the global RNG are left as they were.
    """
    training = pruned.training
    pruned.eval()
    try:
        with torch.no_grad():
            out = call_model(pruned, graph.example_inputs)
    except Exception as exc:
        raise _run_failed(exc, "") from exc
    finally:
        pruned.train(training)
    _check_shapes([tuple(t.shape) for t in iter_tensors(out)], graph.output_shapes, "")
    if graph.train_output_shapes is not None:
        shapes = _train_step_shapes(pruned, graph.example_inputs, backward=graph.train_backward)
        _check_shapes(shapes, graph.train_output_shapes, " in train mode")


def _train_step_shapes(model: nn.Module, example_inputs: Any, *, backward: bool) -> list[tuple[int, ...]]:
    """One train-mode forward and backward (gradients discarded); the output shapes."""
    grads = {p: p.grad for p in model.parameters()}
    try:
        with training_mode(model), torch.enable_grad():
            out = call_model(model, example_inputs)
            tensors = list(iter_tensors(out))
            loss = sum((t.float().sum() for t in tensors if t.is_floating_point() and t.requires_grad), torch.zeros(()))
            if backward and loss.requires_grad:
                loss.backward()
    except Exception as exc:
        raise _run_failed(exc, " in train mode (forward and backward)" if backward else " in train mode") from exc
    finally:
        for p, g in grads.items():
            p.grad = g
    return [tuple(t.shape) for t in tensors]


def _run_failed(exc: Exception, mode: str) -> PruningVerificationError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return PruningVerificationError(
        f"the pruned model failed to run{mode} ({type(exc).__name__}: {first}); "
        "a layer the engine could not see through was cut: add it to 'ignore' and report the model")


def _check_shapes(shapes: list, expected: list, mode: str) -> None:
    if shapes != expected:
        raise PruningVerificationError(
            f"the pruned model's output shapes{mode} {shapes} differ from the original {expected}; "
            "add the layer feeding the output to 'ignore'")


def zero_plan(model: nn.Module, graph: DependencyGraph, plan: PruningPlan) -> nn.Module:
    """A copy of ``model`` with the planned units' slices set to zero (shape unchanged).

    Removing zeroed channels must not change the outputs of exact groups: this is the proof used by
    the equivalence tests. Running variances are set to one instead, so BatchNorm stays finite.
    """
    record = plan_to_record(model, graph, plan)
    zeroed = copy.deepcopy(model)
    state = dict(zeroed.named_parameters(remove_duplicate=False)) | dict(zeroed.named_buffers(remove_duplicate=False))
    with torch.no_grad():
        for (tensor, axis), roots in graph.slot_roots.items():
            kept = record.kept.get(tensor, {}).get(axis)
            if kept is None:
                continue
            drop = np.setdiff1d(np.arange(len(roots)), np.asarray(kept, dtype=np.int64))
            index = [slice(None)] * state[tensor].dim()
            index[axis] = torch.as_tensor(drop, dtype=torch.long)
            state[tensor][tuple(index)] = 1.0 if tensor.endswith("running_var") else 0.0
    return zeroed


def save_pruned(model: nn.Module, record: SurgeryRecord, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``pruning_record.json`` (atomically, temp files renamed)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tmp_w, tmp_r = directory / ".model.safetensors.tmp", directory / ".pruning_record.json.tmp"
    save_file(tensors, str(tmp_w))
    tmp_r.write_text(record.to_json())
    tmp_w.replace(directory / "model.safetensors")
    tmp_r.replace(directory / "pruning_record.json")
    return directory


def load_pruned(original: nn.Module, directory: str | Path) -> nn.Module:
    """Rebuild a pruned model from a fresh original (same factory) plus a saved directory."""
    from safetensors.torch import load_file

    directory = Path(directory)
    record_path, weights_path = directory / "pruning_record.json", directory / "model.safetensors"
    for p in (record_path, weights_path):
        if not p.is_file():
            raise SourceError(f"missing {p}; save with prunekit.pruning.surgery.save_pruned first")
    try:
        record = SurgeryRecord.from_json(record_path.read_text())
        weights = load_file(str(weights_path))
    except (ValueError, KeyError, OSError) as exc:
        raise SourceError(f"corrupt pruned-model files in {directory}: {exc}") from exc
    model = apply_record(original, record)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise SourceError(f"weights in {weights_path} do not match the rebuilt model "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model
