"""ONNX export of (pruned) Hugging Face token models, with dynamic batch AND sequence axes, verified.

A text model is served at whatever batch and sentence length the traffic brings, so one file must
run at any ``(batch, sequence)``. The graph is traced once on a padded example (attention code
may take a mask-free shortcut when every token is real, and a trace keeps only the branch it saw)
and then checked against PyTorch at several other shapes, each with padding, because a trace can
silently bake a shape or a branch into constants.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from prunekit.errors import ExportError, InvalidParameterError
from prunekit.models.hf import mean_pool  # noqa: F401 - re-exported: sentence-transformers' embedding

Output = Literal["auto", "last_hidden_state", "logits", "sentence_embedding"]
OUTPUTS: tuple[str, ...] = ("auto", "last_hidden_state", "logits", "sentence_embedding")
TOKEN_INPUTS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_CHECK_SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (1, 7), (3, 33), (8, 128))


def token_input_names(model: nn.Module) -> tuple[str, ...]:
    """The token inputs ``model.forward`` accepts, in ONNX input order.

    ``token_type_ids`` is included only when the forward takes it and the model has segment
    embeddings (BERT); RoBERTa-like configs with one type and DistilBERT go without.
    """
    target = model.model if isinstance(model, TokenModel) else model
    params = inspect.signature(target.forward).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = [n for n in TOKEN_INPUTS if n in params or (takes_kwargs and n != "token_type_ids")]
    if "input_ids" not in names:
        raise InvalidParameterError(
            f"{type(target).__name__}.forward takes no 'input_ids': export it with prunekit.export.export_onnx "
            "and explicit inputs instead")
    if "token_type_ids" in names and getattr(getattr(target, "config", None), "type_vocab_size", 2) < 2:
        names.remove("token_type_ids")
    return tuple(names)


class TokenModel(nn.Module):
    """``model(input_ids, attention_mask[, token_type_ids]) -> one tensor``, the form ONNX serves.

    ``output``: ``last_hidden_state`` (B, T, H), ``logits``, ``sentence_embedding`` (mean
    pooling over the mask + L2 normalisation, (B, H)), or ``auto`` (logits when the model returns
    them, else the last hidden state). A model that already returns a tensor is passed through.
    """

    def __init__(self, model: nn.Module, output: Output = "auto") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise InvalidParameterError(f"The 'output' parameter of TokenModel must be one of {OUTPUTS}. "
                                        f"Got {output!r} instead.")
        self.model = model
        self.output = output
        self.train(model.training)  # a fresh Module is in training mode; follow the wrapped model instead

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs)
        if isinstance(out, torch.Tensor):
            return mean_pool(out, attention_mask) if self.output == "sentence_embedding" and out.dim() == 3 else out
        if self.output == "sentence_embedding":
            return mean_pool(_field(out, "last_hidden_state"), attention_mask)
        if self.output == "auto":
            return _field(out, "logits") if _has(out, "logits") else _field(out, "last_hidden_state")
        return _field(out, self.output)


def _has(out: Any, name: str) -> bool:
    return (isinstance(out, Mapping) and name in out) or getattr(out, name, None) is not None


def _field(out: Any, name: str) -> torch.Tensor:
    value = out[name] if isinstance(out, Mapping) and name in out else getattr(out, name, None)
    if value is None and isinstance(out, (tuple, list)) and out and name == "last_hidden_state":
        value = out[0]
    if not isinstance(value, torch.Tensor):
        raise ExportError(f"the model's output has no tensor '{name}': choose output= 'last_hidden_state', "
                          "'logits' or 'sentence_embedding' to match what the model returns")
    return value


def random_token_inputs(names: Sequence[str], batch: int, seq: int, *, vocab_size: int, seed: int = 0,
                        pad: bool = False, low: int = 1000) -> dict[str, torch.Tensor]:
    """Random int64 token inputs for ``names`` of shape (batch, seq).

    Ids are drawn from ``[min(low, vocab_size // 2), vocab_size)`` (above BERT's special tokens);
    ``token_type_ids`` are 0. With ``pad``, row 0 keeps only its first ``ceil(seq / 2)`` tokens
    (the rest masked out), so a check also covers padding.
    """
    if batch < 1 or seq < 1:
        raise InvalidParameterError(f"token inputs need batch >= 1 and seq >= 1. Got ({batch}, {seq}) instead.")
    g = torch.Generator().manual_seed(seed)
    start = min(low, vocab_size // 2)
    feed: dict[str, torch.Tensor] = {}
    for name in names:
        if name == "input_ids":
            feed[name] = torch.randint(start, vocab_size, (batch, seq), generator=g, dtype=torch.long)
        elif name == "attention_mask":
            mask = torch.ones(batch, seq, dtype=torch.long)
            if pad and seq > 1:
                mask[0, (seq + 1) // 2:] = 0
            feed[name] = mask
        else:
            feed[name] = torch.zeros(batch, seq, dtype=torch.long)
    return feed


def vocab_size_of(model: nn.Module) -> int:
    """The input embedding's row count (what token ids must stay below)."""
    target = model.model if isinstance(model, TokenModel) else model
    if hasattr(target, "get_input_embeddings") and target.get_input_embeddings() is not None:
        return int(target.get_input_embeddings().weight.shape[0])
    vocab = getattr(getattr(target, "config", None), "vocab_size", None)
    if vocab is None:
        raise InvalidParameterError(f"cannot tell the vocabulary size of {type(target).__name__}: pass vocab_size")
    return int(vocab)


def token_dynamic_axes(model: nn.Module, example: Any, output_names: Sequence[str] = ("output",)
                       ) -> dict[str, dict[int, str]] | None:
    """Dynamic ``batch`` and ``sequence`` axes when ``example`` is token ids, else None.

    Token ids are a dict of 2-D integer tensors (``input_ids``, ``attention_mask``...). Every input
    gets ``{0: "batch", 1: "sequence"}``; each named output gets ``batch``, plus ``sequence`` on
    axis 1 when it has the example's length there (hidden states, not a pooled vector or logits).
    The model is run once on ``example`` (eval mode, no gradients) to see its outputs.
    """
    from prunekit.tracing import call_model, iter_tensors

    if not isinstance(example, Mapping) or not example:
        return None
    tensors = list(example.values())
    if not all(isinstance(t, torch.Tensor) and t.dim() == 2 and not t.is_floating_point() for t in tensors):
        return None
    seq = tensors[0].shape[1]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = list(iter_tensors(call_model(model, dict(example))))
    finally:
        model.train(was_training)
    axes = {name: {0: "batch", 1: "sequence"} for name in example}
    for name, out in zip(output_names, outputs):
        axes[name] = {0: "batch", 1: "sequence"} if out.dim() >= 2 and out.shape[1] == seq else {0: "batch"}
    return axes


@dataclass(frozen=True)
class TokenExport:
    """An exported token model and its proof: max |ONNX - PyTorch| at each checked (batch, seq)."""

    path: Path
    input_names: tuple[str, ...]
    output_name: str
    max_abs_diff: dict[tuple[int, int], float]


def export_token_model(model: nn.Module, path: str | os.PathLike[str], *, output: Output = "auto",
                       example_shape: tuple[int, int] = (2, 16),
                       check_shapes: Sequence[tuple[int, int]] = DEFAULT_CHECK_SHAPES,
                       atol: float = 1e-4, opset: int = 17) -> TokenExport:
    """Export a token model with dynamic ``batch`` and ``sequence`` axes and verify it.

    ``model`` is a Hugging Face model (pruned or not) or any module taking ``input_ids``,
    ``attention_mask`` (and ``token_type_ids``) keywords; it is wrapped in :class:`TokenModel`
    with ``output``. Every input and the output get ``{0: "batch", 1: "sequence"}`` (pooled and
    logits outputs only ``batch``). The file is then run by ONNX Runtime at every ``check_shapes``
    (batch, seq), with padding, and compared with PyTorch.

    Raises
    ------
    ExportError
        If export fails or any checked shape differs by more than ``atol``.
    """
    from prunekit.export.onnx import export_onnx

    wrapped = model if isinstance(model, TokenModel) else TokenModel(model, output)
    names = token_input_names(wrapped)
    vocab = vocab_size_of(wrapped)
    max_positions = getattr(getattr(wrapped.model, "config", None), "max_position_embeddings", None)
    too_long = [s for s in (example_shape, *check_shapes) if max_positions and s[1] > max_positions]
    if too_long:
        raise InvalidParameterError(f"shapes {too_long} are longer than the model's max_position_embeddings="
                                    f"{max_positions}: choose shorter sequences")
    example = random_token_inputs(names, *example_shape, vocab_size=vocab, pad=True)
    was_training = wrapped.training
    wrapped.eval()
    try:
        with torch.no_grad():
            sample = wrapped(**example)
        out_name = _output_name(wrapped)
        out_axes = {0: "batch", 1: "sequence"} if sample.dim() == 3 else {0: "batch"}
        axes = {n: {0: "batch", 1: "sequence"} for n in names} | {out_name: out_axes}
        written = export_onnx(wrapped, example, path, opset=opset, input_names=names, output_names=(out_name,),
                              dynamic_axes=axes)
        diffs = verify_token_model(wrapped, written, check_shapes=check_shapes, atol=atol)
    finally:
        wrapped.train(was_training)
    return TokenExport(Path(written), names, out_name, diffs)


def _output_name(wrapped: TokenModel) -> str:
    if wrapped.output != "auto":
        return wrapped.output
    with torch.no_grad():
        probe = wrapped.model(**random_token_inputs(token_input_names(wrapped), 1, 2, vocab_size=vocab_size_of(wrapped)))
    return "logits" if not isinstance(probe, torch.Tensor) and _has(probe, "logits") else "last_hidden_state"


def verify_token_model(model: nn.Module, path: str | os.PathLike[str], *,
                       check_shapes: Sequence[tuple[int, int]] = DEFAULT_CHECK_SHAPES, atol: float = 1e-4,
                       seed: int = 1) -> dict[tuple[int, int], float]:
    """Max |ONNX Runtime - PyTorch| at each (batch, seq) of ``check_shapes`` (padded inputs).

    Raises
    ------
    ExportError
        If a shape cannot run or differs by more than ``atol``.
    """
    import onnxruntime as ort

    wrapped = model if isinstance(model, TokenModel) else TokenModel(model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = tuple(i.name for i in session.get_inputs())
    vocab = vocab_size_of(wrapped)
    diffs: dict[tuple[int, int], float] = {}
    was_training = wrapped.training
    wrapped.eval()
    try:
        for i, (batch, seq) in enumerate(check_shapes):
            diffs[(batch, seq)] = _check_shape(wrapped, session, path, names, batch, seq,
                                               vocab=vocab, seed=seed + i, atol=atol)
    finally:
        wrapped.train(was_training)
    return diffs


def _check_shape(wrapped: TokenModel, session: Any, path: str | os.PathLike[str], names: tuple[str, ...],
                 batch: int, seq: int, *, vocab: int, seed: int, atol: float) -> float:
    feed = random_token_inputs(names, batch, seq, vocab_size=vocab, seed=seed, pad=True)
    with torch.no_grad():
        expected = wrapped(**feed).numpy()
    try:
        got = session.run(None, {k: v.numpy() for k, v in feed.items()})[0]
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types; one message names the shape
        raise ExportError(f"ONNX file {path} fails at (batch, seq)=({batch}, {seq}): "
                          f"{type(exc).__name__}: {str(exc)[:200]}; export it with dynamic axes") from exc
    if got.shape != expected.shape:
        raise ExportError(f"ONNX file {path} returns shape {got.shape} at (batch, seq)=({batch}, {seq}); "
                          f"PyTorch returns {expected.shape}: a shape was baked into the graph")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if diff > atol:
        raise ExportError(f"ONNX output of {path} differs from PyTorch by {diff:.3g} > atol={atol:g} at "
                          f"(batch, seq)=({batch}, {seq}): a branch or shape was baked into the trace")
    return diff
