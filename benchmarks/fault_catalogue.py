"""Run the whole fault catalogue (tests/cli/fault_cases.py) and print each verdict and the totals.

Each case is a bad input, an output-folder fault, or a kill/resume/concurrency fault from issue 11,
judged by the same rules the tests use: clean error, unclear error, traceback, data lost, wrong
success, or ok (a case that must succeed, did, and said what happened).

    python benchmarks/fault_catalogue.py [--skip-slow] [-k NAME_PART]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
os.environ.setdefault("OMP_NUM_THREADS", "1")

from cli.fault_cases import CASES, judge  # noqa: E402

VERDICTS = ("clean error", "ok", "unclear error", "traceback", "data lost", "wrong success")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-slow", action="store_true", help="skip the cases that start real processes (~1 min each)")
    parser.add_argument("-k", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    cases = [c for c in CASES if args.k in c.name and not (args.skip_slow and c.slow)]
    totals: Counter[str] = Counter()
    for case in cases:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"fault-{case.name}-") as tmp:
            try:
                verdict, detail = judge(case, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - a broken case is reported, the rest still run
                verdict, detail = "traceback", f"the case itself failed: {type(exc).__name__}: {exc}"
        expected = "ok" if case.expect_exit == 0 else "clean error"
        mark = "PASS" if verdict == expected else "FAIL"
        totals[verdict] += 1
        print(f"{mark} item {case.item:>2} {case.name:<36} {verdict:<13} {time.perf_counter() - start:5.1f}s"
              + (f"  {detail[:160]}" if mark == "FAIL" else ""), flush=True)
    print()
    print(f"{len(cases)} cases: " + ", ".join(f"{totals[v]} {v}" for v in VERDICTS))
    print(f"(expected: {sum(c.expect_exit != 0 for c in cases)} clean errors and "
          f"{sum(c.expect_exit == 0 for c in cases)} ok)")
    bad = sum(totals[v] for v in VERDICTS[2:])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
