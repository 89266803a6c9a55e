"""Ops that move channels between axes or tensors: reshape, permute, expand, repeat, cat, stack,
split, indexing and slice assignment."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from prunekit.dependency.reshape import factorize
from prunekit.dependency.rules.common import (
    _PER_HEAD_WORDS, AttrFix, Labels, _arg, _norm_axis, _requested_shape, _tensors_in,
)


class ShapeRules:
    """Rules mixed into :class:`~prunekit.dependency.coupling.CouplingTracer` (they use its labels and
    coupling primitives through ``self``)."""

    def _reshape_inplace(self, args: tuple, kwargs: dict, out: Any) -> None:
        """``x.squeeze_(d)`` / ``x.unsqueeze_(d)``: x already has its new rank; its labels do not."""
        x = args[0]
        old = self.labels.get(id(x))
        if old is None or len(old) == x.dim():  # untracked, or squeeze_ of an axis larger than one
            return
        dim = _arg(args, kwargs, 1, "dim")
        if self._op == "unsqueeze_":
            d = _norm_axis(dim, x.dim())
            self._store(x, old[:d] + [None] + old[d:])
        elif isinstance(dim, int):
            d = _norm_axis(dim, len(old))
            self.freeze(old[d], "reshape drops a channel axis")
            self._store(x, old[:d] + old[d + 1:])
        else:
            for nodes in old:
                self.freeze(nodes, "in-place squeeze of unknown axes")
            self._store(x, [None] * x.dim())

    def _reshape(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
            return
        lab = self.get(x)
        if out.shape == x.shape:
            self._store(out, list(lab))
            return
        if out.numel() != x.numel():  # view(dtype) and the like
            self._unknown(self._op, [x], out)
            return
        requested = _requested_shape(args[1:]) if self._op in ("view", "reshape") else None
        self._store(out, self._reshape_labels(list(x.shape), lab, list(out.shape), requested))

    def _reshape_labels(self, in_shape, lab, out_shape, requested) -> Labels:
        result: Labels = [None] * len(out_shape)
        for ins, outs in factorize(in_shape, out_shape):
            labelled = [a for a in ins if lab[a] is not None]
            if not labelled:
                continue
            big_in = [a for a in ins if in_shape[a] > 1]
            big_out = [o for o in outs if out_shape[o] > 1]
            if not big_out:
                for a in labelled:
                    self.freeze(lab[a], "reshape drops a channel axis")
            elif len(big_in) == 1 and len(big_out) == 1:
                result[big_out[0]] = lab[big_in[0]]
            elif len(big_out) == 1:  # merge: flatten (C, H, W) -> C*H*W, heads (h, d) -> h*d
                if len(labelled) > 1:
                    for a in labelled:
                        self.freeze(lab[a], "reshape merges two channel axes")
                    continue
                a = labelled[0]
                inner = int(np.prod([in_shape[i] for i in ins if i > a], dtype=np.int64))
                index = (np.arange(out_shape[big_out[0]]) // inner) % in_shape[a]
                result[big_out[0]] = lab[a][index]
                if int(lab[a][0]) in self.sets.head:  # heads merged back: (h, d) -> h*d
                    self._fix_literal_size(requested, big_out[0], result[big_out[0]])
            elif len(big_in) == 1:  # split: channels -> (heads, head_dim)
                result[big_out[0]] = self._split_heads(lab[big_in[0]], [out_shape[o] for o in big_out],
                                                       requested, big_out)
            else:
                for a in labelled:
                    self.freeze(lab[a], "reshape regroups channel axes")
        return result

    def _fix_literal_size(self, requested, axis: int, nodes: np.ndarray) -> None:
        """Heads merged back by a literal size: update the attribute it came from.

        ``x.reshape(b, -1, self.out_dim)`` (LeViT) must see the new ``out_dim``. Only head merges are
        handled: there the literal is nearly always an attribute, while plain channel axes are
        mostly sized from the tensor itself (``x.size(-1)``) and an attribute of equal value would
        be a coincidence. Verification after surgery catches a wrong guess.
        """
        if requested is None or len(requested) <= axis or requested[axis] == -1:
            return
        module = self.modules.get(self._module)
        if module is None:
            return
        for attr, value in vars(module).items():
            if isinstance(value, int) and not isinstance(value, bool) and value == requested[axis] and value == len(nodes):
                if not any(f.module == self._module and f.attr == attr for f in self.fixes):
                    self.fixes.append(AttrFix(self._module, attr, value, nodes))

    def _split_heads(self, nodes: np.ndarray, sizes: list[int], requested, out_axes: list[int]) -> np.ndarray:
        """Split a channel axis into (outer, inner...): the outer index becomes the unit (a head)."""
        outer = sizes[0]
        inner = len(nodes) // outer
        grid = nodes.reshape(outer, inner)
        for h in range(outer):
            self.sets.union_all(grid[h])
        self.sets.head.update(nodes.tolist())
        inferred = requested is not None and len(requested) > out_axes[0] and requested[out_axes[0]] == -1
        fixed = self._fix_head_attributes(outer, len(nodes), grid[:, 0], nodes)
        if not inferred and not fixed:
            self.freeze(nodes, f"reshape into {outer} x {inner} with a count the engine cannot update")
        return grid[:, 0]

    def _fix_head_attributes(self, outer: int, total: int, head_nodes: np.ndarray, all_nodes: np.ndarray) -> bool:
        found = False
        path = self._module
        for candidate in (path, path.rsplit(".", 1)[0] if "." in path else ""):
            module = self.modules.get(candidate)
            if module is None:
                continue
            for attr, value in vars(module).items():
                if not isinstance(value, int) or isinstance(value, bool) or "head" not in attr.lower():
                    continue
                per_head = any(word in attr.lower() for word in _PER_HEAD_WORDS)
                if value == outer and not per_head:  # head_dim may equal num_heads by chance
                    self.fixes.append(AttrFix(candidate, attr, outer, head_nodes))
                    found = True
                elif value == total and outer > 1:
                    self.fixes.append(AttrFix(candidate, attr, total, all_nodes))
            if found:
                return True
        return found

    def _permute(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0]
        lab = self.get(x)
        n = len(lab)
        if self._op == "permute":
            dims = _requested_shape(args[1:]) if len(args) > 1 else kwargs["dims"]
            order = [_norm_axis(d, n) for d in dims]
        elif self._op in ("transpose", "swapaxes", "swapdims", "transpose_"):
            d0, d1 = (_norm_axis(d, n) for d in (_arg(args, kwargs, 1, "dim0"), _arg(args, kwargs, 2, "dim1")))
            order = list(range(n))
            order[d0], order[d1] = order[d1], order[d0]
        elif self._op == "t":
            order = list(reversed(range(n)))
        else:  # movedim / moveaxis
            src, dst = _arg(args, kwargs, 1, "source"), _arg(args, kwargs, 2, "destination")
            src = [src] if isinstance(src, int) else list(src)
            dst = [dst] if isinstance(dst, int) else list(dst)
            src, dst = [_norm_axis(s, n) for s in src], [_norm_axis(d, n) for d in dst]
            rest = [i for i in range(n) if i not in src]
            order = [None] * n
            for s, d in zip(src, dst):
                order[d] = s
            it = iter(rest)
            order = [o if o is not None else next(it) for o in order]
        self._store(out, [lab[i] for i in order])
        self._note_view(x, out, order)

    def _expand(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0]
        lab = self.get(x)
        new = out.dim() - x.dim()
        result: Labels = [None] * new
        for ax, nodes in enumerate(lab):
            if x.shape[ax] == out.shape[new + ax]:
                result.append(nodes)
            else:
                self.freeze(nodes, "expanded along a channel axis")
                result.append(None)
        self._store(out, result)

    def _repeat(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0]
        lab = self.get(x)
        reps = _requested_shape(args[1:])
        new = len(reps) - x.dim()
        result: Labels = [None] * new
        for ax, nodes in enumerate(lab):
            if reps[new + ax] != 1:
                self.freeze(nodes, "tiled along a channel axis")
                result.append(None)
            else:
                result.append(nodes)
        self._store(out, result)

    def _repeat_interleave(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        repeats, dim = _arg(args, kwargs, 1, "repeats"), _arg(args, kwargs, 2, "dim")
        lab = list(self.get(x))
        if not isinstance(repeats, int) or dim is None:
            self._unknown("repeat_interleave (tensor repeats or flattened)", [x], out)
            return
        d = _norm_axis(dim, len(lab))
        if lab[d] is not None:
            lab[d] = np.repeat(lab[d], repeats)
        self._store(out, lab)

    def _cat(self, args: tuple, kwargs: dict, out: Any) -> None:
        tensors = [t for t in (_arg(args, kwargs, 0, "tensors") or []) if isinstance(t, torch.Tensor)]
        tensors = [t for t in tensors if t.dim() == out.dim()]  # legacy empty tensors are skipped
        dim = _norm_axis(_arg(args, kwargs, 1, "dim", 0), out.dim())
        labs = [self.get(t) for t in tensors]
        result: Labels = [None] * out.dim()
        for ax in range(out.dim()):
            if ax == dim:
                parts = [lab[ax] for lab in labs]
                if all(p is None for p in parts):
                    continue
                filled = []
                for t, p in zip(tensors, parts):
                    if p is None:
                        p = self.sets.new(t.shape[ax])
                        self.freeze(p, "concatenated with an untracked tensor")
                    filled.append(p)
                result[ax] = np.concatenate(filled)
            else:
                acc = labs[0][ax] if labs else None
                for lab in labs[1:]:
                    acc = self.couple(acc, lab[ax])
                result[ax] = acc
        self._store(out, result)

    def _stack(self, args: tuple, kwargs: dict, out: Any) -> None:
        tensors = [t for t in _arg(args, kwargs, 0, "tensors") if isinstance(t, torch.Tensor)]
        dim = _norm_axis(_arg(args, kwargs, 1, "dim", 0), out.dim())
        labs = [self.get(t) for t in tensors]
        merged: Labels = []
        for ax in range(tensors[0].dim()):
            acc = labs[0][ax]
            for lab in labs[1:]:
                acc = self.couple(acc, lab[ax])
            merged.append(acc)
        self._store(out, merged[:dim] + [None] + merged[dim:])

    def _split(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        lab = self.get(x)
        if self._op == "unbind":
            d = _norm_axis(_arg(args, kwargs, 1, "dim", 0), len(lab))
            self.freeze(lab[d], "unbind along a channel axis")
            for o in out:
                self._store(o, lab[:d] + lab[d + 1:])
            return
        if self._op == "chunk":
            d = _norm_axis(_arg(args, kwargs, 2, "dim", 0), len(lab))
            size_arg = None
        else:  # split / tensor_split
            d = _norm_axis(_arg(args, kwargs, 2, "dim", 0), len(lab))
            size_arg = _arg(args, kwargs, 1, "split_size_or_sections")
            if size_arg is None:
                size_arg = _arg(args, kwargs, 1, "split_size")
        nodes = lab[d]
        pieces = [o.shape[d] for o in out]
        if nodes is not None:
            equal = len(set(pieces)) == 1 and self._op != "tensor_split"
            if equal and len(pieces) > 1:
                base = nodes[: pieces[0]]
                for i in range(1, len(pieces)):
                    self.couple(base, nodes[i * pieces[0] : (i + 1) * pieces[0]])
                # chunk(n) keeps n pieces as widths shrink; split(size) must have its size updated
                if self._op == "split" and not (isinstance(size_arg, int) and self._fix_split_size(size_arg, base)):
                    self.freeze(nodes, "split by a size the engine cannot update (a literal or another tensor's width)")
            elif len(pieces) > 1:
                self.freeze(nodes, "split into unequal pieces along a channel axis")
        start = 0
        for o, size in zip(out, pieces):
            piece = list(lab)
            piece[d] = nodes[start : start + size] if nodes is not None else None
            self._store(o, piece)
            start += size

    def _fix_split_size(self, size: int, nodes: np.ndarray) -> bool:
        """A split size read from a module attribute (GPT-2's ``split_size``): it follows the cut."""
        module = self.modules.get(self._module)
        found = False
        for attr, value in (vars(module).items() if module is not None else ()):
            if isinstance(value, int) and not isinstance(value, bool) and value == size and "split" in attr.lower():
                self.fixes.append(AttrFix(self._module, attr, size, nodes))
                found = True
        return found

    def _getitem(self, args: tuple, kwargs: dict, out: Any) -> None:
        x, index = args[0], args[1]
        if not isinstance(out, torch.Tensor):
            return
        lab = self.get(x)
        index = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index) or any(
            isinstance(i, list) for i in index):
            self.freeze_all([x], "boolean or list indexing")
            return
        n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for i in index:
            if i is Ellipsis:
                expanded.extend([slice(None)] * (x.dim() - n_real))
            else:
                expanded.append(i)
        expanded.extend([slice(None)] * (x.dim() - sum(1 for i in expanded if i is not None)))
        result: Labels = []
        advanced_at: int | None = None
        ax = 0
        for i in expanded:
            if i is None:
                result.append(None)
                continue
            nodes = lab[ax]
            size = x.shape[ax]
            if isinstance(i, slice):
                if i == slice(None) or (i.start in (None, 0) and i.stop in (None,) and i.step in (None, 1)) or range(size)[i] == range(size):
                    result.append(nodes)
                else:
                    self.freeze(nodes, "partial slice of a channel axis")
                    result.append(None)
            elif isinstance(i, (int, torch.SymInt)) or (isinstance(i, torch.Tensor) and i.dim() == 0 and not i.is_floating_point()):
                self.freeze(nodes, "single position taken from a channel axis")
            elif isinstance(i, torch.Tensor):
                self.freeze(nodes, "gather along a channel axis")
                if advanced_at is None:
                    advanced_at = len(result)
                    result.extend([None] * i.dim())
            else:
                self.freeze(nodes, f"index {type(i).__name__} on a channel axis")
                result.append(None)
            ax += 1
        if len(result) != out.dim():
            self.freeze_all([x], "indexing the engine could not follow")
            return
        self._store(out, result)

    def _setitem(self, args: tuple, kwargs: dict, out: Any) -> None:
        self.freeze_all(_tensors_in(args, kwargs), "in-place assignment into a slice")
