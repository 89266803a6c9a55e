"""Do importance criteria predict what removing a unit costs? The oracle protocol, on three models.

Oracle (Molchanov et al. 2019): for every unit of every prunable group, the increase of the
training loss (``--oracle-samples`` training samples, eval mode) when that unit alone is zeroed
(``zero_plan``). Each criterion scores the same units from ``--calib-batches`` calibration batches
of 64 other training samples; per group the Spearman rank correlation with the oracle is taken,
then the mean over groups (ρ). Beside it, ρ² is the same against Molchanov et al.'s own oracle,
the SQUARED loss change, which is what ``taylor`` estimates. The oracle's own noise is measured:
its split-half Spearman (two disjoint halves of its samples) and the ceiling it puts on any
criterion's ρ (square root of the Spearman-Brown reliability).

One-shot: the dense model is cut to 50% and 70% of every group's units (local scope, no
rounding), and to 50% of all units with one global ranking of mean-normalized scores (the
recipe's default scope); BatchNorm statistics are recalibrated (20 training batches of 32), no
fine-tuning, test accuracy. The signed loss-change estimates (first and second order, not
registered as criteria) and the oracle itself used as scores are shown for reference.

Models: the issue's small CNN on scikit-learn digits (6 epochs), ResNet-8 width 16
(``--fashion-width``) on 3000 Fashion-MNIST training images (6 epochs, 1000 test images), and a
2-layer transformer encoder (d 32, 4 heads) classifying 64-token windows of the Brown corpus by
genre group (press, other informative prose, learned, fiction; ``--brown-labels genre`` for the 15
genres) (8 epochs). Every model is trained with AdamW and one-cycle annealing, so it ends near a
minimum of its loss (``--constant-lr``: the constant rate of the first tables). ``--seeds`` repeats everything (data split, training, oracle and
calibration samples, random probes) per seed; the tables give mean ± sd over seeds. The
``random`` row is the mean of ``--random-draws`` rankings per seed (a single draw's one-shot
accuracy varies by about 0.1 from draw to draw on ResNet-8). Sizes are
small because the development machine is two shared cores. Calibration collection time and the
size of the statistics it keeps are printed too.

    python benchmarks/criteria_oracle.py [--quick] [--models digits fashion brown] [--seeds 0 1 2]
    python benchmarks/criteria_oracle.py --models brown --seeds 0 1 2 --save brown.json   # one model
    python benchmarks/criteria_oracle.py --load digits.json fashion.json brown.json       # one table
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from prunekit.data import digits
from prunekit.dependency import build_graph
from prunekit.dependency.groups import PruningPlan
from prunekit.importance import CRITERIA, HeadImportance, TaylorFirstOrder, TaylorSecondOrder, collect, make_criterion
from prunekit.importance.base import DegenerateScoresError
from prunekit.importance.score import score_groups
from prunekit.models import ResNet8
from prunekit.pruning.allocate import allocate
from prunekit.pruning.surgery import apply_plan, zero_plan
from prunekit.training import recalibrate_batchnorm

WEIGHT_ONLY = ["random", "l1", "l2", "bn_scale", "lamp"]
GATE = ["taylor", "taylor_batch", "fisher", "obd", "output_sensitivity", "heads"]
ESTIMATES = {"first_order (estimate)": TaylorFirstOrder, "second_order (estimate)": TaylorSecondOrder,
             "heads, per_sample=False": lambda: HeadImportance(per_sample=False)}  # the former default |sum_n g_n|
ORACLE_ROW = "oracle itself (reference)"  # the single-unit loss increases used as scores: the best such ranking
ACTIVATION = ["apoz", "activation"]
OLD = ["gradient", "taylor_weight", "taylor_elementwise", "fisher_weight", "obd_weight"]
RATIOS = (0.5, 0.7)
# training samples of the oracle: as many as calibration leaves of the digits training set (at 512
# its split-half Spearman was +0.45 on the annealed model, whose training loss is near zero);
# Brown's oracle is noise-dominated at 512 too; ResNet-8's is not and costs more per sample
ORACLE_SAMPLES = {"digits": 2048, "fashion": 512, "brown": 2048}


# ----------------------------------------------------------------------------- models and data
class SmallCNN(nn.Module):
    """The issue's CNN: conv 32 -> BN -> ReLU -> conv 64 -> BN -> ReLU -> pool -> fc 64 -> fc 10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8)
        return self.classifier(self.features(x))


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections (heads are prunable)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, dim)
        b, t, _ = x.shape
        q, k, v = (m(x).view(b, t, -1, self.head_dim).transpose(1, 2) for m in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), -1)  # (B, h, T, T)
        return self.o((att @ v).transpose(1, 2).reshape(b, t, -1))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attn = Attention(dim, heads)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class TextClassifier(nn.Module):
    """Word embeddings + positions -> 2 post-LN encoder layers -> mean pool -> genre."""

    def __init__(self, vocab: int, classes: int, length: int, dim: int = 64, heads: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.layers = nn.Sequential(*(EncoderLayer(dim, heads, hidden) for _ in range(2)))
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) int64
        x = self.layers(self.embed(ids) + self.pos[: ids.shape[1]])
        return self.head(x.mean(1))


