from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as prune
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.data.builtin import digits, synthetic_regression
from prunekit.errors import InvalidParameterError, PrunekitWarning
from prunekit.models.builtin import MLP
from prunekit.training import EpochStats, FinetuneConfig, evaluate, finetune


@pytest.fixture(scope="module")
def data():  # noqa: ANN201 - DataBundle
    return digits(batch_size=64)


def test_finetune_learns_digits_and_reports_history(data) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = MLP(hidden=(32,))
    before = evaluate(model, data.val)["accuracy"]
    seen: list[int] = []
    result = finetune(model, data.train, data.val, config=FinetuneConfig(epochs=2, lr=1e-2, optimizer="adam", weight_decay=0.0),
                      on_epoch_end=lambda epoch, stats: seen.append(epoch))
    assert before < 0.3 and result.history[-1].val_accuracy > 0.85
    assert seen == [0, 1] and [h.epoch for h in result.history] == [0, 1]
    assert result.history[0].lr == pytest.approx(1e-2)  # cosine starts at the base rate
    assert result.history[1].lr < 1e-2 and result.history[1].train_loss < result.history[0].train_loss
    assert result.best_epoch == 1 and not result.early_stopped
    assert evaluate(model, data.val)["loss"] == pytest.approx(result.history[-1].val_loss)


def test_same_seed_gives_identical_weights(data) -> None:  # noqa: ANN001
    weights = []
    for _ in range(2):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 10))
        torch.manual_seed(1)
        for p in model.parameters():
            nn.init.normal_(p, std=0.1)
        finetune(model, data.train, None, config=FinetuneConfig(epochs=1, seed=4))
        weights.append(model.state_dict())
    assert all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())


