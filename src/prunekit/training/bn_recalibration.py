"""Re-estimate BatchNorm running statistics after a structural edit.

Removing channels upstream changes the distribution every later BatchNorm sees, so the stored
running mean/variance no longer describe the activations; a few forward passes fix that without
any gradient step (the usual first aid after pruning, before or instead of fine-tuning).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunekit.errors import InvalidParameterError
from prunekit.training._batch import call_model, model_device, split_batch, to_device


def recalibrate_batchnorm(model: nn.Module, loader: Iterable, *, batches: int = 20) -> int:
    """Recompute every BatchNorm's running statistics from ``batches`` batches of ``loader``.

    Statistics are reset and accumulated as a plain cumulative average (``momentum=None``),
    so the result does not depend on the old, stale values. Only the BatchNorm layers run in
    train mode; dropout and every other layer stay in eval mode. Training modes and momenta
    are restored afterwards; if the loader fails or is empty the old statistics come back too.

    Parameters
    ----------
    model : nn.Module
        Edited in place (running statistics only; no parameter changes).
    loader : iterable of (inputs, targets)
        Calibration data, usually ``DataBundle.calib`` or the training loader.
    batches : int
        Most batches to use; fewer if the loader is shorter.

    Returns
    -------
    int
        Number of BatchNorm layers recalibrated (0 when the model has none; nothing runs then).
    """
    if not isinstance(batches, int) or isinstance(batches, bool) or batches < 1:
        raise InvalidParameterError(
            f"The 'batches' parameter of recalibrate_batchnorm must be an int >= 1. Got {batches!r} instead."
        )
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    saved = [{k: v.clone() for k, v in m.state_dict().items() if k.startswith(("running", "num_batches"))}
             for m in norms]
    device = model_device(model)
    seen = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over all calibration batches
            m.train()
        with torch.no_grad():
            for batch in loader:
                if seen >= batches:
                    break
                inputs, _ = split_batch(batch)
                call_model(model, to_device(inputs, device))
                seen += 1
        if seen == 0:
            raise InvalidParameterError(
                "recalibrate_batchnorm got an empty loader: give at least one batch of calibration data"
            )
    except BaseException:
        for m, state in zip(norms, saved):
            m.load_state_dict(state, strict=False)
        raise
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return len(norms)
