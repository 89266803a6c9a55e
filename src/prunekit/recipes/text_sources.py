"""A recipe's ``model.hf`` and ``data.text`` sections: the checkpoint, its tokenizer and the text bundle."""

from __future__ import annotations

import inspect
from typing import Any

from prunekit.data import DataBundle
from prunekit.data.text import TextSamples, brown_samples, read_text_files, samples_from_items, text_bundle
from prunekit.errors import SourceError
from prunekit.models.hf import TextModel, load_hf
from prunekit.recipes.schema import DataSpec, ModelSpec


def load_text_samples(spec: DataSpec, *, seed: int) -> TextSamples:
    """The raw texts (and labels) a ``data.text`` section names."""
    text = spec.text
    if text is None:
        raise SourceError("data.text is missing: a model.hf recipe needs text (files, factory or builtin: brown)")
    if text.files is not None:
        return read_text_files(text.files)
    if text.builtin == "brown":
        accepted = inspect.signature(brown_samples).parameters
        unknown = sorted(set(text.kwargs) - set(accepted))
        if unknown:
            raise SourceError(f"data.text.kwargs {unknown} are not options of the Brown source; "
                              f"known: {', '.join(k for k in accepted if k != 'seed')}")
        return brown_samples(**({"seed": seed} | dict(text.kwargs)))
    from prunekit.recipes.sources import _call, import_object

    build = import_object(text.factory, what="data.text.factory")
    return samples_from_items(_call(build, dict(text.kwargs), label=text.factory, what="data.text"), name=text.factory)


def load_text_run(model_spec: ModelSpec, data_spec: DataSpec, *, seed: int) -> tuple[TextModel, Any, DataBundle]:
    """Tokenizer and texts first (the label count sizes a classification head), then the model."""
    task = data_spec.task
    samples = load_text_samples(data_spec, seed=seed)
    num_labels = (max(samples.labels) + 1) if samples.labels is not None else None
    model, tokenizer = load_hf(model_spec.hf, task, num_labels=num_labels)
    bundle = text_bundle(samples, tokenizer, task=task, max_length=data_spec.text.max_length,
                         batch_size=data_spec.batch_size, val_fraction=data_spec.val_fraction,
                         test_fraction=data_spec.test_fraction, calib_samples=data_spec.calib_samples, seed=seed)
    return model, tokenizer, bundle