def test_evaluate_matches_hand_computation() -> None:
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # uneven last batch of 2
    scores = evaluate(model, loader)
    with torch.no_grad():
        logits = model(x)
    assert scores["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert scores["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert scores["samples"] == 10


def test_regression_task() -> None:
    data = synthetic_regression(n=256, features=8)
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    start = evaluate(model, data.val, task="regression")["loss"]
    result = finetune(model, data.train, data.val, task="regression",
                      config=FinetuneConfig(epochs=15, lr=0.05, scheduler="constant"))
    assert result.history[-1].val_accuracy is None
    assert result.history[-1].val_loss < 0.05 * start


def test_masks_keep_pruned_weights_exactly_zero(data) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = MLP(hidden=(16,))
    mask = (torch.rand(16, 64) > 0.5).float()
    before = model.net[1].weight.detach().clone()
    cfg = FinetuneConfig(epochs=1, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-3)
    finetune(model, data.train, None, config=cfg, masks={"net.1.weight": mask})
    weight = model.net[1].weight.detach()
    assert torch.all(weight[mask == 0] == 0)
    assert torch.all(weight[mask == 1] != before[mask == 1])


def test_torch_prune_hooks_keep_working(data, tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = MLP(hidden=(16,))
    prune.l1_unstructured(model.net[1], "weight", amount=0.6)
    mask = model.net[1].weight_mask.clone()
    orig = model.net[1].weight_orig.detach().clone()
    cfg = FinetuneConfig(epochs=1, lr=0.05, optimizer="adamw", weight_decay=0.1, checkpoint_dir=str(tmp_path), l1=1e-4)
    finetune(model, data.train, None, config=cfg)
    layer = model.net[1]
    assert prune.is_pruned(model) and torch.equal(layer.weight_mask, mask)
    assert not torch.equal(layer.weight_orig, orig)
    x = data.example_input
    model(x)
    assert torch.all(layer.weight[mask == 0] == 0)
    assert torch.allclose(model(x), F.linear(F.relu(F.linear(x.flatten(1), layer.weight_orig * mask, layer.bias)),
                                             model.net[3].weight, model.net[3].bias))


def test_early_stopping_restores_best_weights() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    y = (x[:, 0] > 0).long()
    train = DataLoader(TensorDataset(x[:100], y[:100]), batch_size=25, shuffle=True, generator=torch.Generator())
    val = DataLoader(TensorDataset(x[100:], 1 - y[100:]), batch_size=50)  # inverted labels: val loss rises
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    cfg = FinetuneConfig(epochs=10, lr=0.05, optimizer="sgd", early_stopping_patience=2, scheduler="constant")
    result = finetune(model, train, val, config=cfg)
    losses = [h.val_loss for h in result.history]
    assert result.early_stopped and len(losses) < 10
    assert result.best_epoch == losses.index(min(losses))
    assert len(losses) == result.best_epoch + 3  # two epochs without improvement, then stop
    assert evaluate(model, val)["loss"] == pytest.approx(min(losses), rel=1e-6)


def test_distillation_with_feature_matching_makes_student_agree_with_teacher(data) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    teacher = MLP(hidden=(64,))
    finetune(teacher, data.train, None, config=FinetuneConfig(epochs=3, lr=1e-2, optimizer="adam", weight_decay=0.0))
    student = MLP(hidden=(16,))  # 16 hidden features against the teacher's 64: a linear projection

    def agreement() -> float:
        x = torch.cat([b[0] for b in data.val])
        with torch.no_grad():
            return (student(x).argmax(1) == teacher(x).argmax(1)).float().mean().item()

    start = agreement()
    cfg = FinetuneConfig(epochs=3, lr=2e-2, temperature=2.0, alpha=1.0, feature_weight=0.1, optimizer="adam", weight_decay=0.0)
    finetune(student, data.train, data.val, config=cfg, teacher=teacher, feature_layers={"net.2": "net.2"})
    assert start < 0.3 and agreement() > 0.75  # alpha=1: the labels are never seen, only the teacher
    assert teacher.training is False and not student.net[2]._forward_hooks


def test_progress_bar_prints_epochs(data, capsys) -> None:  # noqa: ANN001
    finetune(MLP(hidden=(8,)), data.train, data.val, config=FinetuneConfig(epochs=1, progress=True))
    assert "epoch 1/1" in capsys.readouterr().out


def test_amp_without_cuda_warns(data) -> None:  # noqa: ANN001
    if torch.cuda.is_available():
        pytest.skip("CUDA present: amp is used")
    with pytest.warns(PrunekitWarning, match="amp is ignored"):
        finetune(MLP(hidden=(8,)), data.calib, None, config=FinetuneConfig(epochs=1, amp=True))


def test_warmup_ramps_linearly_then_cosine_decays_over_the_rest() -> None:
    from prunekit.training._setup import make_scheduler

    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = make_scheduler(opt, name="cosine", lr=1e-3, total_steps=20, steps_per_epoch=10, step_size=1, gamma=0.1,
                           warmup_steps=4)
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rates[4] == pytest.approx(1e-3) and all(a > b for a, b in zip(rates[4:], rates[5:]))
    assert rates[12] == pytest.approx(0.5e-3)  # half way through the 16 steps after the warm-up
    assert rates[-1] < 0.02e-3


def test_finetune_with_warmup_starts_low_and_still_learns(data) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = MLP(hidden=(32,))
    result = finetune(model, data.train, data.val,
                      config=FinetuneConfig(epochs=2, lr=1e-2, optimizer="adam", weight_decay=0.0, warmup=0.25))
    steps = 2 * len(data.train)
    assert result.history[0].lr == pytest.approx(1e-2 / round(0.25 * steps))
    assert result.history[-1].val_accuracy > 0.8


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lr": 0}, "'lr' parameter of FinetuneConfig must be a float > 0. Got 0"),
    ({"optimizer": "rmsprop"}, "'optimizer'.*Got 'rmsprop'"),
    ({"scheduler": "linear"}, "'scheduler'"),
    ({"epochs": 1.5}, "'epochs'"),
    ({"alpha": 2.0}, "'alpha'"),
    ({"early_stopping_patience": 0}, "'early_stopping_patience'"),
    ({"warmup": 1.0}, "'warmup'.*a fraction in"),
    ({"warmup": 0.1, "scheduler": "onecycle"}, "warm up twice"),
])
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        FinetuneConfig(**kwargs)


def test_finetune_argument_errors(data, tmp_path) -> None:  # noqa: ANN001
    model = MLP(hidden=(8,))
    with pytest.raises(InvalidParameterError, match="needs groups="):
        finetune(model, data.train, None, config=FinetuneConfig(group_lasso=0.1))
    with pytest.raises(InvalidParameterError, match="checkpoint_dir"):
        finetune(model, data.train, None, resume=True)
    with pytest.raises(InvalidParameterError, match="val_loader"):
        finetune(model, data.train, None, config=FinetuneConfig(early_stopping_patience=2))
    with pytest.raises(InvalidParameterError, match="'task'"):
        finetune(model, data.train, None, task="ranking")
    with pytest.raises(InvalidParameterError, match="no parameter 'net.9.weight'"):
        finetune(model, data.train, None, masks={"net.9.weight": torch.ones(1)})
    with pytest.raises(InvalidParameterError, match="shape"):
        finetune(model, data.train, None, masks={"net.1.weight": torch.ones(3)})
    assert isinstance(EpochStats(0, 1.0, None, None, 0.1, 0.0), EpochStats)
