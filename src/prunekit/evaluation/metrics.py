"""Task metrics for any predictor (PyTorch or ONNX Runtime) over a loader of ``(inputs, targets)``.

The arithmetic is scikit-learn's; prunekit only gathers predictions and names the numbers, so a
pruned model, its int8 ONNX export and the original are scored by exactly the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from torch import nn

from prunekit.errors import InvalidParameterError, SourceError

Predictor = Callable[[torch.Tensor], torch.Tensor]
Task = Literal["classification", "regression"]
_TASKS = ("classification", "regression")


def classification_metrics(y_true: np.ndarray | torch.Tensor, y_pred: np.ndarray | torch.Tensor, *,
                           num_classes: int) -> dict:
    """Accuracy, macro/weighted precision, recall, F1 and the confusion matrix.

    Parameters
    ----------
    y_true, y_pred : array of int, shape (n,)
        True and predicted class indices.
    num_classes : int
        Number of classes; fixes the confusion matrix to ``num_classes x num_classes`` even when
        some classes are absent from this sample.

    Returns
    -------
    dict
        ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``precision_weighted``,
        ``recall_weighted``, ``f1_weighted`` (floats) and ``confusion_matrix`` (list of lists,
        rows are true classes). Classes never predicted count as precision 0 (``zero_division=0``).
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidParameterError(
            f"The 'num_classes' parameter of classification_metrics must be an int >= 2. Got {num_classes!r} instead."
        )
    t, p = _as_numpy(y_true).astype(np.int64).ravel(), _as_numpy(y_pred).astype(np.int64).ravel()
    labels = list(range(num_classes))
    out: dict = {"accuracy": float(skm.accuracy_score(t, p))}
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = skm.precision_recall_fscore_support(t, p, labels=labels, average=avg, zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(pr), float(rc), float(f1)
    out["confusion_matrix"] = skm.confusion_matrix(t, p, labels=labels).tolist()
    return out


def regression_metrics(y_true: np.ndarray | torch.Tensor, y_pred: np.ndarray | torch.Tensor) -> dict:
    """Mean squared error, mean absolute error and R² (multi-output averaged uniformly)."""
    t, p = _as_numpy(y_true).astype(np.float64), _as_numpy(y_pred).astype(np.float64)
    if t.ndim > 1 and t.shape[1:] == (1,):
        t = t[:, 0]
    if p.ndim > 1 and p.shape[1:] == (1,):
        p = p[:, 0]
    return {
        "mse": float(skm.mean_squared_error(t, p)),
        "mae": float(skm.mean_absolute_error(t, p)),
        "r2": float(skm.r2_score(t, p)) if len(t) >= 2 else float("nan"),
    }


def torch_predictor(model: nn.Module) -> Predictor:
    """Wrap a module as ``inputs -> outputs`` in eval mode without autograd.

    The model's training flag is put back after every call, so evaluating in the middle of
    fine-tuning does not leave BatchNorm/Dropout frozen.
    """

    def predict(inputs: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model(**inputs) if isinstance(inputs, dict) else model(inputs)
        finally:
            model.train(was_training)

    return predict


def onnx_predictor(path: str | Path, *, threads: int | None = None) -> Predictor:
    """Wrap an ONNX file as ``inputs -> outputs`` on ONNX Runtime's CPU provider.

    The tensor is fed to the graph's first input and the first output comes back as a float
    torch tensor. ``threads`` sets intra-op threads (ORT's default when None).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"ONNX model '{path}' does not exist: export it first or fix the path")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def predict(inputs: torch.Tensor) -> torch.Tensor:
        if isinstance(inputs, dict):  # keyword inputs (token ids and mask): fed by name
            names = {i.name for i in session.get_inputs()}
            feed = {k: v.detach().cpu().numpy() for k, v in inputs.items() if k in names}
        else:
            feed = {input_name: inputs.detach().cpu().numpy()}
        (out, *_) = session.run(None, feed)
        return torch.from_numpy(np.asarray(out))

    return predict


def evaluate(predict: Predictor, loader: Iterable, *, task: Task, num_classes: int | None = None) -> dict:
    """Run ``predict`` over every batch and score the whole set.

    Parameters
    ----------
    predict : callable
        ``inputs -> outputs``, e.g. from :func:`torch_predictor` or :func:`onnx_predictor`.
    loader : iterable of (inputs, targets)
        Classification targets are class indices; outputs are logits ``(B, num_classes)``.
    task : {"classification", "regression"}
    num_classes : int, optional
        Required for classification.

    Returns
    -------
    dict
        The task's metrics plus ``loss`` (mean cross-entropy or MSE over samples) and ``n``.
    """
    if task not in _TASKS:
        raise InvalidParameterError(f"The 'task' parameter of evaluate must be one of {_TASKS}. Got {task!r} instead.")
    if task == "classification" and num_classes is None:
        raise InvalidParameterError("The 'num_classes' parameter of evaluate is required for classification. Got None.")
    outputs, targets = [], []
    for inputs, target in loader:
        outputs.append(torch.as_tensor(predict(inputs)).detach().float().cpu())
        targets.append(torch.as_tensor(target).detach().cpu())
    if not outputs:
        raise SourceError("evaluate got an empty loader: it yielded no (inputs, targets) batch; check the data split")
    out, y = torch.cat(outputs), torch.cat(targets)  # out: (n, C) or (n, ...), y: (n,) or (n, ...)
    if task == "classification":
        y = y.long().view(-1)
        result = classification_metrics(y, out.argmax(dim=-1), num_classes=num_classes)
        result["loss"] = float(F.cross_entropy(out, y))
    else:
        if y.numel() != out.numel():
            raise InvalidParameterError(
                f"evaluate got regression outputs of shape {tuple(out.shape)} but targets of shape "
                f"{tuple(y.shape)}: they must hold the same number of values"
            )
        y = y.float().view_as(out)
        result = regression_metrics(y, out)
        result["loss"] = float(F.mse_loss(out, y))
    result["n"] = int(len(y))
    return result


# The one number the int8 fallback compares per task (higher = better) and what the report calls it.
_QUALITY = {"classification": ("accuracy", "accuracy"), "regression": ("r2", "R²"),
            "embedding": ("cosine_mean", "mean cosine to the dense model"), "causal_lm": ("loss", "minus the next-token loss")}


def quality_score(metrics: dict, task: str) -> float:
    """The task's quality as one number, higher = better: accuracy, R² (regression), mean cosine to
    the dense model (embeddings) or minus the next-token loss (language models).

    An int8 model is kept only if this drops by at most the recipe's tolerance; a regression model
    has no accuracy, so reading one there would compare 0 with 0 and accept any int8 error.
    """
    if task not in _QUALITY:
        raise InvalidParameterError(f"quality_score: task must be one of {', '.join(_QUALITY)}. Got {task!r} instead.")
    key = _QUALITY[task][0]
    value = metrics.get(key)
    if value is None or value != value:  # missing or NaN (R² of a single sample)
        raise InvalidParameterError(f"quality_score: the {task} metrics have no finite {key!r} "
                                    f"(got {value!r}); evaluate on at least two samples")
    return -float(value) if task == "causal_lm" else float(value)


def quality_label(task: str) -> str:
    """What :func:`quality_score` measures for ``task``, for report labels."""
    return _QUALITY.get(task, ("accuracy", "accuracy"))[1]


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)
