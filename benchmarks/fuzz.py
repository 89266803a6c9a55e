"""Fuzz the dependency engine: N random architectures, each checked, refused with a reason, or broken.

    .venv/bin/python benchmarks/fuzz.py --cases 500

Uses the generator of tests/dependency/test_fuzz.py (tests/fuzz_nets.py), seeds 0..N-1, so every
run and machine draws the same architectures. Prints the counts per outcome, the refusal reasons
by frequency, and each silent corruption or crash (the goal is zero of both). Exit status 1 if any.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_nets import draw, run_case  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    outcomes = [run_case(draw(seed)) for seed in range(args.first_seed, args.first_seed + args.cases)]
    counts = Counter(o.status for o in outcomes)
    reasons = Counter(_short(o.reason) for o in outcomes if o.status == "refused")
    worst = max((o.relative_diff for o in outcomes if o.status == "checked"), default=0.0)
    print(f"{len(outcomes)} architectures (seeds {args.first_seed}..{args.first_seed + args.cases - 1}) "
          f"in {time.perf_counter() - start:.0f} s")
    for status in ("checked", "refused", "silent", "crash"):
        print(f"  {status:8s} {counts[status]}")
    print(f"  largest zeroed-vs-removed difference among checked: {worst:.1e} of the output scale")
    for reason, n in reasons.most_common():
        print(f"  refused {n:3d}x: {reason}")
    for o in outcomes:
        if o.status in ("silent", "crash"):
            print(f"  {o.status.upper()} seed {o.case.seed} {o.case}: {o.reason}")
    return 1 if counts["silent"] or counts["crash"] else 0


def _short(reason: str) -> str:
    """A refusal reason without the module path, so equal causes are counted together."""
    return reason.split(" (op ")[0].split(" in module ")[0][:110]


if __name__ == "__main__":
    raise SystemExit(main())
