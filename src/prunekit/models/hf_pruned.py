"""Save a pruned Hugging Face model so it can be loaded back exactly, in one call.

A head- or FFN-pruned BERT has per-layer head counts and FFN widths; ``BertConfig`` holds one
``num_attention_heads`` and one ``intermediate_size``, and transformers 5 dropped ``pruned_heads``.
So no config transformers understands can describe the model, and ``from_pretrained`` with
``ignore_mismatched_sizes=True`` "loads" it by re-initialising every pruned matrix.

prunekit's format is a normal-looking HF directory plus the pruning record:

* ``config.json``: the DENSE config (it describes the architecture before pruning) with a
  ``prunekit_pruned`` note saying how to load;
* ``model.safetensors``: the pruned weights, named as in ``model.state_dict()``;
* ``pruning_record.json``: prunekit's :class:`SurgeryRecord` (kept indices, new attributes);
* ``prunekit_model.json``: the model class, attention implementation and per-layer shapes;
* the tokenizer files, when a tokenizer or source directory is given.

:func:`load_pruned_pretrained` builds the dense model from the config, replays the record (so
every module gets its own shapes and head counts), then loads the weights strictly: a missing,
unexpected or differently shaped tensor is an error, never a silent re-initialisation. Plain
``from_pretrained`` on the directory fails loudly on the first size mismatch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import SourceError
from prunekit.pruning.surgery import SurgeryRecord, apply_record

RECORD_FILE = "pruning_record.json"
META_FILE = "prunekit_model.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model")


def pruned_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per attention / FFN module, the shapes pruning changed: heads and widths (for people to read).

    Keys are module names; values hold ``num_attention_heads``/``num_heads`` where a module has
    them and ``out_features`` of Linear layers.
    """
    shapes: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        found = {attr: int(getattr(module, attr)) for attr in ("num_attention_heads", "num_heads", "num_key_value_heads")
                 if isinstance(getattr(module, attr, None), int)}
        if isinstance(module, nn.Linear):
            found["out_features"] = module.out_features
        if found:
            shapes[name] = found
    return shapes


def save_pruned_pretrained(model: nn.Module, record: SurgeryRecord, directory: str | Path, *,
                           tokenizer: Any = None) -> Path:
    """Write a pruned HF model as a directory :func:`load_pruned_pretrained` rebuilds exactly.

    Parameters
    ----------
    model
        The pruned ``transformers`` model (``PreTrainedModel``), possibly fine-tuned after pruning.
    record
        The surgery record that produced its shapes (``StructuredPruner.record_``, or the second
        value of ``apply_plan``); records of successive cuts are combined with ``record.merged``.
    tokenizer
        A tokenizer (saved with its ``save_pretrained``) or a directory whose tokenizer files
        are copied (e.g. the original checkpoint); ``None`` writes none.
    """
    from safetensors.torch import save_file

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise SourceError(f"{type(model).__name__} has no Hugging Face config: save it with "
                          "prunekit.pruning.surgery.save_pruned and rebuild it from its factory")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dense = config.to_dict()
    dense["architectures"] = [type(model).__name__]
    dense["prunekit_pruned"] = ("per-layer head counts and widths differ from this config: load with "
                                "prunekit.models.hf_pruned.load_pruned_pretrained(<this directory>)")
    meta = {"format_version": FORMAT_VERSION, "model_class": type(model).__name__,
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "shapes": pruned_shapes(model)}
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    _write_atomic(directory / "config.json", json.dumps(dense, indent=2, sort_keys=True, default=str))
    _write_atomic(directory / RECORD_FILE, record.to_json())
    _write_atomic(directory / META_FILE, json.dumps(meta, indent=2))
    tmp = directory / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / WEIGHTS_FILE)
    if tokenizer is not None:
        _save_tokenizer(tokenizer, directory)
    return directory


def load_pruned_pretrained(directory: str | Path, *, attn_implementation: str | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned_pretrained`, in eval mode, weights loaded strictly.

    ``attn_implementation`` overrides the saved one (``"eager"``, ``"sdpa"``).

    Raises
    ------
    SourceError
        A file is missing or corrupt, the class is not a ``transformers`` class, or the weights do
        not fit the rebuilt shapes exactly.
    """
    import transformers
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in ("config.json", RECORD_FILE, META_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise SourceError(f"missing {directory / name}; save the model with "
                              "prunekit.models.hf_pruned.save_pruned_pretrained first")
    try:
        meta = json.loads((directory / META_FILE).read_text())
        record = SurgeryRecord.from_json((directory / RECORD_FILE).read_text())
        weights = load_file(str(directory / WEIGHTS_FILE))
    except (ValueError, KeyError, OSError) as exc:
        raise SourceError(f"corrupt pruned-model files in {directory}: {exc}") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise SourceError(f"{directory / META_FILE} has format_version {meta.get('format_version')!r}; this prunekit "
                          f"reads version {FORMAT_VERSION}: save it again with this version")
    cls = getattr(transformers, str(meta.get("model_class")), None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise SourceError(f"{directory / META_FILE} names model class {meta.get('model_class')!r}, which is not a "
                          "transformers model class")
    config = transformers.AutoConfig.from_pretrained(str(directory))
    attn = attn_implementation or meta.get("attn_implementation")
    model = cls._from_config(config, attn_implementation=attn) if attn else cls._from_config(config)
    dtype = getattr(torch, str(meta.get("dtype", "float32")), torch.float32)
    model = apply_record(model.to(dtype), record)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [f"{k}: file {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise SourceError(f"weights in {directory / WEIGHTS_FILE} do not fit the pruned {cls.__name__} exactly "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]}, shape {wrong[:3]}); "
                          "the record and weights must come from the same save")
    model.load_state_dict(weights, strict=True)
    return model.eval()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _save_tokenizer(tokenizer: Any, directory: Path) -> None:
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(directory))
        return
    source = Path(tokenizer)
    found = [source / f for f in TOKENIZER_FILES if (source / f).is_file()]
    if not found:
        raise SourceError(f"no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}...) in {source}: pass the tokenizer "
                          "object or the original checkpoint directory")
    for f in found:
        shutil.copyfile(f, directory / f.name)