def _loader(x: torch.Tensor, y: torch.Tensor, batch: int, shuffle: bool = False, seed: int = 0) -> list:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(len(x))
    return [(x[order[i:i + batch]], y[order[i:i + batch]]) for i in range(0, len(x), batch)]


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int,
           anneal: bool = True) -> None:
    """AdamW; by default one cycle (15% warm-up, then cosine decay to ~0) so the model ends near a
    minimum of its loss, as a trained model a user brings does. ``anneal=False`` keeps the rate
    constant (the protocol of the first tables): the model then stops mid-descent, where removing
    a unit can lower the loss (67 of ResNet-8's 224 units in seed 0) and criteria built on the
    assumption of a minimum (Taylor, Fisher, OBD) are judged on a model that violates it."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15) if anneal else None
    model.train()
    for epoch in range(epochs):
        for xb, yb in _loader(x, y, 64, shuffle=True, seed=seed * 100 + epoch):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            if schedule is not None:
                schedule.step()
    model.eval()


def _split(x: torch.Tensor, y: torch.Tensor, n_oracle: int, n_calib: int, seed: int):
    """Disjoint training samples for the oracle and for calibration."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 7))
    o, c = order[:n_oracle], order[n_oracle:n_oracle + n_calib]
    return (x[o], y[o]), (x[c], y[c])


def digits_case(args) -> dict:
    bundle = digits(seed=args.seed)
    x, y = (torch.cat(t) for t in zip(*[(a, b) for a, b in bundle.train]))
    xt, yt = (torch.cat(t) for t in zip(*[(a, b) for a, b in bundle.test]))
    torch.manual_seed(args.seed)
    model = SmallCNN()
    _train(model, x, y, epochs=6, lr=3e-3, seed=args.seed, anneal=not args.constant_lr)
    return dict(name="digits CNN", model=model, train=(x, y), test=(xt, yt), example=x[:2])


def fashion_case(args) -> dict:
    from prunekit.data.builtin import fashion_mnist

    bundle = fashion_mnist(seed=args.seed, train_limit=2000 if args.quick else 3000)
    x, y = (torch.cat(t) for t in zip(*[(a, b) for a, b in bundle.train]))
    xt, yt = (torch.cat(t) for t in zip(*[(a, b) for a, b in bundle.test]))
    xt, yt = xt[:1000], yt[:1000]
    torch.manual_seed(args.seed)
    model = ResNet8(width=args.fashion_width)
    _train(model, x, y, epochs=3 if args.quick else 6, lr=3e-3, seed=args.seed, anneal=not args.constant_lr)
    return dict(name="ResNet-8 Fashion-MNIST", model=model, train=(x, y), test=(xt, yt), example=x[:2])


# Brown's own grouping of its 15 genres (corpus manual): press A-C, other informative prose D-H,
# learned J, imaginative prose (fiction) K-R. 15 genres from 64-token windows trained a model of
# 0.29 test accuracy whose every one-shot cut landed at chance, which cannot rank criteria; the four
# groups train to about 0.6 (the largest group is 41% of the texts).
GENRE_GROUPS = {**dict.fromkeys("abc", "press"), **dict.fromkeys("defgh", "general prose"), "j": "learned",
                **dict.fromkeys("klmnpr", "fiction")}
