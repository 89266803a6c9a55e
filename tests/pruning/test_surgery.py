"""Physical removal: the pruned model is a plain smaller nn.Module that trains, saves without
pickle, rebuilds from its factory, composes records, and exports to ONNX with equal outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from models import ConvBNResidual, TokenModel, outputs, randomize_norms, ratio_plan
from prunekit.dependency import PruningPlan, build_graph
from prunekit.errors import SourceError  # noqa: E402
from prunekit.pruning.surgery import SurgeryRecord, apply_plan, apply_record, load_pruned, save_pruned  # noqa: E402

torch.set_num_threads(1)


def _pruned(factory=ConvBNResidual, shape=(2, 3, 8, 8), ratio=0.5):
    torch.manual_seed(0)
    model = randomize_norms(factory()).eval()
    x = torch.randn(*shape)
    graph = build_graph(model, x)
    pruned, record = apply_plan(model, graph, ratio_plan(graph, ratio))
    return model, x, graph, pruned, record


def test_pruned_model_is_plain_and_trains() -> None:
    _, x, _, pruned, _ = _pruned()
    assert type(pruned) is ConvBNResidual and pruned.a.weight.shape == (4, 4, 3, 3)
    pruned.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    before = pruned.a.weight.detach().clone()
    loss = nn.functional.cross_entropy(pruned(x), torch.tensor([0, 1]))
    loss.backward()
    assert pruned.a.weight.grad.shape == (4, 4, 3, 3)
    opt.step()
    assert not torch.equal(before, pruned.a.weight)


def test_inplace_edits_the_given_model() -> None:
    torch.manual_seed(0)
    model, x = ConvBNResidual().eval(), torch.randn(1, 3, 8, 8)
    graph = build_graph(model, x)
    same, _ = apply_plan(model, graph, PruningPlan({graph.prunable_groups()[0].id: (0, 1, 2)}), inplace=True)
    assert same is model and model.stem.out_channels == 5 and model.stem.weight.shape[0] == 5


def test_save_and_load_round_trip_without_pickle(tmp_path: Path) -> None:
    _, x, _, pruned, record = _pruned(TokenModel)
    directory = save_pruned(pruned, record, tmp_path / "out")
    assert sorted(p.name for p in directory.iterdir()) == ["model.safetensors", "pruning_record.json"]
    torch.manual_seed(123)  # a fresh original with other random weights: all come from the file
    rebuilt = load_pruned(TokenModel(), directory)
    assert rebuilt.attn.num_heads == pruned.attn.num_heads
    for a, b in zip(outputs(pruned, x), outputs(rebuilt, x)):
        assert torch.equal(a, b)


def test_load_refuses_missing_files_and_wrong_factory(tmp_path: Path) -> None:
    _, _, _, pruned, record = _pruned()
    with pytest.raises(SourceError, match="missing .*pruning_record.json"):
        load_pruned(ConvBNResidual(), tmp_path)
    save_pruned(pruned, record, tmp_path)
    with pytest.raises(SourceError, match="names tensor '[a-z.]+' that the model does not have; build the model from the same factory"):
        load_pruned(nn.Sequential(nn.Linear(2, 2)), tmp_path)


def test_record_json_and_merged_records_compose() -> None:
    model, x, _, first, rec1 = _pruned(ratio=0.25)
    assert SurgeryRecord.from_json(rec1.to_json()) == rec1
    graph2 = build_graph(first, x)
    second, rec2 = apply_plan(first, graph2, ratio_plan(graph2, 0.5, seed=1))
    merged = rec1.merged(rec2)
    torch.manual_seed(0)
    replay = apply_record(randomize_norms(ConvBNResidual()).eval(), merged)  # same weights as model
    for (n, a), (_, b) in zip(second.state_dict().items(), replay.state_dict().items()):
        assert torch.equal(a, b), n
    assert replay.a.out_channels == second.a.out_channels == 3


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    from prunekit.export.onnx import export_onnx, onnx_outputs

    _, x, _, pruned, _ = _pruned(TokenModel)
    path = export_onnx(pruned, x, tmp_path / "m.onnx", opset=17)
    got = onnx_outputs(path, x)[0]
    expected = outputs(pruned, x)[0].numpy()
    assert got.shape == expected.shape and abs(got - expected).max() <= 1e-4


class _LiteralWidth(nn.Module):
    """Reshapes by a width stored as a plain attribute, which no trace can tie to the cut channels."""

    def __init__(self) -> None:
        super().__init__()
        self.width = 16
        self.fc, self.out = nn.Linear(8, 16), nn.Linear(16, 4)
        self.fc2, self.out2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 8)
        a = torch.relu(self.fc(x)).reshape(x.shape[0], self.width)  # breaks once fc is cut
        return self.out(a) + self.out2(torch.relu(self.fc2(x)))


def test_unverifiable_groups_are_left_whole_and_the_rest_is_pruned():
    from prunekit.pruning.pruner import StructuredPruner
    from prunekit.pruning.surgery import drop_unverifiable

    torch.manual_seed(0)
    model, x = _LiteralWidth().eval(), torch.randn(2, 8)
    graph = build_graph(model, x)
    plan = ratio_plan(graph, 0.5)
    kept_plan, dropped = drop_unverifiable(model, graph, plan)
    assert list(dropped) == ["fc.weight:0"] and "failed to run" in dropped["fc.weight:0"]
    assert "fc2.weight:0" in kept_plan.removed
    with pytest.warns(UserWarning, match="left whole because cutting them breaks the model"):
        pruner = StructuredPruner(criterion="l2", target="channels", scope="local", ratio=0.5, round_to=None).fit(model, x)
        small = pruner.transform(model)
    assert small.fc.out_features == 16 and small.fc2.out_features == 8 and small(x).shape == (2, 4)
