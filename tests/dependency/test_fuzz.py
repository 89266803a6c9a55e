"""Random architectures (tests/fuzz_nets.py): each prunes with zeroed == removed, or is refused.

Deterministic: a fixed list of seeds, each drawing one architecture with ``random.Random(seed)``.
The outcome of every case is counted, so a run that checks nothing cannot pass.
``benchmarks/fuzz.py`` runs the same generator over 500 seeds.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from fuzz_nets import Case, draw, run_case

torch.set_num_threads(1)
SEEDS = range(120)


@pytest.fixture(scope="module")
def outcomes():
    return [run_case(draw(seed)) for seed in SEEDS]


def test_no_silent_corruption_and_no_crash(outcomes) -> None:
    bad = [o for o in outcomes if o.status in ("silent", "crash")]
    assert not bad, "\n".join(f"seed {o.case.seed} {o.case.kinds}: {o.status}: {o.reason}" for o in bad[:5])


def test_most_cases_are_really_checked_and_refusals_say_why(outcomes) -> None:
    counts = Counter(o.status for o in outcomes)
    assert counts["checked"] >= 90, counts  # 105 of 120 when written; a generator that checks nothing fails
    assert all(o.reason for o in outcomes if o.status == "refused")
    kinds_checked = {k for o in outcomes if o.status == "checked" for k in o.case.kinds}
    assert kinds_checked >= {"split", "train_branch", "attention", "channels_last", "concat", "grouped"}


def test_split_sized_by_another_tensor_is_dropped_not_broken() -> None:
    """The architecture a hypothesis run found: split(x, x.shape[1]) after an inexact group broke the model."""
    outcome = run_case(Case(483, ("channels_last", "split", "residual", "gn", "grouped"), 4, True, 0.25))
    assert outcome.status == "checked", outcome