TOKEN = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def brown_case(args) -> dict:
    from prunekit.data.brown import load_texts

    length, per_text = 64, 8 if args.quick else 16
    texts = load_texts()
    rng = np.random.default_rng(args.seed)
    by_genre: dict[str, list] = {}
    for t in texts:
        by_genre.setdefault(t.genre, []).append(t)
    train_texts, test_texts = [], []
    for genre in sorted(by_genre):  # 20% of every genre's texts held out
        items = list(by_genre[genre])
        rng.shuffle(items)
        k = max(1, round(0.2 * len(items)))
        test_texts += items[:k]
        train_texts += items[k:]
    tokens = {t.id: TOKEN.findall(" ".join(t.sentences).lower()) for t in texts}
    counts = Counter(w for t in train_texts for w in tokens[t.id])
    vocab = {w: i + 1 for i, (w, _) in enumerate(counts.most_common(3000))}  # 0 = unknown
    label_of = (lambda genre: genre) if args.brown_labels == "genre" else GENRE_GROUPS.__getitem__
    genres = {g: i for i, g in enumerate(sorted({label_of(g) for g in by_genre}))}

    def windows(items):
        xs, ys = [], []
        for t in items:
            ids = [vocab.get(w, 0) for w in tokens[t.id]]
            starts = np.linspace(0, len(ids) - length, per_text).astype(int)
            xs += [ids[s:s + length] for s in starts]
            ys += [genres[label_of(t.genre)]] * per_text
        return torch.tensor(xs), torch.tensor(ys)

    x, y = windows(train_texts)
    xt, yt = windows(test_texts)
    torch.manual_seed(args.seed)
    model = TextClassifier(len(vocab) + 1, len(genres), length, dim=32, heads=4, hidden=64)
    _train(model, x, y, epochs=4 if args.quick else 8, lr=3e-3, seed=args.seed, anneal=not args.constant_lr)
    task = "genre" if args.brown_labels == "genre" else "genre group"
    return dict(name=f"transformer Brown {task}", model=model, train=(x, y), test=(xt, yt), example=x[:2])


CASES = {"digits": digits_case, "fashion": fashion_case, "brown": brown_case}


# ----------------------------------------------------------------------------- measurements
@torch.no_grad()
def sample_losses(model: nn.Module, data: list) -> torch.Tensor:
    model.eval()
    return torch.cat([F.cross_entropy(model(xb), yb, reduction="none").double() for xb, yb in data])  # (samples,)


@torch.no_grad()
def accuracy(model: nn.Module, data: list) -> float:
    model.eval()
    return sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in data) / sum(len(yb) for _, yb in data)


def oracle(model: nn.Module, graph, groups, data: list) -> dict[str, np.ndarray]:
    """Per-sample loss increase of zeroing each unit alone (zero_plan): per group (units, samples)."""
    dense = sample_losses(model, data)
    return {g.id: torch.stack([sample_losses(zero_plan(model, graph, PruningPlan({g.id: (u,)})), data) - dense
                               for u in range(g.size)]).numpy() for g in groups}


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    rho = spearmanr(a, b).statistic
    return 0.0 if np.isnan(rho) else float(rho)  # a constant ranking carries no information


def mean_spearman(scores: dict[str, torch.Tensor], truth: dict[str, np.ndarray]) -> tuple[float, int]:
    rhos = [_rho(s.double().numpy(), truth[gid]) for gid, s in scores.items()]
    return (float(np.mean(rhos)) if rhos else float("nan")), len(rhos)


