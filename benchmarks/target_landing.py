"""How close a MAC target lands with round_to: asked vs reached on LeNet-5 and ResNet-8.

Random-weight models (the l2 ranking only orders channels; the landing depends on the widths and
the rounding), global scope, ``round_to=8``. Prints the removed MAC fraction asked and reached.

    python benchmarks/target_landing.py [--ratios 0.3 0.5 0.7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the LeNet-5 used by the test

from prunekit.evaluation.complexity import count_macs  # noqa: E402
from prunekit.models import ResNet8  # noqa: E402
from prunekit.pruning.pruner import StructuredPruner  # noqa: E402
from tests.pruning.test_allocate_target import LeNet5  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':<16}{'asked':>8}{'reached':>9}{'miss (pts)':>12}")
    for name, build in (("LeNet-5", LeNet5), ("ResNet-8 w16", lambda: ResNet8(width=16)),
                        ("ResNet-8 w32", lambda: ResNet8(width=32))):
        for ratio in args.ratios:
            torch.manual_seed(0)
            model, x = build().eval(), torch.randn(1, 1, 28, 28)
            pruner = StructuredPruner(criterion="l2", ratio=ratio, target="macs", scope="global", round_to=8)
            small = pruner.fit(model, x).transform(model)
            reached = 1 - count_macs(small, x).total / count_macs(model, x).total
            print(f"{name:<16}{ratio:>8.1%}{reached:>9.1%}{100 * (reached - ratio):>+12.2f}", flush=True)


if __name__ == "__main__":
    main()
