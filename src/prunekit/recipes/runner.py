"""Run a recipe end to end: train or load -> prune -> recover -> quantize -> export -> measure -> report.

Everything is written under ``<output_dir>.partial`` and renamed into place only when the run has
succeeded, so a folder named ``output_dir`` is always complete. An interrupted run leaves its
checkpoints in the ``.partial`` folder, and ``resume=True`` continues from them. Which folders a run
may create, move or delete (a marker file, a lock) is decided in :mod:`prunekit.recipes.rundir`.
"""

from __future__ import annotations

import copy
import random
import shutil
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from prunekit import defaults
from prunekit.data import DataBundle
from prunekit.errors import PrunekitError, PrunekitWarning
from prunekit.recipes.facts import asked_vs_reached, split_sources
from prunekit.recipes.schema import Recipe
from prunekit.reporting.report import ModelMetrics, QuantizationInfo, RecoveryAccuracy, Report


def run_recipe(recipe: Recipe, *, console: Console | None = None, resume: bool = False) -> Report | None:
    """Run ``recipe`` and return its :class:`Report` (also written as report.json/report.html).

    Under ``torchrun`` every rank trains its shard (DistributedDataParallel) and applies the
    pruning plan rank 0 decided; only rank 0 writes files, measures and returns the report
    (other ranks return None).
    """
    from prunekit.recipes.run_warnings import recorded_warnings, warning_lines
    from prunekit.recipes.rundir import RunDir, RunDirError, recipe_fingerprint, translate_write_error
    from prunekit.training.distributed import barrier, broadcast_object, distributed_context

    console = console or Console()
    digest, flat = recipe_fingerprint(recipe.model_dump(mode="json"))
    rundir = RunDir(Path(recipe.output_dir), digest, flat, resume=resume)
    work = rundir.work
    with distributed_context() as ctx:
        refused = None
        if ctx.is_main:  # marker, lock, writability: see recipes/rundir.py
            try:
                rundir.open(console)
            except PrunekitError as exc:
                refused = exc
        message = broadcast_object(None if refused is None else str(refused))  # every rank stops, not only 0
        if refused is not None:
            raise refused
        if message is not None:
            raise RunDirError(message)
        from prunekit.training.reproducible import reproducible

        caught: list = []
        try:
            with recorded_warnings() as caught, reproducible(recipe.train_threads):
                # fixed torch threads, deterministic kernels (ORT keeps its own)
                run = _Run(recipe, work, console if ctx.is_main else Console(quiet=True), resume,
                           is_main=ctx.is_main)
                run.caught, run.notes[:0] = caught, rundir.notes
                report = run.execute()
        except BaseException as exc:
            if ctx.is_main:
                rundir.abandon()
                for line in warning_lines(caught):  # no report will carry them: say them now
                    console.print(f"[yellow]warning before the failure:[/yellow] {line}", highlight=False)
            translated = translate_write_error(exc, work)
            if translated is not None:
                raise translated from exc
            raise
        barrier()
    if not ctx.is_main:
        return None
    try:
        rundir.publish(console)
    except OSError as exc:
        translated = translate_write_error(exc, work)
        raise (translated or exc) from exc
    out = rundir.out
    console.print(f"[green]wrote[/green] {out}/report.html and {out}/report.json")
    return report


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Run:
    def __init__(self, recipe: Recipe, work: Path, console: Console, resume: bool, *, is_main: bool = True) -> None:
        self.recipe, self.work, self.console, self.resume = recipe, work, console, resume
        self.is_main = is_main
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.sensitivity: dict[str, list[tuple[float, float]]] = {}
        self.qat_model: nn.Module | None = None  # set when quantization-aware training wraps the model
        self.dense: nn.Module | None = None
        self.deployment: list[dict[str, Any]] = []
        self.train_energy: list[dict[str, Any]] = []  # metered around training the run does anyway
        self.energy_estimated = False
        self.text = None  # a TextMeasure when the model is a Hugging Face text model

    # ------------------------------------------------------------------ helpers
    def stage(self, text: str) -> None:
        self.console.print(f"[bold cyan]>[/bold cyan] {text}")

    def finetune_config(self, *, epochs: int, lr: float, optimizer: str, weight_decay: float, name: str,
                        scheduler: str = "cosine", momentum: float = 0.9, patience: int | None = None, warmup: float = 0.0,
                        temperature: float = defaults.DISTILL_TEMPERATURE, alpha: float = defaults.DISTILL_ALPHA):
        from prunekit.training import FinetuneConfig

        return FinetuneConfig(epochs=epochs, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                              scheduler=scheduler, warmup=warmup, momentum=momentum, early_stopping_patience=patience,
                              temperature=temperature, alpha=alpha, seed=self.recipe.seed,
                              checkpoint_dir=str(self.work / "checkpoints" / name), progress=True,
                              lr_key="model.train_baseline.lr" if name == "baseline" else "recovery.lr")

    def measure_settings(self):
        """The ORT timing settings every decision and every latency table of this run shares."""
        from prunekit.evaluation.measure import MeasureSettings

        ev = self.recipe.evaluation
        return MeasureSettings(threads=ev.threads, warmup=ev.warmup_runs, runs=ev.latency_runs).resolved()

    def metered(self, label: str, model_name: str, epochs: int, work) -> None:
        """Run ``work()``; with ``evaluation.energy``, meter it and keep a training-energy row."""
        if not self.recipe.evaluation.energy or epochs <= 0:
            work()
            return
        from prunekit.evaluation.energy import EnergyMeter

        with EnergyMeter() as meter:
            work()
        reading = meter.reading_
        self.energy_estimated |= reading.estimated
        self.train_energy.append({"model": model_name, "runtime": "pytorch-train", "stage": label, "epochs": epochs,
                                  "joules": round(reading.joules, 3), "joules_per_epoch": round(reading.joules / epochs, 3),
                                  "seconds": round(reading.seconds, 2), "estimated": reading.estimated})

    def measurement_info(self) -> dict[str, Any]:
        info = self.measure_settings().describe()
        info["decisions"] = (f"int8 vs float and per-layer speed were decided at {info['threads']} threads, the same "
                             f"settings as the latency table; faster means the 95% interval of the paired speed "
                             f"ratio lies above 1")
        return info

    def torch_metrics(self, model: nn.Module, loader) -> dict:
        from prunekit.evaluation.metrics import evaluate, torch_predictor

        if self.text is not None:
            return self.text.metrics(torch_predictor(model), loader, log_test=True)
        return evaluate(torch_predictor(model), loader, task=self.bundle.task, num_classes=self.bundle.num_classes)

    def onnx_metrics(self, path: Path, loader) -> dict:
        from prunekit.evaluation.metrics import evaluate, onnx_predictor

        if self.text is not None:
            return self.text.metrics(onnx_predictor(path), loader)
        return evaluate(onnx_predictor(path), loader, task=self.bundle.task, num_classes=self.bundle.num_classes)

    # ------------------------------------------------------------------ stages
    def execute(self) -> Report | None:
        from prunekit.evaluation.complexity import count_macs, count_params
        from prunekit.models.attention import split_attention
        from prunekit.pruning.surgery import SurgeryRecord
        from prunekit.recipes.sources import load_data, load_model

        r = self.recipe
        if r.pruning is not None and r.pruning.enabled and r.pruning.granularity == "structured":
            from prunekit.importance import make_criterion

            make_criterion(r.pruning.criterion, owner="recipe pruning.criterion")  # fail before any training
        _seed_everything(r.seed)
        self.stage(f"loading data and model for [bold]{r.name}[/bold]")
        if r.model.hf is not None:
            from prunekit.recipes.text_sources import load_text_run

            dense, self.tokenizer, self.bundle = load_text_run(r.model, r.data, seed=r.seed)
        else:
            self.bundle: DataBundle = load_data(r.data, seed=r.seed, pretrained=r.model.weights is not None)
            dense = load_model(r.model)
        dense, split = split_attention(dense)
        self.base_record = SurgeryRecord(split_attention=split)
        if split:
            self.notes.append(f"nn.MultiheadAttention split into q/k/v/out projections (same function) so whole "
                              f"heads can be pruned: {', '.join(split)}")
        self.example = (torch.zeros(r.model.example_input_shape) if r.model.example_input_shape
                        else self.bundle.example_input)
        self.preflight(dense)
        if r.model.train_baseline is not None and r.model.train_baseline.epochs > 0:
            self.train_baseline(dense)
        dense.eval()
        self.dense = dense
        if r.model.hf is not None:
            from prunekit.recipes.text_stage import TextMeasure

            self.text = TextMeasure(self.bundle, dense)
        dense_params, dense_macs = count_params(dense), count_macs(dense, self.example).total
        self.stage(f"dense model: {dense_params:,} parameters, {dense_macs:,} MACs")

        compressed, record, masks, trajectory, groups = dense, None, None, [], []
        recovery = RecoveryAccuracy()
        if r.pruning is not None and r.pruning.enabled:
            compressed, record, masks, trajectory, groups, recovery = self.prune_and_recover(dense)
        if not self.is_main:  # other ranks only train; rank 0 exports, measures and reports
            return None
        if self.qat_model is not None:  # measure and save the float model with the learned grid baked in
            from prunekit.quantization import convert_qat

            compressed = convert_qat(self.qat_model)[0]
        self.save_compressed(compressed, record)
        metrics, quant_info, artifacts = self.deploy_and_measure(dense, compressed, masks)
        d_metrics, c_metrics = metrics
        self.energy_notes()
        report = Report(
            recipe_name=r.name, dense=d_metrics, compressed=c_metrics, task=self.bundle.task, recovery=recovery,
            trajectory=trajectory, sensitivity=self.sensitivity, quantization=quant_info, deployment=self.deployment, groups=groups, layers=_layer_widths(dense, compressed),
            max_accuracy_drop=r.evaluation.max_accuracy_drop, artifacts=artifacts, notes=self.notes,
            warnings=self.warnings, recipe=r.model_dump(mode="json"),
            target=asked_vs_reached(r.pruning, d_metrics, c_metrics, _layer_widths(dense, compressed)),
            measurement=self.measurement_info(), splits=split_sources(self.bundle),
        )
        if r.evaluation.kfold >= 2:
            self.notes.append(self.kfold(compressed))
        self.collect_warnings()
        report.write(self.work)
        return report

    def preflight(self, dense: nn.Module) -> None:
        """Before any training: data vs model, ONNX export, dynamic int8, round_to (recipes/preflight.py)."""
        from prunekit.recipes.preflight import check_export_and_quantization, round_to_warning
        from prunekit.recipes.validate_data import check_data_fits_model

        r = self.recipe
        self.model_label = r.model.builtin or r.model.factory or "model"
        check_data_fits_model(self.bundle, dense, model_label=self.model_label, example=self.example,
                              example_from_recipe=bool(r.model.example_input_shape))
        if self.is_main:
            self.stage("checking the untrained model exports to ONNX" + (
                " and has layers int8 can quantize" if r.quantization.enabled and r.quantization.mode != "qat" else ""))
            check_export_and_quantization(dense, self.example, r, self.work)
        if r.pruning is not None and r.pruning.enabled and (text := round_to_warning(dense, r.pruning)):
            warnings.warn(text, PrunekitWarning, stacklevel=2)

    def collect_warnings(self) -> None:
        """Python warnings raised during the run join the report's own (once each)."""
        from prunekit.recipes.run_warnings import warning_lines

        for line in warning_lines(getattr(self, "caught", [])):
            if line not in self.warnings:
                self.warnings.append(line)

    def train_baseline(self, model: nn.Module) -> None:
        from prunekit.training import finetune

        spec = self.recipe.model.train_baseline
        self.stage(f"training the dense baseline for {spec.epochs} epochs")
        config = self.finetune_config(epochs=spec.epochs, lr=spec.lr, optimizer=spec.optimizer,
                                      weight_decay=spec.weight_decay, name="baseline")
        # no validation loader: the split that later guards accuracy plays no part in making the baseline
        self.metered("baseline training", "dense", spec.epochs, lambda: finetune(
            model, self.bundle.train, None, config=config, task=self.bundle.task, resume=self.resume))

    def prune_and_recover(self, dense: nn.Module):
        from prunekit.recipes.prune_stage import (remove_depth, run_masked, run_sensitivity_allocation,
                                                  run_structured)
        from prunekit.training import finetune, recalibrate_batchnorm

        r = self.recipe
        spec, rec = r.pruning, r.recovery
        teacher = dense if rec.distillation.enabled or self.bundle.task == "embedding" else None  # embedding: no labels

        cut_accuracy: dict[str, float | None] = {}  # of the LAST cut, before and after recalibration

        def recover_between(model: nn.Module) -> None:
            cut_accuracy["cut"] = self.torch_metrics(model, self.bundle.test).get("accuracy")
            if rec.bn_recalibration:
                recalibrate_batchnorm(model, self.bundle.train, batches=20)
                cut_accuracy["recalibrated"] = self.torch_metrics(model, self.bundle.test).get("accuracy")
            epochs = spec.schedule.finetune_epochs_between
            if epochs > 0:
                config = self.finetune_config(epochs=epochs, lr=rec.lr, optimizer=rec.optimizer, name="between",
                                              weight_decay=rec.weight_decay, momentum=rec.momentum,
                                              temperature=rec.distillation.temperature, alpha=rec.distillation.alpha)
                shutil.rmtree(self.work / "checkpoints" / "between", ignore_errors=True)
                finetune(model, self.bundle.train, self.bundle.val, config=config, task=self.bundle.task, teacher=teacher)

        def evaluate_val(model: nn.Module) -> dict:
            m = self.torch_metrics(model, self.bundle.val)
            return {"loss": m["loss"], "accuracy": m.get("accuracy")}

        start = copy.deepcopy(dense)
        if spec.sparsity_training.epochs > 0:
            self.sparsity_training(start)
        if spec.granularity == "structured":
            self.stage(f"pruning: structured, criterion {spec.criterion}, remove {spec.target.ratio:.0%} of "
                       f"{spec.target.metric}, schedule {spec.schedule.kind}, allocation {spec.allocation}")
        else:  # the criterion plays no part: weights are chosen by the method
            pattern = f"{spec.nm[0]}:{spec.nm[1]}" if spec.granularity == "nm" else f"{spec.target.ratio:.0%} of weights"
            self.stage(f"pruning: {spec.granularity} {pattern}, method {spec.method}, one shot")
        if spec.granularity == "structured" and spec.allocation == "sensitivity":
            outcome, self.sensitivity = run_sensitivity_allocation(
                start, spec, self.example, self.bundle, seed=r.seed,
                on_group=lambda done, total, gid: self.console.print(f"  sensitivity scan [{done + 1}/{total}] {gid}",
                                                                     highlight=False))
            outcome.record = self.base_record.merged(outcome.record)
        elif spec.granularity == "structured":
            depth_record = self.base_record
            if spec.depth_blocks > 0:
                start, removed = remove_depth(start, spec, self.example, self.bundle)
                depth_record = depth_record.merged(removed)
                self.stage(f"depth pruning: bypassed {', '.join(removed.bypassed) or 'nothing'}")
            outcome = run_structured(start, spec, self.example, self.bundle, seed=r.seed, recover=recover_between,
                                     evaluate=evaluate_val, reference=dense, record=depth_record,
                                     latency_threads=self.measure_settings().threads)
        else:
            outcome = run_masked(start, spec, self.example, self.bundle.calib)
            self.notes.append("unstructured / N:M sparsity keeps dense tensor shapes: ONNX Runtime's dense kernels "
                              "do not skip zeros, so latency and MACs are not expected to drop; file size drops only "
                              "after compression of the zeros")
        model = outcome.model
        self.check_cut(dense, model, outcome.masks)
        if "cut" in cut_accuracy and spec.schedule.finetune_epochs_between == 0:
            after_cut, after_recal = cut_accuracy["cut"], cut_accuracy.get("recalibrated", cut_accuracy["cut"])
        else:  # mask-based and sensitivity paths, or a schedule that already fine-tuned between steps
            after_cut = after_recal = self.torch_metrics(model, self.bundle.test).get("accuracy")
            if rec.bn_recalibration:
                recalibrate_batchnorm(model, self.bundle.train, batches=20)
                after_recal = self.torch_metrics(model, self.bundle.test).get("accuracy")
        q = r.quantization
        if q is not None and q.enabled and q.mode == "qat" and q.order == "joint":
            from prunekit.quantization import calibrate_qat, prepare_qat

            self.stage("joint order: recovery fine-tuning is quantization-aware (fake-quant weights and inputs)")
            model = prepare_qat(model, spec=self.qat_spec())
            calibrate_qat(model, self.bundle.calib)
            self.qat_model = model
        if rec.epochs > 0:
            how = (f" with distillation (T={rec.distillation.temperature}, alpha={rec.distillation.alpha})"
                   if teacher is not None else "")
            if teacher is not None and self.bundle.task == "embedding":
                how = " distilling the dense model's embeddings (cosine)"
            if teacher is not None and rec.distillation.layerwise:
                how += " and every layer's hidden states (MSE)"
            if rec.freeze_embeddings:
                how += ", vocabulary table frozen"
            if rec.dropout is not None:
                how += f", dropout {rec.dropout:g}"
            self.stage(f"recovering: fine-tuning {rec.epochs} epochs{how}")
            config = self.finetune_config(epochs=rec.epochs, lr=rec.lr, optimizer=rec.optimizer, name="recovery",
                                          weight_decay=rec.weight_decay, scheduler=rec.scheduler, warmup=rec.warmup,
                                          momentum=rec.momentum, patience=rec.early_stopping_patience,
                                          temperature=rec.distillation.temperature, alpha=rec.distillation.alpha)
            layers = None
            if teacher is not None and rec.distillation.layerwise:
                from prunekit.recipes.text_stage import layerwise_pairs

                layers = layerwise_pairs(model) or None
            from prunekit.training.dropout import dropout_at

            frozen = nullcontext()
            if rec.freeze_embeddings:
                from prunekit.recipes.text_stage import frozen_input_embeddings

                frozen = frozen_input_embeddings(model)
            with frozen, dropout_at(model, rec.dropout):
                self.metered("recovery fine-tune" + (" (with teacher forward passes)" if teacher is not None else ""),
                             "compressed", rec.epochs, lambda: finetune(
                                 model, self.bundle.train, self.bundle.val, config=config, task=self.bundle.task,
                                 teacher=teacher, resume=self.resume, feature_layers=layers))
        if spec.vocabulary == "corpus" and self.text is not None:
            from prunekit.recipes.text_stage import shrink_vocabulary

            self.notes.append(shrink_vocabulary(model, self.bundle.train, self.tokenizer))
        after_ft = self.torch_metrics(model, self.bundle.test).get("accuracy")
        if outcome.masks is not None:
            from prunekit.pruning.masking import make_permanent

            make_permanent(model)
        recovery = RecoveryAccuracy(after_pruning=after_cut, after_bn_recalibration=after_recal, after_finetune=after_ft)
        trajectory = [{k: v for k, v in row.items()} for row in outcome.trajectory]
        return model, outcome.record, outcome.masks, trajectory, outcome.groups, recovery

    def check_cut(self, dense: nn.Module, pruned: nn.Module, masks) -> None:
        """Fail on a cut that removed nothing (unless pruning.allow_no_op); warn when less than asked."""
        from prunekit.evaluation.complexity import count_macs, count_params
        from prunekit.recipes.preflight import asked_vs_applied, check_something_removed

        spec = self.recipe.pruning
        texts = [check_something_removed(dense, pruned, masks, spec, self.model_label)]
        if masks is None and spec.target.metric in ("macs", "params"):
            cost = (lambda m: count_macs(m, self.example).total) if spec.target.metric == "macs" else count_params
            texts.append(asked_vs_applied(cost(dense), cost(pruned), spec))
        for text in filter(None, texts):
            warnings.warn(text, PrunekitWarning, stacklevel=2)

    def sparsity_training(self, model: nn.Module) -> None:
        """Regularized training so the criterion later finds whole groups near zero (slimming, group lasso)."""
        from prunekit.dependency import build_graph
        from prunekit.training import FinetuneConfig, finetune

        st = self.recipe.pruning.sparsity_training
        self.stage(f"sparsity training {st.epochs} epochs (l1 {st.l1}, l2 {st.l2}, bn_scale {st.bn_scale}, "
                   f"group_lasso {st.group_lasso})")
        groups = build_graph(model, self.example).prunable_groups() if st.group_lasso > 0 else None
        config = FinetuneConfig(epochs=st.epochs, lr=st.lr, optimizer="sgd", l1=st.l1, l2=st.l2,
                                bn_scale=st.bn_scale, group_lasso=st.group_lasso, seed=self.recipe.seed,
                                progress=True, lr_key="pruning.sparsity_training.lr")
        finetune(model, self.bundle.train, self.bundle.val, config=config, task=self.bundle.task, groups=groups)

    def save_compressed(self, model: nn.Module, record) -> None:
        from safetensors.torch import save_model

        from prunekit.pruning.surgery import save_pruned

        record = record if record is not None or not self.base_record.split_attention else self.base_record
        if record is not None:
            save_pruned(model, record, self.work / "compressed")
        else:
            (self.work / "compressed").mkdir(exist_ok=True)
            # save_model writes tied weights (a causal LM's head and token embeddings) once;
            # safetensors.torch.load_model (or from_pretrained) restores the tie
            save_model(model, str(self.work / "compressed" / "model.safetensors"), force_contiguous=True)
        if self.text is not None:  # the tokenizer (and a pruned vocabulary's kept ids) travel with the weights
            self.tokenizer.save_pretrained(str(self.work / "compressed" / "tokenizer"))
            if self.recipe.pruning.enabled and self.recipe.pruning.vocabulary == "corpus":
                from prunekit.models.vocab import save_vocabulary

                save_vocabulary(model, self.work / "compressed")

    def deploy_and_measure(self, dense: nn.Module, compressed: nn.Module, masks) -> tuple:
        from prunekit.evaluation.complexity import count_macs, count_params
        from prunekit.evaluation.latency import onnx_latency
        from prunekit.export.onnx import export_onnx, onnx_size_bytes

        r = self.recipe
        if self.text is not None:
            from prunekit.recipes.text_stage import text_deploy

            return text_deploy(self, dense, compressed)
        self.stage("exporting to ONNX")
        dense_onnx = export_onnx(dense.eval(), self.example, self.work / "dense.onnx", opset=r.export.opset)
        quant_info = None
        q = r.quantization
        if q is not None and q.enabled:
            deployed, quant_info = self.quantize(compressed)
        else:
            deployed = export_onnx(compressed.eval(), self.example, self.work / "compressed.onnx", opset=r.export.opset)
        settings = self.measure_settings()
        self.stage(f"measuring ONNX Runtime latency (dense and compressed alternating, {settings.runs} runs, "
                   f"{settings.threads} threads)")
        timings = onnx_latency({"dense": dense_onnx, "compressed": deployed}, input_shape=tuple(self.example.shape[1:]),
                               batch_sizes=tuple(r.evaluation.batch_sizes), runs=settings.runs,
                               warmup=settings.warmup, threads=settings.threads)
        from prunekit.evaluation.measure import spread_warning

        busy = spread_warning(timings, threads=settings.threads)
        if busy is not None:
            self.warnings.append(busy)
        energy = self.energy({"dense": Path(dense_onnx), "compressed": Path(deployed)}) if r.evaluation.energy else {}
        self.stage("evaluating both deployed models on the held-out test split")
        results = []
        for name, model, path in (("dense", dense, dense_onnx), ("compressed", compressed, deployed)):
            m = self.onnx_metrics(Path(path), self.bundle.test)
            by_batch = {b: e["mj_per_sample"] for b, e in energy.get(name, {}).items()}
            extra = ("precision_macro", "recall_macro", "f1_weighted", "mse", "mae", "r2")
            task_metrics = {k: float(m[k]) for k in extra if isinstance(m.get(k), (int, float))}
            results.append(ModelMetrics(
                params=count_params(model), macs=count_macs(model, self.example).total,
                accuracy=m.get("accuracy"), f1_macro=m.get("f1_macro"), file_size_bytes=onnx_size_bytes(path),
                latency_ms={b: timings[name][b]["p50_ms"] for b in r.evaluation.batch_sizes},
                latency_spread_ms={b: (timings[name][b]["p25_ms"], timings[name][b]["p75_ms"])
                                   for b in r.evaluation.batch_sizes},
                energy_mj=by_batch[min(by_batch)] if by_batch else None, energy_mj_by_batch=by_batch,
                energy_estimated=any(e["estimated"] for e in energy.get(name, {}).values()) if by_batch else None,
                task_metrics=task_metrics))
        self.deployment = self.deployment_rows(dense, compressed, {"dense": dense_onnx, "compressed": deployed}, timings)
        if q is not None and q.enabled and q.weight_only is not None:
            self.deployment.append(self.weight_only_row(compressed))
        artifacts = {"dense_onnx": Path(dense_onnx).name, "compressed_onnx": Path(deployed).name,
                     "compressed_weights": "compressed/model.safetensors"}
        if (self.work / "compressed" / "pruning_record.json").is_file():
            artifacts["pruning_record"] = "compressed/pruning_record.json"
        return results, quant_info, artifacts

    def qat_spec(self):
        from prunekit.quantization import QuantSpec

        q = self.recipe.quantization
        return QuantSpec(method="percentile" if q.method == "percentile" else "minmax", percentile=q.percentile,
                         per_channel=q.per_channel)

    def quantize_qat(self, model: nn.Module) -> tuple[Path, QuantizationInfo]:
        """Quantization-aware training (unless joint order already did it), then the same int8 ONNX form."""
        from prunekit.export.onnx import default_input_names, export_onnx
        from prunekit.quantization import (calibrate_qat, convert_qat, export_qat_onnx, feeds_from_loader, prepare_qat,
                                           preprocess)
        from prunekit.training import finetune

        r, q, rec = self.recipe, self.recipe.quantization, self.recipe.recovery
        spec = self.qat_spec()
        if self.qat_model is None:
            self.stage(f"quantization-aware training for {q.qat_epochs} epochs (sequential order: after recovery)")
            qat = prepare_qat(model, spec=spec)
            calibrate_qat(qat, self.bundle.calib)
            if q.qat_epochs > 0:
                config = self.finetune_config(epochs=q.qat_epochs, lr=rec.lr / 10, optimizer=rec.optimizer,
                                              name="qat", weight_decay=0.0, momentum=rec.momentum)
                finetune(qat, self.bundle.train, self.bundle.val, config=config, task=self.bundle.task,
                         teacher=self.dense if rec.distillation.enabled else None, resume=self.resume)
            self.qat_model = qat
        workdir = self.work / "quantization"
        workdir.mkdir(exist_ok=True)
        names = default_input_names(self.example)
        feeds = feeds_from_loader(self.bundle.calib, names)
        int8 = export_qat_onnx(self.qat_model, self.example, workdir, feeds, spec=spec).path
        fp32 = preprocess(export_onnx(convert_qat(self.qat_model)[0], self.example, workdir / "model_fp32_raw.onnx"),
                          workdir / "model_fp32.onnx")
        batches = tuple(r.evaluation.batch_sizes)
        by_batch = {b: {names[0]: self.example.repeat(b, *([1] * (self.example.dim() - 1))).numpy()} for b in batches}
        from prunekit.evaluation.measure import compare_onnx

        verdict = compare_onnx({"fp32": fp32, "int8": int8}, by_batch, candidate="int8", baseline="fp32",
                               settings=self.measure_settings())
        chosen, reason = verdict.chosen, verdict.reason
        float_acc = self.onnx_metrics(Path(fp32), self.bundle.val).get("accuracy")
        int8_acc = self.onnx_metrics(Path(int8), self.bundle.val).get("accuracy")
        if q.tolerance is not None and float_acc is not None and float_acc - int8_acc > q.tolerance:
            chosen, reason = "fp32", (f"QAT int8 lost {100 * (float_acc - int8_acc):.2f} pts on validation, more than "
                                      f"the tolerance {100 * q.tolerance:.2f}; keeping fp32")
        final = self.work / ("compressed.int8.onnx" if chosen == "int8" else "compressed.onnx")
        shutil.copyfile(int8 if chosen == "int8" else fp32, final)
        self.console.print(f"  int8 decision: [bold]{chosen}[/bold] — {reason}")
        return final, QuantizationInfo(mode="qat", method=spec.method, chosen_artifact=final.name, reason=reason,
                                       float_accuracy=float_acc, int8_accuracy=int8_acc)

    def deployment_rows(self, dense: nn.Module, compressed: nn.Module, paths: dict[str, Path], timings: dict) -> list:
        """p50/p95/throughput in ONNX Runtime and PyTorch, peak memory, training energy, side by side."""
        from prunekit.evaluation.latency import torch_latency
        from prunekit.evaluation.memory import onnx_peak_memory

        ev = self.recipe.evaluation
        shape = tuple(self.example.shape[1:])
        rows = []
        settings = self.measure_settings()
        if ev.pytorch_latency:
            self.stage(f"measuring PyTorch latency (dense and compressed alternating, {settings.runs} runs, "
                       f"batch {', '.join(map(str, ev.batch_sizes))}, {settings.threads} threads)")
        torch_timings = (torch_latency({"dense": dense, "compressed": compressed}, input_shape=shape,
                                       batch_sizes=tuple(ev.batch_sizes), runs=settings.runs,
                                       warmup=settings.warmup, threads=settings.threads) if ev.pytorch_latency else {})
        for runtime, table in (("onnxruntime", timings), ("pytorch", torch_timings)):
            for name in table:
                for b in ev.batch_sizes:
                    t = table[name][b]
                    rows.append({"model": name, "runtime": runtime, "batch": b, "threads": settings.threads,
                                 "p25_ms": round(t["p25_ms"], 4), "p50_ms": round(t["p50_ms"], 4),
                                 "p75_ms": round(t["p75_ms"], 4), "p95_ms": round(t["p95_ms"], 4),
                                 "throughput_per_s": round(t["throughput_per_s"], 1)})
        if ev.memory:
            self.stage(f"measuring ONNX Runtime peak memory at batch {max(ev.batch_sizes)} "
                       f"({', '.join(paths)}, each in a fresh process)")
            for name, path in paths.items():
                reading = onnx_peak_memory(path, input_shape=shape, batch_size=max(ev.batch_sizes))
                rows.append({"model": name, "runtime": "onnxruntime", "batch": max(ev.batch_sizes),
                             "peak_memory_mb": round(reading.model_mb, 2)})
        rows.extend(self.train_energy)  # metered around the training this run did, not an extra epoch
        return rows

    def weight_only_row(self, model: nn.Module) -> dict[str, Any]:
        """Pack Linear weights to int8/int4, save them, and measure the size and accuracy effect."""
        from safetensors.torch import save_file

        from prunekit.quantization import compress_linear_weights, load_weight_only

        spec = self.recipe.quantization.weight_only
        self.stage(f"weight-only int{spec.bits} for Linear layers (group size {spec.group_size})")
        packed = compress_linear_weights(model, bits=spec.bits, group_size=spec.group_size)
        linear = {f"{name}.weight" for name in packed.packed}
        tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k not in linear}
        for name, p in packed.packed.items():
            tensors[f"{name}.weight.codes"], tensors[f"{name}.weight.scales"] = p.codes, p.scales
        path = self.work / "compressed" / f"weight_only_int{spec.bits}.safetensors"
        save_file(tensors, str(path))
        accuracy = self.torch_metrics(load_weight_only(model, packed), self.bundle.test).get("accuracy")
        float_accuracy = self.torch_metrics(model, self.bundle.test).get("accuracy")
        return {"model": "compressed", "runtime": f"weight-only int{spec.bits} (dequantized on load)",
                "file_bytes": path.stat().st_size, "linear_weight_ratio": round(packed.weight_ratio, 4),
                "accuracy": accuracy, "accuracy_delta": None if accuracy is None or float_accuracy is None
                else round(accuracy - float_accuracy, 4)}

    def quantize(self, model: nn.Module) -> tuple[Path, QuantizationInfo]:
        from prunekit.evaluation.metrics import quality_label, quality_score
        from prunekit.quantization import QuantSpec, quantize_for_deployment

        r, q = self.recipe, self.recipe.quantization
        if q.mode == "qat":
            return self.quantize_qat(model)
        mode = q.mode
        batches = max(1, q.calibration_samples // (self.bundle.calib.batch_size or r.data.batch_size))  # text: a batch sampler
        spec = QuantSpec(method=q.method, percentile=q.percentile, per_channel=q.per_channel, calib_batches=batches)
        self.stage(f"quantizing to int8 ({mode}, {q.method} calibration"
                   + ("" if q.tolerance is None else f", fallback within {q.tolerance:.1%} accuracy"
                      if self.bundle.task == "classification" else f", fallback within {q.tolerance:g} of {quality_label(self.bundle.task)}")
                   + ")")

        def score(path: str) -> float:  # accuracy, R², cosine to dense or -loss: see quality_score
            return quality_score(self.onnx_metrics(Path(path), self.bundle.val), self.bundle.task)

        result = quantize_for_deployment(
            model.eval(), self.example, self.bundle.calib, workdir=self.work / "quantization", spec=spec, mode=mode,
            eval_fn=score if q.tolerance is not None else None, tolerance=q.tolerance,
            batch_sizes=tuple(r.evaluation.batch_sizes), per_layer_speed=q.per_layer_speed,
            settings=self.measure_settings())
        final = self.work / ("compressed.int8.onnx" if result.chosen == "int8" else "compressed.onnx")
        shutil.copyfile(result.chosen_path, final)
        info = QuantizationInfo(mode=result.mode, method=result.method, float_layers=dict(result.kept_float),
                                chosen_artifact=final.name, reason=result.reason,
                                float_accuracy=result.float_score, int8_accuracy=result.int8_score)
        self.console.print(f"  int8 decision: [bold]{result.chosen}[/bold] — {result.reason}")
        return final, info

    def energy(self, paths: dict[str, Path]) -> dict[str, dict[int, dict]]:
        """Energy per sample of the deployed ONNX models, metered alternating at the report's batch sizes."""
        from prunekit.evaluation.energy import alternating_energy
        from prunekit.evaluation.measure import ort_session

        settings = self.measure_settings()
        predictors = {}
        for name, path in paths.items():  # the same ORT sessions as the latency table
            session = ort_session(path, settings)
            feed_name = session.get_inputs()[0].name
            predictors[name] = lambda x, s=session, n=feed_name: s.run(None, {n: x.numpy()})
        result: dict[str, dict[int, dict]] = {name: {} for name in paths}
        for b in self.recipe.evaluation.batch_sizes:  # about 256 samples per turn, at least 2 calls
            x = self.example.repeat(b, *([1] * (self.example.dim() - 1)))
            for name, per in alternating_energy(predictors, {b: x}, rounds=10, calls=max(2, 256 // b)).items():
                result[name].update(per)
        self.energy_estimated |= any(e["estimated"] for per in result.values() for e in per.values())
        return result

    def energy_notes(self) -> None:
        """One note for every estimated energy figure of the run (inference and training alike)."""
        from prunekit.evaluation.energy import estimate_note

        if self.energy_estimated and estimate_note() not in self.notes:
            self.notes.append(estimate_note())

    def kfold(self, compressed: nn.Module) -> str:
        from prunekit.evaluation.kfold import cross_validate
        from prunekit.evaluation.metrics import torch_predictor
        from prunekit.training import FinetuneConfig, finetune

        r = self.recipe
        xs, ys = zip(*[(x, y) for loader in (self.bundle.train, self.bundle.val) for x, y in loader])
        x, y = torch.cat(xs), torch.cat(ys)
        epochs = max(1, r.recovery.epochs // 2)

        def fit(train_loader, val_loader):
            model = copy.deepcopy(compressed)
            finetune(model, train_loader, None, config=FinetuneConfig(epochs=epochs, lr=r.recovery.lr / 10,
                     optimizer=r.recovery.optimizer, seed=r.seed), task=self.bundle.task)
            return torch_predictor(model)

        self.stage(f"{r.evaluation.kfold}-fold cross-validation of the compressed model")
        cv = cross_validate(x, y, k=r.evaluation.kfold, seed=r.seed, fit=fit, task=self.bundle.task,
                            num_classes=self.bundle.num_classes)
        mean, std = cv.get("mean", {}), cv.get("std", {})
        return (f"{r.evaluation.kfold}-fold CV of the compressed model ({epochs} fine-tune epochs per fold): "
                f"accuracy {mean.get('accuracy', float('nan')):.4f} ± {std.get('accuracy', float('nan')):.4f}")


def _layer_widths(dense: nn.Module, compressed: nn.Module) -> list[dict[str, Any]]:
    """Output width of every conv/linear layer before and after compression."""
    after = dict(compressed.named_modules())
    rows = []
    for name, m in dense.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            c = after.get(name)
            width = lambda mod: mod.out_channels if hasattr(mod, "out_channels") else mod.out_features  # noqa: E731
            rows.append({"name": name, "before": width(m), "after": width(c) if c is not None else 0})
    return rows
