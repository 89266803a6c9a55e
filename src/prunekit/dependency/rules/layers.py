"""Layers with weights: linear, convolutions (dense, grouped, depthwise, transposed), embeddings,
norms, PReLU and GLU."""

from __future__ import annotations

from typing import Any

import torch

from prunekit.dependency.rules.common import AttrFix, ConvMode, _arg, _norm_axis, _tensors_in


class LayerRules:
    """Rules mixed into :class:`~prunekit.dependency.coupling.CouplingTracer` (they use its labels and
    coupling primitives through ``self``)."""

    def _linear(self, args: tuple, kwargs: dict, out: Any) -> None:
        x, w, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        lab = self.get(x)
        w_out = self.param_axis(w, 0, "out")
        w_in = self.param_axis(w, 1, "in") if w.dim() > 1 else None
        self.couple(lab[-1] if lab else None, w_in)
        if b is not None:
            w_out = self.couple(w_out, self.param_axis(b, 0, "out"))
        self._store(out, lab[:-1] + [w_out])

    def _conv(self, args: tuple, kwargs: dict, out: Any) -> None:
        transposed = "transpose" in self._op
        x, w, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        groups = int(_arg(args, kwargs, 6, "groups", 1) or 1)
        lab = self.get(x)
        x_ch = lab[1] if len(lab) > 1 else None
        wname = self._name(w) or ""
        if transposed:
            if groups != 1:
                self.freeze(x_ch, "grouped transposed convolution")
                self._store(out, [lab[0], None] + [None] * (out.dim() - 2))
                return
            self.couple(x_ch, self.param_axis(w, 0, "in"))
            w_out = self.param_axis(w, 1, "out")
            self.conv_modes[wname] = ConvMode("transposed", 1)
        else:
            w_out = self.param_axis(w, 0, "out")
            n_out, per_group_in = w.shape[0], w.shape[1]
            if groups == 1:
                self.couple(x_ch, self.param_axis(w, 1, "in"))
                self.conv_modes[wname] = ConvMode("dense", 1)
            elif per_group_in == 1:  # depthwise: input channel j feeds outputs j*m .. j*m+m-1
                mult = n_out // groups
                if x_ch is None:
                    self.freeze(w_out, "depthwise convolution over an untracked input")
                else:
                    for j in range(groups):
                        for t in range(mult):
                            self.sets.union(int(x_ch[j]), int(w_out[j * mult + t]))
                self.conv_modes[wname] = ConvMode("depthwise", groups, mult)
            else:  # grouped: remove the same index inside every group, so groups stay equal
                w_in = self.param_axis(w, 1, "in")
                if x_ch is None:
                    self.freeze(w_in, "grouped convolution over an untracked input")
                else:
                    for j in range(groups):
                        self.couple(x_ch[j * per_group_in : (j + 1) * per_group_in], w_in)
                per_group_out = n_out // groups
                for j in range(1, groups):
                    self.couple(w_out[:per_group_out], w_out[j * per_group_out : (j + 1) * per_group_out])
                self.conv_modes[wname] = ConvMode("grouped", groups)
        if b is not None:
            w_out = self.couple(w_out, self.param_axis(b, 0, "out"))
        self._store(out, [lab[0] if lab else None, w_out] + [None] * (out.dim() - 2))

    def _embedding(self, args: tuple, kwargs: dict, out: Any) -> None:
        ids, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
        self._store(out, list(self.get(ids)) + [self.param_axis(w, 1, "out")])

    def _batch_norm(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        lab = list(self.get(x))
        ch = lab[1] if len(lab) > 1 else None
        for i, key in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
            t = _arg(args, kwargs, i, key)
            if isinstance(t, torch.Tensor):
                ch = self.couple(ch, self.param_axis(t, 0, "norm"))
        if len(lab) > 1:
            lab[1] = ch
        self._store(out, lab)

    def _instance_norm(self, args: tuple, kwargs: dict, out: Any) -> None:
        self._batch_norm(args, kwargs, out)

    def _layer_norm(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        shape = _arg(args, kwargs, 1, "normalized_shape")
        w_index, b_index = (2, 3)
        if self._op == "rms_norm":
            w_index, b_index = 2, None
        w = _arg(args, kwargs, w_index, "weight")
        b = _arg(args, kwargs, b_index, "bias") if b_index is not None else None
        lab = list(self.get(x))
        k = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
        for i in range(k):
            ax = len(lab) - k + i
            ch = lab[ax]
            for t in (w, b):
                if isinstance(t, torch.Tensor):
                    ch = self.couple(ch, self.param_axis(t, i, "norm"))
            if ch is not None:
                self.sets.mark_inexact(ch, f"{self._op} statistics over the axis ({self.where()})")
                module = self.modules.get(self._module)
                if k == 1 and module is not None and isinstance(getattr(module, "normalized_shape", None), tuple):
                    self.fixes.append(AttrFix(self._module, "normalized_shape", len(ch), ch))
            lab[ax] = ch
        self._store(out, lab)

    def _group_norm(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        n_groups = int(_arg(args, kwargs, 1, "num_groups"))
        w, b = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
        lab = list(self.get(x))
        ch = lab[1]
        for t in (w, b):
            if isinstance(t, torch.Tensor):
                ch = self.couple(ch, self.param_axis(t, 0, "norm"))
        if ch is not None:
            per = len(ch) // n_groups
            for g in range(n_groups):
                self.sets.union_all(ch[g * per : (g + 1) * per])
            self.group_kind.update(ch.tolist())
            module = self.modules.get(self._module)
            if getattr(module, "num_groups", None) == n_groups:
                self.fixes.append(AttrFix(self._module, "num_groups", n_groups, ch[::per]))
            elif n_groups > 1:
                self.freeze(ch, "group_norm whose group count is not a module attribute")
        lab[1] = ch
        self._store(out, lab)

    def _prelu(self, args: tuple, kwargs: dict, out: Any) -> None:
        x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
        lab = list(self.get(x))
        if w.numel() > 1:
            lab[1] = self.couple(lab[1], self.param_axis(w, 0, "norm"))
        self._store(out, lab)

    def _glu(self, args: tuple, kwargs: dict, out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        lab = list(self.get(x))
        d = _norm_axis(_arg(args, kwargs, 1, "dim", -1), len(lab))
        if lab[d] is not None:
            half = len(lab[d]) // 2
            lab[d] = self.couple(lab[d][:half], lab[d][half:])
        self._store(out, lab)

    def _mha(self, args: tuple, kwargs: dict, out: Any) -> None:
        self.freeze_all(_tensors_in(args, kwargs), "nn.MultiheadAttention packs q/k/v (not pruned yet)")