def oracle_reliability(per_sample: dict[str, np.ndarray], seed: int) -> tuple[float, float]:
    """Split-half Spearman of the oracle with itself, and the ceiling it puts on any criterion's ρ.

    The oracle's samples are split at random into two halves; per group the Spearman between the
    two half-oracles is ``r``, averaged over groups. Spearman-Brown ``2r / (1 + r)`` is the
    reliability of the full oracle, and its square root the most a noise-free criterion can
    correlate with it (classical test theory, attenuation by measurement error).
    """
    n = next(iter(per_sample.values())).shape[1]
    order = np.random.default_rng(seed + 11).permutation(n)
    a, b = order[: n // 2], order[n // 2:]
    r = float(np.mean([_rho(m[:, a].mean(1), m[:, b].mean(1)) for m in per_sample.values()]))
    full = 2 * r / (1 + r) if r > -1 else float("nan")
    return r, math.sqrt(full) if full > 0 else 0.0


def one_shot(model, graph, scores, ratio, train_data, test_data, scope="local") -> float:
    plan = allocate(graph.groups, scores, ratio=ratio, scope=scope, target="channels", round_to=None)
    small, _ = apply_plan(model, graph, plan)
    recalibrate_batchnorm(small, train_data, batches=20)
    return accuracy(small, test_data)


def collection_cost(model, calib, groups, exact_units: int) -> list[tuple[str, float, int]]:
    """Seconds and statistics bytes of one calibration pass per requirement set."""
    rows = []
    for needs in (("gates",), ("gates", "gate_hessian"), ("gate_ggn",), ("activations",), ("grads",)):
        t = time.perf_counter()
        ctx = collect(model, calib, needs=set(needs), groups=groups, exact_hessian_units=exact_units,
                      exact_hessian_seconds=float("inf"))  # the table always uses the exact diagonal
        seconds = time.perf_counter() - t
        held = [v for s in ctx.gates.values() for v in (s.g_sum, s.g2_sum, s.batch_mean_sq, s.h_sum, s.abs_sum)]
        held += [v for s in ctx.activations.values() for v in (s.count, s.nonpositive, s.abs_sum, s.negative)]
        held += list(ctx.grads.values()) + list(ctx.grad_sq.values())
        rows.append(("+".join(needs), seconds, sum(v.numel() * v.element_size() for v in held)))
    return rows


def run_case(case: dict, names: list[str], args) -> dict:
    model, (x, y) = case["model"], case["train"]
    wanted = args.oracle_samples or ORACLE_SAMPLES[case["key"]] // (2 if args.quick else 1)
    n_oracle = min(wanted, len(x) - 64 * args.calib_batches)
    (xo, yo), (xc, yc) = _split(x, y, n_oracle, 64 * args.calib_batches, args.seed)
    oracle_data, calib = _loader(xo, yo, 256), _loader(xc, yc, 64)
    train_data, test_data = _loader(x, y, 32, shuffle=True, seed=args.seed), _loader(*case["test"], 250)
    graph = build_graph(model, case["example"])
    groups = graph.prunable_groups()
    t = time.perf_counter()
    per_sample = oracle(model, graph, groups, oracle_data)
    truth = {gid: m.mean(1) for gid, m in per_sample.items()}  # the oracle: mean loss increase
    squared = {gid: m.mean(1) ** 2 for gid, m in per_sample.items()}  # Molchanov et al.'s (E - E|unit=0)^2
    half, ceiling = oracle_reliability(per_sample, args.seed)
    half_512 = oracle_reliability({g: m[:, :512] for g, m in per_sample.items()}, args.seed)[0]
    print(f"  oracle: {sum(g.size for g in groups)} units in {len(groups)} groups, {n_oracle} samples, "
          f"{time.perf_counter() - t:.0f}s; split-half spearman {half:+.3f} (first 512 samples: {half_512:+.3f}), "
          f"ceiling {ceiling:.3f}", flush=True)
    for needs, seconds, size in ([] if args.skip_cost else collection_cost(model, calib, groups, args.exact_hessian_units)):
        print(f"  collect {needs:20s} {seconds:6.2f}s  statistics {size / 1024:8.1f} KiB", flush=True)
    ctx = collect(model, calib, needs={"gates", "gate_hessian", "gate_ggn", "activations", "grads"}, groups=groups,
                  hutchinson_samples=args.probes, exact_hessian_units=args.exact_hessian_units,
                  exact_hessian_seconds=float("inf"), seed=args.seed)
    out = {"dense": accuracy(model, test_data), "split_half": half, "split_half_512": half_512, "ceiling": ceiling, "oracle_samples": n_oracle,
           "criteria": {}}
    has_heads = any(g.unit == "head" for g in groups)
    for name in names + list(ESTIMATES) + [ORACLE_ROW]:
        if name.startswith("heads") and not has_heads:
            continue  # the head-mask gradient is meant for attention heads
        if name == ORACLE_ROW:
            scores, skipped = {gid: torch.from_numpy(t) for gid, t in truth.items()}, {}
        else:
            crit = ESTIMATES[name]() if name in ESTIMATES else make_criterion(name, seed=args.seed if name == "random" else None)
            try:
                scores, skipped = score_groups(groups, ctx, crit)
            except DegenerateScoresError as err:
                out["criteria"][name] = {"error": str(err)}
                continue
        if not scores:
            reasons = sorted(set(skipped.values()))
            out["criteria"][name] = {"error": f"no group scored ({len(skipped)} refused), e.g. {reasons[0]}"}
            print(f"  {name:24s} no group scored", flush=True)
            continue
        draws = [scores] if name != "random" else [
            score_groups(groups, ctx, make_criterion("random", seed=args.seed + 1000 * d))[0] for d in range(args.random_draws)]
        rho, scored = (float(np.mean(v)) for v in zip(*(mean_spearman(d, truth) for d in draws)))
        scored = int(scored)  # the same groups in every draw
        rho_sq = float(np.mean([mean_spearman(d, squared)[0] for d in draws]))
        accs = {str(r): float(np.mean([one_shot(model, graph, d, r, train_data, test_data) for d in draws])) for r in RATIOS}
        accs["global"] = float(np.mean([one_shot(model, graph, d, RATIOS[0], train_data, test_data, scope="global")
                                        for d in draws]))
        out["criteria"][name] = {"rho": rho, "rho_sq": rho_sq, "groups": scored, "of": len(groups), **accs}
        print(f"  {name:24s} spearman {rho:+.3f} (squared oracle {rho_sq:+.3f}; {scored}/{len(groups)} groups)  "
              + "  ".join(f"{r}: {a:.3f}" for r, a in accs.items()), flush=True)
    return out


SHOTS = [str(r) for r in RATIOS] + ["global"]


def _stat(values: list[float], fmt: str) -> str:
    """``mean ± sd`` over seeds (sample sd), the mean alone for one seed."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(float(np.mean(values)), fmt)} ± {float(np.std(values, ddof=1)):.2f}"


def _runs(results: dict, case: str, name: str) -> list[dict]:
    return [r["criteria"][name] for r in results[case].values() if "rho" in r["criteria"].get(name, {})]


def _partial(runs: list[dict]) -> str:
    return "" if all(r["groups"] == r["of"] for r in runs) else f" ({runs[0]['groups']}/{runs[0]['of']} groups)"


def tables(results: dict[str, dict[str, dict]], names: list[str]) -> str:
    """Two markdown tables over ``results[case][seed]``: correlations with the oracles, one-shot accuracy."""
    order = ["digits CNN", "ResNet-8 Fashion-MNIST", "transformer Brown genre group", "transformer Brown genre"]
    cases = sorted(results, key=lambda c: order.index(c) if c in order else len(order))
    rows = names + list(ESTIMATES) + [ORACLE_ROW]
    seeds = sorted({s for c in cases for s in results[c]})
    per_case = lambda key, fmt: " | ".join(_stat([r[key] for r in results[c].values()], fmt) for c in cases)  # noqa: E731
    lines = [f"Seeds {', '.join(map(str, seeds))}: mean ± sd over seeds. ρ: Spearman with the issue's oracle "
             f"(mean loss increase of zeroing one unit), per group, mean over groups; ρ²: with Molchanov et al.'s "
             f"squared loss change.", "",
             "| criterion | " + " | ".join(f"{c}: ρ | {c}: ρ²" for c in cases) + " | mean ρ | mean ρ² |",
             "|---" * (2 * len(cases) + 3) + "|",
             "| oracle split-half ρ | " + " | ".join(f"{_stat([r['split_half'] for r in results[c].values()], '+.2f')} | "
                                                  for c in cases) + " | |",
             "| ceiling (sqrt of Spearman-Brown) | " + " | ".join(
                 f"{_stat([r['ceiling'] for r in results[c].values()], '.2f')} | " for c in cases) + " | |"]
    for name in rows:
        cells, means, means_sq = [], [], []
        for c in cases:
            runs = _runs(results, c, name)
            if not runs:
                cells.append("n/a | n/a" if any("error" in r["criteria"].get(name, {}) for r in results[c].values())
                             else "- | -")
                continue
            means.append(np.mean([r["rho"] for r in runs]))
            means_sq.append(np.mean([r["rho_sq"] for r in runs]))
            cells.append(f"{_stat([r['rho'] for r in runs], '+.2f')}{_partial(runs)} | "
                         f"{_stat([r['rho_sq'] for r in runs], '+.2f')}")
        of = "" if len(means) == len(cases) else f" ({len(means)} of {len(cases)} models)"
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {np.mean(means):+.2f}{of} | {np.mean(means_sq):+.2f}{of} |" if means
                     else f"| {name} | " + " | ".join(cells) + " | - | - |")
    lines += ["", "| criterion | " + " | ".join(f"{c}: 50% / 70% / global 50%" for c in cases)
              + " | mean one-shot | cells above random |",
              "|---" * (len(cases) + 3) + "|", "| dense accuracy | " + per_case("dense", ".3f") + " | | |"]
    chance = {(c, k): np.mean([r[k] for r in _runs(results, c, "random")]) for c in cases for k in SHOTS
              if _runs(results, c, "random")}
    for name in rows:
        cells, shots, complete, above = [], [], True, []
        for c in cases:
            runs = _runs(results, c, name)
            if not runs:
                complete = False
                cells.append("n/a" if any("error" in r["criteria"].get(name, {}) for r in results[c].values()) else "-")
                continue
            means = {k: np.mean([r[k] for r in runs]) for k in SHOTS}
            shots += list(means.values())
            above += [means[k] > chance[(c, k)] for k in SHOTS if (c, k) in chance]
            cells.append(" / ".join(_stat([r[k] for r in runs], ".3f") for k in SHOTS) + _partial(runs))
        count = "" if name == "random" or not above else f"{sum(above)} of {len(above)}"
        lines.append(f"| {name} | " + " | ".join(cells) + (f" | {np.mean(shots):.3f} |" if complete else " | - |")
                     + f" {count} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and oracle, fewer criteria")
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--criteria", nargs="*", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one full run (training, oracle, calibration) per seed; tables give mean ± sd")
    parser.add_argument("--oracle-samples", type=int, default=None,
                        help=f"default per model {ORACLE_SAMPLES} (half with --quick), at most what calibration "
                             f"leaves of the training set")
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--probes", type=int, default=1, help="Hutchinson probes per batch (obd, output_sensitivity)")
    parser.add_argument("--exact-hessian-units", type=int, default=64,
                        help="obd: exact gate Hessian diagonal for groups of at most this many units (0: Hutchinson)")
    parser.add_argument("--random-draws", type=int, default=8,
                        help="the random row averages this many rankings per seed (one draw's one-shot sd is ~0.1)")
    parser.add_argument("--skip-cost", action="store_true", help="do not time each calibration requirement set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--brown-labels", choices=("groups", "genre"), default="groups",
                        help="Brown task: the 4 genre groups (default) or the 15 genres (the first tables' task)")
    parser.add_argument("--constant-lr", action="store_true",
                        help="train at a constant rate, the first tables' protocol (default: one-cycle annealing)")
    parser.add_argument("--fashion-width", type=int, default=16, help="ResNet-8 width on Fashion-MNIST")
    parser.add_argument("--save", default=None, help="write the per-seed results as JSON")
    parser.add_argument("--load", nargs="+", default=None,
                        help="print the tables of saved JSON results (e.g. one per model) and exit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.criteria if args.criteria is not None else (WEIGHT_ONLY + GATE + ACTIVATION + ([] if args.quick else OLD))
    unknown = [n for n in names if n not in CRITERIA.names()]
    if unknown:
        parser.error(f"unknown criteria {unknown}; choose from {CRITERIA.names()}")
    if args.load:
        results: dict = {}
        for path in args.load:
            for case, runs in json.load(open(path)).items():  # a later file's criteria replace earlier ones
                for seed, run in runs.items():
                    earlier = results.setdefault(case, {}).get(seed)
                    if earlier is not None and run["dense"] != earlier["dense"]:
                        raise SystemExit(f"{path}: {case} seed {seed} trained to {run['dense']}, not {earlier['dense']}")
                    merged = {**(earlier or {}), **run, "criteria": {**(earlier or {}).get("criteria", {}), **run["criteria"]}}
                    results[case][seed] = merged
        print(tables(results, names))
        return
    results = {}
    for key in args.models:
        for seed in args.seeds:
            t = time.perf_counter()
            run_args = argparse.Namespace(**{**vars(args), "seed": seed})
            torch.manual_seed(seed)
            case = CASES[key](run_args) | {"key": key}
            print(f"{case['name']} seed {seed}: trained in {time.perf_counter() - t:.0f}s", flush=True)
            results.setdefault(case["name"], {})[str(seed)] = run_case(case, names, run_args)
            print(f"  ({time.perf_counter() - t:.0f}s)", flush=True)
            if args.save:
                json.dump(results, open(args.save, "w"), indent=1)
    print()
    print(tables(results, names))
    errors = {(c, n, r["error"]) for c, runs in results.items() for out in runs.values()
              for n, r in out["criteria"].items() if "error" in r}
    for c, n, e in sorted(errors):
        print(f"{c} / {n}: {e}")


if __name__ == "__main__":
    main()
