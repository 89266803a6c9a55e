"""One-shot pruning of large language models, block by block from calibration text.

- :func:`prune_oneshot`: unstructured or N:M sparsity with Wanda, SparseGPT or magnitude.
- :func:`prune_structured`: remove FFN channels and attention heads scored Wanda-style
  (``sum |W| * ||X||`` over each unit's input columns), shrinking the model with prunekit's surgery;
  the consumers of removed units compensate by bias or by a least-squares refit.
- :func:`reconstruct_plan`: the same block-by-block removal and refit for a plan chosen by any criterion.

Both process the model's transformer blocks in order, feeding each block the outputs of the
already-pruned blocks before it, and hold only one block's activations at a time.
"""

from prunekit.pruning.oneshot.blocks import find_blocks
from prunekit.pruning.oneshot.reconstruct import RECONSTRUCT
from prunekit.pruning.oneshot.sequential import METHODS, OneShotResult, prune_oneshot
from prunekit.pruning.oneshot.sparsegpt import sparsegpt_prune
from prunekit.pruning.oneshot.structured import StructuredResult, prune_structured, reconstruct_plan
from prunekit.pruning.oneshot.wanda import wanda_keep_mask, wanda_scores

__all__ = ["METHODS", "OneShotResult", "RECONSTRUCT", "StructuredResult", "find_blocks", "prune_oneshot",
           "prune_structured", "reconstruct_plan", "sparsegpt_prune", "wanda_keep_mask", "wanda_scores"]
