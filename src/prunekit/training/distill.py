"""Knowledge distillation: the unpruned model teaches its pruned copy.

The soft targets carry how the teacher ranks the wrong classes too, which a pruned student has
lost; matching them recovers accuracy faster than the hard labels alone (Hinton et al., 2015).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from prunekit.errors import InvalidParameterError


def _check_distill(temperature: float, alpha: float, owner: str) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise InvalidParameterError(
            f"The 'temperature' parameter of {owner} must be a float > 0. Got {temperature!r} instead."
        )
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
        raise InvalidParameterError(f"The 'alpha' parameter of {owner} must be a float in [0, 1]. Got {alpha!r} instead.")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, targets)``.

    The ``T^2`` factor keeps the soft-target gradients on the same scale as the hard-label ones
    whatever the temperature. KL is averaged over the batch (``batchmean``), CE is the mean.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor, shape (B, C)
    targets : Tensor of int, shape (B,)
    temperature : float > 0
    alpha : float in [0, 1]
        Weight of the soft (teacher) term; 0 is plain cross-entropy.
    """
    _check_distill(temperature, alpha, "distillation_loss")
    if student_logits.shape != teacher_logits.shape:
        raise InvalidParameterError(
            f"distillation_loss needs student and teacher logits of one shape. Got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=-1)  # (B, C)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=-1)  # (B, C)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    ce = F.cross_entropy(student_logits, targets)
    return alpha * t * t * kl + (1.0 - alpha) * ce


def regression_distillation_loss(
    student_out: torch.Tensor, teacher_out: torch.Tensor, targets: torch.Tensor, *, alpha: float
) -> torch.Tensor:
    """``alpha * MSE(s, t) + (1 - alpha) * MSE(s, targets)``: distillation for regression heads."""
    _check_distill(1.0, alpha, "regression_distillation_loss")
    targets = targets.to(student_out.dtype).reshape(student_out.shape)
    return alpha * F.mse_loss(student_out, teacher_out.detach()) + (1.0 - alpha) * F.mse_loss(student_out, targets)


def _projection(student: torch.Tensor, teacher: torch.Tensor, name: str) -> nn.Module:
    """A learnable map from the student's feature width to the teacher's (identity if equal)."""
    if student.shape == teacher.shape:
        return nn.Identity()
    differ = [i for i in range(student.ndim) if student.shape[i] != teacher.shape[i]]
    if student.ndim != teacher.ndim or len(differ) != 1 or differ[0] == 0:
        raise InvalidParameterError(
            f"FeatureMatcher cannot match layer '{name}': student features {tuple(student.shape)} and teacher "
            f"features {tuple(teacher.shape)} must differ on exactly one non-batch axis (the channels)"
        )
    axis, c_in, c_out = differ[0], student.shape[differ[0]], teacher.shape[differ[0]]
    if axis == student.ndim - 1:  # (B, C) or (B, T, C): channels last
        return nn.Linear(c_in, c_out, bias=False)
    if axis == 1 and 3 <= student.ndim <= 5:  # (B, C, *spatial): a 1x1 convolution
        conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[student.ndim]
        return conv(c_in, c_out, kernel_size=1, bias=False)
    raise InvalidParameterError(
        f"FeatureMatcher cannot match layer '{name}': channels differ on axis {axis} of a "
        f"{student.ndim}-d feature; only axis 1 (conv) or the last axis (linear) are supported"
    )


class FeatureMatcher(nn.Module):
    """MSE between named intermediate features of a student and a teacher.

    ``layers`` maps a student module name to the teacher module name it should imitate. Forward
    hooks capture both outputs on every forward; ``loss()`` returns the mean of the per-layer MSEs.
    When pruning narrowed a student layer, a learnable 1x1 convolution (channels on axis 1) or
    linear map (channels last) projects the student features to the teacher's width; its
    parameters are this module's, so add ``matcher.parameters()`` to the optimizer (``finetune``
    does). Projections are built by ``build(example_inputs)``, which runs both models once.

    Use as a context manager, or call ``attach()`` / ``detach()``, to add and remove the hooks.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, layers: Mapping[str, str]) -> None:
        super().__init__()
        self.student = [student]  # lists keep the models out of this module's parameters
        self.teacher = [teacher]
        self.layers = dict(layers)
        self.projections = nn.ModuleDict()
        self._student_features: dict[str, torch.Tensor] = {}
        self._teacher_features: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def attach(self) -> "FeatureMatcher":
        """Register the forward hooks (idempotent); unknown layer names raise."""
        if self._handles:
            return self
        if not self.layers:
            raise InvalidParameterError("FeatureMatcher needs at least one layer pair in 'layers'")
        for s_name, t_name in self.layers.items():
            s_mod = _submodule(self.student[0], s_name, "student")
            t_mod = _submodule(self.teacher[0], t_name, "teacher")
            self._handles.append(s_mod.register_forward_hook(_store(self._student_features, s_name)))
            self._handles.append(t_mod.register_forward_hook(_store(self._teacher_features, s_name)))
        return self

    def detach(self) -> None:
        """Remove the hooks and drop captured features."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._student_features.clear()
        self._teacher_features.clear()

    def __enter__(self) -> "FeatureMatcher":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @torch.no_grad()
    def build(self, example_inputs: object) -> "FeatureMatcher":
        """Run both models once on ``example_inputs`` and create the projections that are needed."""
        from prunekit.training._batch import call_model, model_device, to_device

        self.attach()
        for model in (self.student[0], self.teacher[0]):
            was_training = model.training
            model.eval()
            call_model(model, to_device(example_inputs, model_device(model)))
            model.train(was_training)
        for s_name in self.layers:
            s_feat, t_feat = self._pair(s_name)
            key = _key(s_name)
            if key not in self.projections:
                self.projections[key] = _projection(s_feat, t_feat, s_name).to(s_feat.device)
        self._student_features.clear()
        self._teacher_features.clear()
        return self

    def loss(self) -> torch.Tensor:
        """Mean over layer pairs of MSE(project(student feature), teacher feature) from the last forwards."""
        terms = []
        for s_name in self.layers:
            s_feat, t_feat = self._pair(s_name)
            key = _key(s_name)
            if key not in self.projections:
                raise InvalidParameterError(
                    f"FeatureMatcher has no projection for layer '{s_name}': call build(example_inputs) first"
                )
            terms.append(F.mse_loss(self.projections[key](s_feat), t_feat.detach()))
        return torch.stack(terms).mean()

    def _pair(self, s_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if s_name not in self._student_features or s_name not in self._teacher_features:
            raise InvalidParameterError(
                f"FeatureMatcher has no captured features for layer '{s_name}': run the student and the "
                "teacher forward (with hooks attached) before loss()"
            )
        return self._student_features[s_name], self._teacher_features[s_name]


def _key(name: str) -> str:
    return name.replace(".", "__") or "__root__"  # ModuleDict keys cannot hold dots


def _submodule(model: nn.Module, name: str, side: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise InvalidParameterError(
            f"FeatureMatcher: the {side} has no module named '{name}'; use a name from named_modules()"
        ) from None


def _store(bucket: dict[str, torch.Tensor], key: str):  # noqa: ANN202 - a forward hook
    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, (tuple, list)):
            output = output[0]
        bucket[key] = output

    return hook
