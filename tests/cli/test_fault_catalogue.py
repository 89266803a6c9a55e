"""One test per fault of the catalogue (tests/cli/fault_cases.py): a clean one-line error with the
expected exit code and text, or an honest success, and the user's files untouched."""

from __future__ import annotations

import pytest

from cli.fault_cases import CASES, judge


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_fault(case, tmp_path):
    verdict, detail = judge(case, tmp_path)
    expected = "ok" if case.expect_exit == 0 else "clean error"
    assert verdict == expected, f"{case.name}: {verdict}: {detail}"
