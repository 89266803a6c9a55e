"""One exception hierarchy, so the CLI can turn any of them into a one-line message.

Every message names the thing, the rule, the value and, where there is one, the fix:
``The 'ratio' parameter of StructuredPruner must be a float in [0, 1). Got 1.5 instead.``
"""

from __future__ import annotations


class PrunekitError(Exception):
    """Base of every error prunekit raises on purpose."""


class InvalidParameterError(PrunekitError, ValueError):
    """A public parameter or recipe value breaks its declared rule."""


class NotFittedError(PrunekitError, AttributeError):
    """A fitted attribute was read before ``fit`` ran."""


class TracingError(PrunekitError):
    """The model could not be run or traced with the example inputs."""


class UnsupportedLayerError(PrunekitError):
    """A layer or operation the engine cannot reason about was asked to be pruned."""


class RecipeError(PrunekitError):
    """A recipe file is missing, unreadable or invalid; carries the key path."""


class SourceError(PrunekitError):
    """A model, weights or data source cannot be loaded."""


class ExportError(PrunekitError):
    """ONNX export or its verification failed."""


class QuantizationError(PrunekitError):
    """Quantization cannot be done as asked (no calibration data, tolerance not met...)."""


class PrunekitWarning(UserWarning):
    """Base of prunekit's warnings."""


def check_ratio(value: float, name: str, owner: str, *, low_inclusive: bool = True) -> float:
    """Validate a ratio in [0, 1) (or (0, 1) when ``low_inclusive`` is False) and return it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (0.0 <= value < 1.0 if low_inclusive else 0.0 < value < 1.0)
    if not ok:
        interval = "[0, 1)" if low_inclusive else "(0, 1)"
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be a float in {interval}. Got {value!r} instead."
        )
    return float(value)
