"""Attention and products: multi-head attention, scaled dot-product attention, matmul, addmm,
einsum, and the head structure they reveal."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from prunekit.dependency.rules.common import Labels, _arg, _norm_axis, _tensors_in


class AttentionRules:
    """Rules mixed into :class:`~prunekit.dependency.coupling.CouplingTracer` (they use its labels and
    coupling primitives through ``self``)."""

    def _sdpa(self, args: tuple, kwargs: dict, out: Any) -> None:
        q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
        lq, lk, lv = self.get(q), self.get(k), self.get(v)
        self.couple(lq[-1], lk[-1])
        for ax in range(len(lq) - 2):
            self._couple_batch_axis(lq[ax], lk[ax], q.shape[ax], k.shape[ax])
            self._couple_batch_axis(lk[ax], lv[ax], k.shape[ax], v.shape[ax])
        mask = _arg(args, kwargs, 3, "attn_mask")
        if isinstance(mask, torch.Tensor):
            self.freeze_all([mask], "attention mask with channel axes")
        self._store(out, lq[:-1] + [lv[-1]])

    def _couple_batch_axis(self, a, b, size_a: int, size_b: int) -> None:
        if size_a == size_b:
            self.couple(a, b)
        elif a is not None and b is not None and size_a % size_b == 0:  # grouped-query attention
            rep = size_a // size_b
            for h in range(size_a):
                self.sets.union(int(a[h]), int(b[h // rep]))
        else:
            self.freeze(a, "broadcast along a channel axis")
            self.freeze(b, "broadcast along a channel axis")

    def _matmul_labels(self, a: torch.Tensor, b: torch.Tensor) -> Labels:
        la, lb = self.get(a), self.get(b)
        if a.dim() == 1 and b.dim() == 1:
            self.couple(la[0], lb[0])
            return []
        if a.dim() == 1:
            self.couple(la[0], self._role(b, lb, -2, "in"))
            return lb[:-2] + [self._role(b, lb, -1, "out")]
        if b.dim() == 1:
            self.couple(self._role(a, la, -1, "in"), lb[0])
            return la[:-1]
        self.couple(self._role(a, la, -1, "in"), self._role(b, lb, -2, "in"))
        batch_a, batch_b = la[:-2], lb[:-2]
        sa, sb = a.shape[:-2], b.shape[:-2]
        n = max(len(batch_a), len(batch_b))
        batch: Labels = [None] * n
        for i in range(1, n + 1):
            na = batch_a[-i] if i <= len(batch_a) else None
            nb = batch_b[-i] if i <= len(batch_b) else None
            za = sa[-i] if i <= len(sa) else 1
            zb = sb[-i] if i <= len(sb) else 1
            if za == zb:
                batch[-i] = self.couple(na, nb) if (na is not None or nb is not None) and za > 1 else (na if na is not None else nb)
            else:
                if za == 1:
                    self.freeze(na, "broadcast along a channel axis")
                    batch[-i] = nb
                else:
                    self.freeze(nb, "broadcast along a channel axis")
                    batch[-i] = na
        return batch + [la[-2], self._role(b, lb, -1, "out")]

    def _role(self, t: torch.Tensor, lab: Labels, axis: int, role: str):
        """For a parameter used directly in a product, label its axis with a producer/consumer role."""
        name = self._name(t)
        if name is not None and t.shape[axis] > 1:
            return self.param_axis(t, _norm_axis(axis, t.dim()), role)
        if id(t) in self.views and t.shape[axis] > 1:  # weight.T and friends
            base, order = self.views[id(t)]
            return self.param_axis(base, order[_norm_axis(axis, t.dim())], role)
        return lab[axis]

    def _note_view(self, x: torch.Tensor, out: torch.Tensor, order: list[int]) -> None:
        """Remember that ``out`` is ``x`` (a parameter, or a view of one) with axes reordered."""
        if self._name(x) is not None:
            self.views[id(out)] = (x, order)
        elif id(x) in self.views:
            base, inner = self.views[id(x)]
            self.views[id(out)] = (base, [inner[o] for o in order])

    def _matmul(self, args: tuple, kwargs: dict, out: Any) -> None:
        a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other")
        if self._op == "__rmatmul__":
            a, b = b, a
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            self._unknown(self._op, _tensors_in(args, kwargs), out)
            return
        self._store(out, self._matmul_labels(a, b))

    def _addmm(self, args: tuple, kwargs: dict, out: Any) -> None:
        bias, a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "mat1"), _arg(args, kwargs, 2, "mat2")
        lab = self._matmul_labels(a, b)
        if isinstance(bias, torch.Tensor) and bias.dim() >= 1 and bias.shape[-1] > 1:
            lb = self._role(bias, self.get(bias), -1, "out")
            lab[-1] = self.couple(lab[-1], lb)
        self._store(out, lab)

    def _einsum(self, args: tuple, kwargs: dict, out: Any) -> None:
        equation = args[0]
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        eq = equation.replace(" ", "")
        if "..." in eq or "->" not in eq:
            self._unknown("einsum (implicit or with ellipsis)", operands, out)
            return
        lhs, rhs = eq.split("->")
        terms = lhs.split(",")
        seen: dict[str, np.ndarray | None] = {}
        for term, t in zip(terms, operands):
            lab = self.get(t)
            for ax, letter in enumerate(term):
                nodes = self._role(t, lab, ax, "out" if letter in rhs else "in") if t.shape[ax] > 1 else lab[ax]
                if letter in seen:
                    if t.shape[ax] > 1:
                        seen[letter] = self.couple(seen[letter], nodes)
                else:
                    seen[letter] = nodes
        self._store(out, [seen.get(letter) for letter in rhs])
