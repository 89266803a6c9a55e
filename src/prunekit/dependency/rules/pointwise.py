"""Ops that keep each channel where it is: elementwise maths, pooling, resampling, padding,
reductions, softmax and sorting along an axis."""

from __future__ import annotations

from typing import Any

import torch

from prunekit.dependency.rules.common import _ORD_FIRST, Labels, _arg, _norm_axis, _tensors_in


class PointwiseRules:
    """Rules mixed into :class:`~prunekit.dependency.coupling.CouplingTracer` (they use its labels and
    coupling primitives through ``self``)."""

    def _elementwise(self, args: tuple, kwargs: dict, out: Any) -> None:
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor)]
        if not outs:
            return
        shape = outs[0].shape
        ins = _tensors_in(args, kwargs)
        result: Labels = [None] * len(shape)
        for k in range(1, len(shape) + 1):  # align from the right, as broadcasting does
            size = shape[-k]
            acc, untracked = None, False
            for t in ins:
                if t.dim() < k:
                    continue
                nodes = self.get(t)[-k]
                if t.shape[-k] != size:  # broadcast from 1: a labelled size-1 axis is lost
                    self.freeze(nodes, "broadcast along a channel axis")
                elif nodes is None:
                    untracked = untracked or size > 1
                else:
                    acc = nodes if acc is None else self.couple(acc, nodes)
            if acc is not None and untracked:
                self.freeze(acc, "combined with an untracked tensor")
            result[-k] = acc
        for o in outs:
            if o.shape == shape:
                self._store(o, list(result))

    def _pool(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        lab = self.get(x)
        spatial = 3 if "3d" in self._op else 1 if "1d" in self._op else 2
        keep = lab[: max(len(lab) - spatial, 0)]
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.dim() == len(lab):
                self._store(o, keep + [None] * spatial)
        for nodes in lab[len(keep):]:
            self.freeze(nodes, "pooled over a channel axis")

    def _resample(self, args: tuple, kwargs: dict, out: Any) -> None:  # interpolate / upsample
        lab = self.get(args[0] if args else kwargs.get("input"))
        for nodes in lab[2:]:
            self.freeze(nodes, "resampled along a channel axis")
        if isinstance(out, torch.Tensor):
            self._store(out, lab[:2] + [None] * (out.dim() - 2))

    def _pad(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        pad = _arg(args, kwargs, 1, "pad")
        lab = list(self.get(x))
        n_axes = len(pad) // 2
        for i in range(n_axes):
            ax = len(lab) - 1 - i
            if pad[2 * i] or pad[2 * i + 1]:
                self.freeze(lab[ax], "padded along a channel axis")
                lab[ax] = None
        if isinstance(out, torch.Tensor):
            self._store(out, lab)

    def _reduce(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        second = _arg(args, kwargs, 1, "other")
        if isinstance(second, torch.Tensor):  # torch.max(a, b) is elementwise
            self._elementwise(args, kwargs, out)
            return
        lab = self.get(x)
        dim = _arg(args, kwargs, 1, "dim")
        ord_first = self._op in _ORD_FIRST  # norm(x, p, dim, keepdim)
        if ord_first:
            dim = _arg(args, kwargs, 2, "dim")
        keepdim = bool(_arg(args, kwargs, 3 if ord_first else 2, "keepdim", False))
        if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
            dims = list(range(len(lab)))
        else:
            dims = [_norm_axis(d, len(lab)) for d in (dim if isinstance(dim, (tuple, list)) else [dim])]
        for d in dims:
            if lab[d] is not None:
                self.sets.mark_inexact(lab[d], f"'{self._op}' over the axis ({self.where()})")
        new = [None if i in dims else n for i, n in enumerate(lab)] if keepdim else [
            n for i, n in enumerate(lab) if i not in dims]
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.dim() == len(new):
                self._store(o, new)

    def _softmax(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        lab = self.get(x)
        dim = _arg(args, kwargs, 1, "dim")
        # softmax, log_softmax and softmin normalise over ``dim``: a removed unit leaves the sum.
        # Without a dim, torch picks one from the rank; every labelled axis is then suspect.
        axes = range(len(lab)) if dim is None else [_norm_axis(dim, len(lab))]
        for ax in axes:
            if lab[ax] is not None:
                self.sets.mark_inexact(lab[ax], f"{self._op} over the axis ({self.where()})")
        if isinstance(out, torch.Tensor):
            self._store(out, list(lab))

    def _normalize(self, args: tuple, kwargs: dict, out: Any) -> None:  # F.normalize(x, p, dim)
        lab = self.get(_arg(args, kwargs, 0, "input"))
        dim = _norm_axis(_arg(args, kwargs, 2, "dim", 1), len(lab))
        if lab[dim] is not None:
            self.sets.mark_inexact(lab[dim], f"normalize over the axis ({self.where()})")
        self._store(out, list(lab))

    def _ordering(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        lab = self.get(x)
        k_first = self._op in ("topk", "kthvalue")  # topk(x, k, dim), kthvalue(x, k, dim)
        dim = _arg(args, kwargs, 2 if k_first else 1, "dim", -1)
        if dim is None:
            self.freeze_all([x], f"'{self._op}' over flattened channels")
            return
        d = _norm_axis(dim, len(lab))
        self.freeze(lab[d], f"'{self._op}' orders positions along a channel axis")
        new = list(lab)
        new[d] = None
        reduced = new[:d] + new[d + 1:]  # argmax / argmin / kthvalue without keepdim
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.dim() == len(lab):
                self._store(o, new)
            elif isinstance(o, torch.Tensor) and o.dim() == len(lab) - 1:
                self._store(o, reduced)
