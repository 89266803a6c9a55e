"""Every Python warning raised during a run lands in the report (JSON, HTML) and the CLI summary.

A warning printed on stderr between progress bars is easy to miss and absent from the report a
reader opens later; so a run records them (``warnings.catch_warnings(record=True)``) and turns
each distinct one into a line of ``Report.warnings``.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

from prunekit.errors import PrunekitWarning

# Library housekeeping about library APIs, not about the user's model or data.
_IGNORED = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record warnings (each distinct one once) instead of printing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield caught


def warning_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    """One line per distinct warning: prunekit's as they are, others with their category and origin."""
    lines: list[str] = []
    for w in caught:
        if issubclass(w.category, _IGNORED):
            continue
        text = " ".join(str(w.message).split())
        if not issubclass(w.category, PrunekitWarning):
            text = f"{w.category.__name__} ({Path(w.filename).name}:{w.lineno}): {text}"
        if text not in lines:
            lines.append(text)
    return lines
